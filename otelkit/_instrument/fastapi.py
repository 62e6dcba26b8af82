"""FastAPI apps through ``opentelemetry-instrumentation-fastapi``, plus correlation at the edge.

SERVER spans named ``GET /items/{item_id}`` with ``http.route`` (the template), ``http.request.method`` and
``http.response.status_code``; ``http.server.request.duration`` by route, method and status. Apps created
before ``init()`` are instrumented too (at their first request); see :mod:`otelkit._instrument._asgi`.
"""

from __future__ import annotations

from otelkit._instrument import _asgi, _common
from otelkit._status import IntegrationStatus

NAME = "fastapi"
MIN_VERSION = (0, 100)
CONTRIB = "opentelemetry.instrumentation.fastapi"


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("fastapi",), MIN_VERSION, "0.100", "otelkit[fastapi]", CONTRIB)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    found = _common.supported_dist(NAME, ("fastapi",), MIN_VERSION, "0.100", "otelkit[fastapi]")
    if isinstance(found, IntegrationStatus):
        return found
    _dist, version = found
    missing = _common.plan_library(NAME, ("fastapi",), MIN_VERSION, "0.100", "otelkit[fastapi]", CONTRIB)
    if missing.state != "enabled":
        return IntegrationStatus(NAME, "skipped", f"{CONTRIB} is not installed (pip install otelkit[fastapi])",
                                 version=version)
    note = _asgi.start(NAME, ctx)
    return IntegrationStatus(NAME, "enabled", f"fastapi {version}; every app, also those created before init(){note}",
                             version=version)


def uninstrument() -> None:
    _asgi.stop(NAME)
