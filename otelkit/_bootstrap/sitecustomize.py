"""``otelkit run``'s start-up hook: ``otelkit.init()`` before the program's first import.

``otelkit run`` puts this directory first on ``PYTHONPATH`` and sets ``OTELKIT_RUN=1``, so every Python
process it starts (and every Python child those start: gunicorn and uvicorn workers, Celery pool
processes, subprocesses) runs this file at interpreter start-up, as the standard ``site`` mechanism
runs any ``sitecustomize``. Configuration comes from the environment exactly as ``init()`` reads it.

It never stops the program: if telemetry cannot be set up, one warning on stderr and the program runs.
A ``sitecustomize`` of the application's own, further down ``sys.path``, still runs after this one.
"""

from __future__ import annotations


def _start() -> None:
    import os
    import sys

    if os.environ.get("OTELKIT_RUN") != "1":
        return
    try:
        import otelkit

        otelkit.init()
    except Exception as error:  # a telemetry failure must never stop the program
        sys.stderr.write(f"otelkit run: telemetry is off in this process ({type(error).__name__}: {error}); "
                         "the program runs without it. `otelkit doctor` shows what is wrong.\n")


def _chain() -> None:
    """Run the next ``sitecustomize`` on ``sys.path`` (the application's or the distribution's own)."""
    import importlib.machinery
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None or spec.origin == os.path.abspath(__file__):
        return
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # what site.py itself does with a failing sitecustomize: report, continue
        sys.stderr.write(f"Error in sitecustomize ({spec.origin}); set PYTHONVERBOSE for traceback:\n"
                         f"{type(error).__name__}: {error}\n")


_start()
_chain()
