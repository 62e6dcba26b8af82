"""The OTel resource: who is sending (service, version, environment, instance, host, OS, process, container).

Merge order, last wins: SDK detectors (host, OS, process/runtime) < container id <
``telemetry.*`` < ``OTEL_RESOURCE_ATTRIBUTES`` < the ``resource_attributes``
argument < the resolved ``service.name`` / ``service.version`` /
``deployment.environment.name`` / ``service.instance.id``.

``Resource.create()`` is avoided on purpose: it re-reads ``OTEL_SERVICE_NAME``
and ``OTEL_RESOURCE_ATTRIBUTES`` and would let the environment beat arguments.
"""

from __future__ import annotations

import os
import sys
import uuid
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.resources import (
    OsResourceDetector,
    ProcessResourceDetector,
    Resource,
    ResourceDetector,
)

from otelkit import _compat
from otelkit._internal_log import logger
from otelkit._regex import deferred
from otelkit._version import __version__

if TYPE_CHECKING:
    from otelkit._config import Settings

__all__ = ["build_resource", "derive_service_name", "derive_service_version", "parse_container_id",
           "service_instance_id"]

# Command lines can carry passwords (`--password=...`): never put them in the resource.
_DROPPED_PROCESS_KEYS = frozenset({"process.command_args", "process.command_line"})

_NAME_RE = deferred(globals(), "_NAME_RE", r"[^A-Za-z0-9_.\-]+")


# --- service name and version ---------------------------------------------------------------------


