"""Honest dependencies: what otelkit imports is declared, what is declared is imported, and private
OpenTelemetry names are reached through otelkit._compat only."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "otelkit"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Imported only by the pytest plugin / test receivers (otelkit.testing), which need the `test` extra.
TESTING_ONLY = {"pytest", "rotel"}
# Imported under a guard that reports "not installed" (optional integrations and extras).
GUARDED = {"redis", "psycopg2-binary", "httpx", "uwsgi", "structlog", "loguru", "sentry-sdk",
           "opentelemetry-exporter-prometheus", "prometheus-client",
           "bullmq", "celery", "rq", "dramatiq", "pika", "arq",
           # the web-framework extras (fastapi, starlette, flask, django; asgiref is Django's own dependency,
           # imported only by the Django middleware, which Django itself imports)
           "django", "asgiref", "opentelemetry-instrumentation-asgi", "opentelemetry-instrumentation-fastapi",
           "opentelemetry-instrumentation-starlette", "opentelemetry-instrumentation-flask",
           "opentelemetry-instrumentation-django",
           "faststream", "aio-pika", "nats-py",
           # the uvicorn integration (a flush at its shutdown): imported only when the application imports uvicorn
           "uvicorn",
           # the client and database integrations' extras (urllib3, aiohttp, psycopg, asyncpg, sqlalchemy)
           "opentelemetry-instrumentation-urllib3", "opentelemetry-instrumentation-aiohttp-client",
           "opentelemetry-instrumentation-psycopg", "psycopg-pool", "asyncpg", "sqlalchemy",
           # the libraries themselves, patched at class level for objects made before init()
           "urllib3", "aiohttp", "psycopg",
           # requests: imported by its integration only after the application imported it (lean helpers)
           "requests",
           # OTEL_CONFIG_FILE (extra config-file): imported only when a file is configured
           "opentelemetry-configuration"}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[@]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imported_modules() -> dict[str, set[str]]:
    """Every absolute import in otelkit (module level or not), with the files importing it."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from opentelemetry import trace` imports the module opentelemetry.trace
                names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def _distributions_of(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    top_level = packages_distributions()
    owners: dict[str, set[str]] = {}
    for module, files in modules.items():
        root = module.split(".")[0]
        if root in sys.stdlib_module_names or root == "otelkit":
            continue
        if root == "opentelemetry" or root == "google":  # namespace packages: find the owning distribution
            candidates = [module]
            parts = module.split(".")
            candidates += [".".join(parts[:i]) for i in range(len(parts) - 1, 1, -1)]
            dist = None
            for candidate in candidates:
                dist = _owner(candidate)
                if dist:
                    break
            if dist is None:
                continue  # an attribute, not a module (the module itself is listed too)
        else:
            dists = top_level.get(root)
            dist = dists[0] if dists else root
        owners.setdefault(dist.lower().replace("_", "-"), set()).update(files)
    return owners


_FILES: dict[str, str] = {}


def _owner(module: str) -> str | None:
    if not _FILES:
        from importlib.metadata import distributions

        for dist in distributions():
            for file in dist.files or ():
                text = str(file)
                if text.endswith(".py") and text.startswith(("opentelemetry/", "google/")):
                    _FILES[text[:-3].removesuffix("/__init__").replace("/", ".")] = dist.metadata["Name"]
    return _FILES.get(module)


def test_every_imported_distribution_is_declared() -> None:
    core = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    used = _distributions_of(_imported_modules())
    undeclared = {dist: sorted(files) for dist, files in used.items()
                  if dist not in core and dist not in TESTING_ONLY and dist not in GUARDED}
    assert not undeclared, f"imported by otelkit but not a core dependency: {undeclared}"


def test_every_core_dependency_is_imported() -> None:
    used = set(_distributions_of(_imported_modules()))
    unused = [r for r in PYPROJECT["project"]["dependencies"] if _name(r) not in used]
    assert not unused, f"declared but never imported by otelkit: {unused}"


def test_extras_cover_the_guarded_imports() -> None:
    extras = {_name(r) for group in PYPROJECT["project"]["optional-dependencies"].values() for r in group}
    for dist in ("sentry-sdk", "opentelemetry-exporter-prometheus", "prometheus-client", "redis", "httpx",
                 "psycopg2-binary"):
        assert dist in extras, dist


def test_otel_ranges_have_no_cap_below_the_next_major() -> None:
    project = PYPROJECT["project"]
    for requirement in project["dependencies"] + project["optional-dependencies"]["prometheus-exporter"]:
        if not _name(requirement).startswith("opentelemetry-"):
            continue
        caps = re.findall(r"<\s*([0-9.]+)", requirement)
        assert caps in (["2"], ["1"]), requirement  # SDK packages <2, contrib (0.x betas) <1
        floor = re.search(r">=\s*([0-9.a-z]+)", requirement)
        assert floor and floor.group(1) in ("1.40", "0.61b0"), requirement


# Distributions that pin opentelemetry-sdk (~= or ==): pip < 25.1 resolves them wrongly when it pins them before
# the SDK (pyproject.toml, docs/install.md "pip 23.2.1 and partial contrib releases").
_PINS_THE_SDK = {"opentelemetry-exporter-prometheus": "prometheus-exporter",
                 "opentelemetry-configuration": "config-file-loader"}


def test_sdk_pinning_packages_sit_one_extra_deeper_than_the_sdk() -> None:
    """pip's resolver takes shallower requirements first: otelkit[prometheus] -> otelkit[prometheus-exporter] ->
    the exporter puts the exporter below the core's opentelemetry-sdk, so the SDK is pinned first."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    for dist, inner in _PINS_THE_SDK.items():
        holders = {extra for extra, group in extras.items() for r in group if _name(r) == dist}
        assert holders == {inner}, (dist, holders)
        assert all(_name(r) in _PINS_THE_SDK for r in extras[inner]), inner
        assert any(f"otelkit[{inner}]" in r for group in extras.values() for r in group), inner
    assert not {_name(r) for r in PYPROJECT["project"]["dependencies"]} & set(_PINS_THE_SDK)


def test_lowest_constraints_match_the_floors() -> None:
    pins = dict(line.split("==") for line in (ROOT / ".ci/otel-lowest.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert pins["opentelemetry-sdk"] == "1.40.0" and pins["opentelemetry-instrumentation"] == "0.61b0"
    for requirement in PYPROJECT["project"]["dependencies"]:
        name = _name(requirement)
        if name.startswith("opentelemetry-"):
            assert name in pins, f"{name} has a floor but no pin in .ci/otel-lowest.txt"


_PRIVATE_IMPORT = re.compile(r"^\s*(from\s+opentelemetry[\w.]*\s+import\s+.*\b_\w+|from\s+opentelemetry[\w.]*\._\w+"
                             r"|import\s+opentelemetry[\w.]*\._)", re.M)
# Private SDK/contrib attributes otelkit reads or writes (the ones _compat wraps).
_PRIVATE_ATTRIBUTES = ("_context", "_parent", "_kind", "_start_time", "_end_time", "_attributes", "_events",
                       "_links", "_status", "_dict", "_dq", "_disabled", "_active_span_processor",
                       "_span_processors", "_multi_log_record_processor", "_metric_readers",
                       "_all_metric_readers", "_exporter", "_preferred_temporality", "_preferred_aggregation",
                       "_db_api_integration", "_server_address", "_server_port", "_record_metrics", "_proc",
                       "_sdk_config", "_delegate", "_TRACER_PROVIDER", "_METER_PROVIDER", "_LOGGER_PROVIDER")


def test_private_opentelemetry_names_only_in_compat() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_compat.py":
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(ROOT)}: {m.group(0).strip()}" for m in _PRIVATE_IMPORT.finditer(text)]
        for number, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith(("from ", "import ", "#")):
                continue
            for name in _PRIVATE_ATTRIBUTES:
                # span._context or getattr(x, "_dict", ...) on someone else's object (not self/cls: otelkit's own
                # classes use some of the same names)
                attribute = re.search(rf"(?<![\w.])(?!self\b|cls\b)(\w+)\.{name}\b", line)
                reflective = re.search(rf"(getattr|hasattr|setattr|delattr)\([^,()]+,\s*[\"']{name}[\"']", line)
                if (attribute and attribute.group(1) != "otelkit") or reflective:
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "private OpenTelemetry access outside otelkit/_compat.py:\n" + "\n".join(offenders)


def test_compat_module_is_importable_without_the_sdk_logs_modules() -> None:
    # _compat is imported by code that runs at interpreter exit (the resource): its SDK-logs names are
    # lazy, because importing those modules on SDK 1.40 runs resource detection.
    import subprocess

    code = "import sys, otelkit._compat; print('opentelemetry.sdk._logs' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_installed_metadata_names_the_extras() -> None:
    try:
        metadata = distribution("otelkit").metadata
    except PackageNotFoundError:  # pragma: no cover - the suite runs on an installed (editable) otelkit
        pytest.skip("otelkit is not installed")
    extras = set(metadata.get_all("Provides-Extra") or ())
    assert {"prometheus", "sentry"} <= extras


# Floors of the integration libraries the extras declare that .ci/lowest-libs does not install, and why
# (docs/install.md "The lowest version of each integration library").
_FLOORS_PROVED_ELSEWHERE = {
    "arq": "0.25.0 is also the newest release: the main suite runs it",
    "sqlalchemy": ".ci/lowest installs the floor itself beside the lowest OpenTelemetry (checked below)",
}


def _lowest_libs_pins() -> set[tuple[str, str]]:
    text = (ROOT / ".ci/lowest-libs").read_text()
    return {(name.lower(), pin) for name, pin in re.findall(r"\b([A-Za-z][\w.-]*)=(\d[\w.]*)\b", text)}


def test_every_integration_floor_is_installed_by_lowest_libs() -> None:
    """Each library floor an integration extra declares is the release .ci/lowest-libs installs (or its first
    release with Python 3.11 wheels: the pin starts with the floor), unless it is proved elsewhere above."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    pins = _lowest_libs_pins()
    missing = []
    for extra, group in extras.items():
        if extra in ("test", "bench", "lint", "demo") or extra.startswith(("config-file", "prometheus")):
            continue
        for requirement in group:
            name = _name(requirement)
            floor = re.search(r">=\s*([0-9][0-9.]*)", requirement)
            if name.startswith(("opentelemetry-", "otelkit")) or not floor or name in _FLOORS_PROVED_ELSEWHERE:
                continue
            if not any(pinned == name and (pin == floor.group(1) or pin.startswith(floor.group(1) + "."))
                       for pinned, pin in pins):
                missing.append(f"{extra}: {requirement}")
    assert not missing, f"floors .ci/lowest-libs does not run: {missing}"


def test_lowest_installs_the_sqlalchemy_floor() -> None:
    """The sqlalchemy extra's floor is the release .ci/lowest pins (with the lowest OpenTelemetry)."""
    floor = re.search(r">=\s*([0-9][0-9.]*)", PYPROJECT["project"]["optional-dependencies"]["sqlalchemy"][0])
    assert floor is not None
    release = floor.group(1) + ".0" * (2 - floor.group(1).count("."))  # 1.4 -> 1.4.0
    assert f'"sqlalchemy[asyncio]=={release}"' in (ROOT / ".ci/lowest").read_text()