def _main_module_name() -> str | None:
    """The dotted module ``python -m`` ran, if any (``pkg.__main__`` -> ``pkg``)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if not name:
        return None
    if name.endswith(".__main__"):
        name = name[: -len(".__main__")]
    return str(name)


def derive_service_name() -> tuple[str, str]:
    """A service name from the running program, and how it was found (for ``settings.sources``).

    ``python -m pkg.worker`` -> ``pkg.worker``; ``/venv/bin/my-service`` -> ``my-service``;
    ``app/worker.py`` -> ``worker``; an interactive interpreter -> ``python``.
    """
    argv0 = sys.argv[0] if sys.argv else ""
    module = _main_module_name()
    return _derive_name(argv0, module)


@lru_cache(maxsize=8)
def _derive_name(argv0: str, module: str | None) -> tuple[str, str]:
    if module:
        return _clean(module), "the __main__ module"
    if argv0 and argv0 not in ("-c", "-m", "-"):
        base = os.path.basename(argv0.rstrip("/\\"))
        stem = base[:-3] if base.endswith(".py") else base
        if stem == "__main__":
            # `python path/to/pkg` runs pkg/__main__.py: name it after the directory.
            stem = os.path.basename(os.path.dirname(os.path.abspath(argv0))) or stem
        if stem:
            return _clean(stem), "sys.argv[0]"
    return "python", "the interpreter (no program name)"


def _clean(name: str) -> str:
    return _NAME_RE.sub("-", name).strip("-.") or "python"


def derive_service_version() -> tuple[str | None, str]:
    """The installed version of the distribution that provides the running program, if found."""
    argv0 = sys.argv[0] if sys.argv else ""
    return _derive_version(argv0, _main_module_name())


# Programs that run someone else's code (test runners, servers, task workers, shells, profilers): their
# version is not the service's. ``pytest`` would otherwise stamp every test's telemetry with pytest's version.
_RUNNERS = frozenset((
    "pytest", "py.test", "_pytest", "coverage", "nox", "tox", "hatch", "pdm", "poetry", "pipx",
    "ipython", "IPython", "jupyter", "ipykernel", "ipykernel_launcher", "debugpy", "pydevd",
    "gunicorn", "uvicorn", "hypercorn", "daphne", "granian", "waitress", "waitress-serve", "flask",
    "django-admin", "celery", "rq", "dramatiq", "huey", "huey_consumer", "arq", "streamlit", "locust",
    "behave", "nose2", "opentelemetry-instrument", "opentelemetry",
))


_INTERPRETER_RE = deferred(globals(), "_INTERPRETER_RE", r"python[0-9.]*[dmt]?(\.exe)?")


@lru_cache(maxsize=8)
def _derive_version(argv0: str, module: str | None) -> tuple[str | None, str]:
    from importlib import metadata

    try:
        if module:
            top = module.split(".", 1)[0]
            if top in _RUNNERS:
                return None, f"nothing found ({top} runs other code: its version is not the service's)"
            dists = metadata.packages_distributions().get(top) or []
            for dist in dists:
                return metadata.version(dist), f"the installed distribution {dist}"
        base = os.path.basename(argv0)
        if base in _RUNNERS:
            return None, f"nothing found ({base} runs other code: its version is not the service's)"
        # "-c" (python -c), "-" (stdin) and the interpreter itself are never console scripts: scanning every
        # installed distribution's entry points for them cost ~40M instructions of each such start-up.
        if base and not base.endswith(".py") and not base.startswith("-") and not _INTERPRETER_RE.fullmatch(base):
            for ep in metadata.entry_points(group="console_scripts", name=base):
                if ep.dist is not None:
                    return ep.dist.version, f"the installed distribution {ep.dist.name}"
    except Exception:  # metadata of a broken install must not stop init()
        logger.debug("could not derive service.version", exc_info=True)
    return None, "nothing found"


# --- service.instance.id --------------------------------------------------------------------------

_instance: tuple[int, str] | None = None


def service_instance_id() -> str:
    """A UUID for this process. A forked child is another instance, so it gets a new one."""
    global _instance
    pid = os.getpid()
    if _instance is None or _instance[0] != pid:
        _instance = (pid, str(uuid.uuid4()))
    return _instance[1]


# --- container.id ---------------------------------------------------------------------------------

_CONTAINER_ID = r"[0-9a-f]{64}"
# cgroup v1: "12:cpu:/docker/<id>", "/kubepods/.../<id>", "/system.slice/docker-<id>.scope", "cri-containerd-<id>"
_CGROUP_RE = deferred(globals(), "_CGROUP_RE", rf"(?:^|[/\-:])({_CONTAINER_ID})(?:\.scope)?$")
# cgroup v2 hides the id; mountinfo still shows the container's own /etc/hostname etc.
_MOUNTINFO_RE = deferred(
    globals(), "_MOUNTINFO_RE",
    rf"/(?:docker/containers|containers|overlay-containers|sandboxes)/({_CONTAINER_ID})/")


def parse_container_id(cgroup: str = "", mountinfo: str = "") -> str | None:
    """The container id from the text of ``/proc/self/cgroup`` (v1) or ``/proc/self/mountinfo`` (v2)."""
    for line in cgroup.splitlines():
        path = line.split(":", 2)[-1].strip()
        match = _CGROUP_RE.search(path)
        if match:
            return match.group(1)
    for line in mountinfo.splitlines():
        if "/etc/hostname" not in line and "/etc/hosts" not in line and "/etc/resolv.conf" not in line:
            continue
        match = _MOUNTINFO_RE.search(line)
        if match:
            return match.group(1)
    return None


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(1 << 20)
    except OSError:
        return ""


@lru_cache(maxsize=1)
def _container_id() -> str | None:
    if not sys.platform.startswith("linux"):
        return None
    return parse_container_id(_read("/proc/self/cgroup"), _read("/proc/self/mountinfo"))


# --- the resource ---------------------------------------------------------------------------------


def _host_detector() -> ResourceDetector | None:
    detector: ResourceDetector | None = _compat.host_resource_detector()
    return detector


def _detected() -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    detectors: list[ResourceDetector | None] = [_host_detector(), OsResourceDetector(), ProcessResourceDetector()]
    for detector in detectors:
        if detector is None:
            continue
        try:
            attrs.update(detector.detect().attributes)
        except Exception:  # a detector failing (odd platform) costs one attribute group, not init()
            logger.debug("resource detector %s failed", type(detector).__name__, exc_info=True)
    for key in _DROPPED_PROCESS_KEYS:
        attrs.pop(key, None)
    # These change per process; the rest is stable and detect() is relatively slow (host id, uname).
    attrs["process.pid"] = os.getpid()
    attrs["process.parent_pid"] = os.getppid()
    return attrs


def build_resource(settings: Settings) -> Resource:
    """The resource for ``settings``: explicit values win over the environment, which wins over detection."""
    attrs: dict[str, Any] = _detected()
    container = _container_id()
    if container:
        attrs["container.id"] = container
    attrs.update({
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": _sdk_version(),
        "telemetry.distro.name": "otelkit",
        "telemetry.distro.version": __version__,
    })
    attrs.update(settings.resource_attributes)
    attrs["service.name"] = settings.service_name
    if settings.service_version:
        attrs["service.version"] = settings.service_version
    if settings.environment:
        attrs["deployment.environment.name"] = settings.environment
    attrs.setdefault("service.instance.id", service_instance_id())
    return Resource(attrs)


@lru_cache(maxsize=1)
def _sdk_version() -> str:
    # The SDK's own version module (what _compat checks VERIFIED_SDK against): no scan of the installed
    # distributions' metadata on init()'s path.
    try:
        return _compat.sdk_version()
    except ImportError:
        return "unknown"
