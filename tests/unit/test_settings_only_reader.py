"""``Settings`` is the only reader of otelkit's configuration, and otelkit never writes ``os.environ``.

* OTEL_SEMCONV_STABILITY_OPT_IN and OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS are settings like the others;
  contrib's cached semconv mode is set from them directly (no temporary environment variable);
* scrubbing is configured by ``init()`` itself, whatever the integrations do;
* schemeless gRPC endpoints (``collector:4317``) and the spec's ``OTEL_EXPORTER_OTLP_*INSECURE``.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import otelkit
from otelkit import _compat, _init, _scrub
from otelkit._config import ConfigError, resolve
from otelkit._instrument import system_metrics
from otelkit.testing import capture_telemetry

PACKAGE = Path(otelkit.__file__).resolve().parent

pytestmark = pytest.mark.usefixtures("fresh_otelkit")


class RecordingEnviron(dict[str, str]):
    """A stand-in for ``os.environ`` that remembers every write (otelkit must make none)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.writes: list[str] = []

    def __setitem__(self, key: str, value: str) -> None:
        self.writes.append(f"set {key}")
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.writes.append(f"del {key}")
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override]
        self.writes.append(f"pop {key}")
        return super().pop(key, *default)

    def setdefault(self, key: str, value: str = "") -> str:  # type: ignore[override]
        self.writes.append(f"setdefault {key}")
        return super().setdefault(key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.writes.append("update")
        super().update(*args, **kwargs)


@pytest.fixture
def recording_environ(swap_environ: Callable[[dict[str, str]], None]) -> RecordingEnviron:
    env = RecordingEnviron(os.environ)
    swap_environ(env)
    return env


@pytest.fixture
def restore_semconv() -> Iterator[None]:
    """Put contrib's semconv cache back to what otelkit's default sets (other tests rely on it)."""
    yield
    _compat.set_semconv_stability("http,database")


# --- no environment writes, no reads outside _config ----------------------------------------------


def _environ_writes(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        target: ast.AST | None = None
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for t in targets:
                if isinstance(t, ast.Subscript):
                    target = t.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("pop", "setdefault", "update", "clear", "popitem"):
                target = node.func.value
            elif node.func.attr in ("putenv", "unsetenv") and isinstance(node.func.value, ast.Name):
                lines.append(node.lineno)
        if target is not None and ast.unparse(target) in ("os.environ", "environ"):
            lines.append(node.lineno)
    return lines


def test_the_scan_finds_an_environment_write() -> None:
    code = "import os\nos.environ['A'] = '1'\nos.environ.pop('A', None)\nos.putenv('A', '1')\n"
    assert _environ_writes(ast.parse(code)) == [2, 3, 4]


def test_nothing_in_otelkit_writes_the_environment() -> None:
    found = {str(path.relative_to(PACKAGE)): lines for path in PACKAGE.rglob("*.py")
             if (lines := _environ_writes(ast.parse(path.read_text(encoding="utf-8"))))}
    assert found == {}


# Environment variables read outside otelkit/_config.py, and why they are not otelkit settings.
OTHER_PROGRAMS_VARIABLES = {
    # Terminal conventions, read when writing to the terminal.
    ("_console.py", "NO_COLOR"), ("_console.py", "FORCE_COLOR"), ("_doctor.py", "NO_COLOR"),
    ("_demo/__init__.py", "NO_COLOR"),
    # gunicorn's and gRPC's own settings, which otelkit diagnoses or adapts to.
    ("_fork.py", "GUNICORN_CMD_ARGS"), ("_fork.py", "GRPC_ENABLE_FORK_SUPPORT"),
    # `otelkit demo`'s command-line defaults for its queue and database.
    ("_demo/_backends.py", "REDIS_URL"), ("_demo/_backends.py", "DATABASE_URL"),
    # The pytest plugin: a missing rotel fails instead of skipping under CI=true.
    ("testing/_plugin.py", "CI"),
    # `otelkit doctor` diagnosing the raw environment: the mapping it hands to resolve(), whether
    # OTEL_SERVICE_NAME is set at all, and DSN values the settings rejected.
    ("_doctor.py", "*"), ("_doctor.py", "OTEL_SERVICE_NAME"), ("_doctor.py", "variable"),
    # ... and, with OTEL_CONFIG_FILE, which set variables of the table the file makes ignored.
    ("_doctor.py", "var"),
    # `otelkit run` hands the whole environment (plus its start-up hook) to the program it starts, and the
    # hook runs only where `otelkit run` set its marker: process plumbing, not configuration.
    ("_run.py", "*"), ("_bootstrap/sitecustomize.py", "OTELKIT_RUN"),
}


def _environment_reads(tree: ast.AST) -> set[str]:
    """The variables read (``os.environ.get("X")``, ``os.environ["X"]``, ``"X" in os.environ``, getenv); ``*`` for
    the whole mapping, or the expression's source when the name is not a literal."""
    found: set[str] = set()
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.getenv", "getenv"):
            found.add(ast.unparse(node.args[0]).strip("'\""))
        if ast.unparse(node) != "os.environ" or not isinstance(node, ast.Attribute):
            continue
        parent = parents.get(id(node))
        if isinstance(parent, ast.Attribute) and parent.attr == "get":
            call = parents[id(parent)]
            assert isinstance(call, ast.Call)
            found.add(ast.unparse(call.args[0]).strip("'\""))
        elif isinstance(parent, ast.Subscript):
            found.add(ast.unparse(parent.slice).strip("'\""))
        elif isinstance(parent, ast.Compare):
            found.add(ast.unparse(parent.left).strip("'\""))
        else:
            found.add("*")
    return found


def test_the_scan_finds_environment_reads() -> None:
    code = ("import os\na = os.environ.get('A')\nb = os.environ['B']\nc = 'C' in os.environ\nd = os.getenv('D')\n"
            "e = dict(os.environ)\n")
    assert _environment_reads(ast.parse(code)) == {"A", "B", "C", "D", "*"}


def test_only_config_reads_otelkit_settings_from_the_environment() -> None:
    found = {(str(path.relative_to(PACKAGE)), name) for path in PACKAGE.rglob("*.py")
             if path.name != "_config.py" for name in _environment_reads(ast.parse(path.read_text(encoding="utf-8")))}
    assert found - OTHER_PROGRAMS_VARIABLES == set()


def test_an_init_that_instruments_writes_no_environment_variable(recording_environ: RecordingEnviron,
                                                                 restore_semconv: None) -> None:
    recording_environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "database/dup"
    recording_environ.writes.clear()
    with capture_telemetry(instrument=["httpx"]):
        assert _compat.semconv_modes()["database"] == "database/dup"
    assert recording_environ.writes == []


# --- semantic conventions -------------------------------------------------------------------------


def test_semconv_opt_in_defaults_to_the_stable_http_and_database_conventions() -> None:
    settings = resolve(environ={}, service_name="x")
    assert settings.semconv_opt_in == "http,database" and settings.sources["semconv_opt_in"] == "default"


def test_semconv_opt_in_is_read_from_its_variable_and_normalised() -> None:
    settings = resolve(environ={"OTEL_SEMCONV_STABILITY_OPT_IN": " HTTP/dup , database,http/dup"}, service_name="x")
    assert settings.semconv_opt_in == "http/dup,database"
    assert settings.sources["semconv_opt_in"] == "OTEL_SEMCONV_STABILITY_OPT_IN"
    assert resolve(environ={"OTEL_SEMCONV_STABILITY_OPT_IN": "none"}, service_name="x").semconv_opt_in == "none"


def test_a_bad_semconv_opt_in_names_the_variable_value_and_what_is_accepted() -> None:
    with pytest.raises(ConfigError) as info:
        resolve(environ={"OTEL_SEMCONV_STABILITY_OPT_IN": "http,dtabase"}, service_name="x")
    message = str(info.value)
    assert "OTEL_SEMCONV_STABILITY_OPT_IN='http,dtabase'" in message
    assert "http, http/dup, database, database/dup" in message


@pytest.mark.parametrize(("opt_in", "http", "database"), [
    ("http,database", "http", "database"),
    ("http/dup,http,database/dup", "http/dup", "database/dup"),
    ("database", "default", "database"),
    ("none", "default", "default"),
])
def test_contrib_modes_are_set_from_the_opt_in(opt_in: str, http: str, database: str, restore_semconv: None) -> None:
    assert _compat.set_semconv_stability(opt_in)
    modes = _compat.semconv_modes()
    assert (modes["http"], modes["database"]) == (http, database)


def test_init_sets_the_contrib_mode_at_every_init(monkeypatch: pytest.MonkeyPatch, restore_semconv: None) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http/dup")
    with capture_telemetry(instrument=["httpx"]):
        assert _compat.semconv_modes()["http"] == "http/dup"
    monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN")
    with capture_telemetry(instrument=["httpx"]):
        assert _compat.semconv_modes() == {"http": "http", "database": "database", "gen_ai": "default"}


# --- system metrics exclusions --------------------------------------------------------------------


def test_system_metrics_exclusions_are_a_setting() -> None:
    settings = resolve(environ={"OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS": "process.cpu.*, system.network.io"},
                       service_name="x")
    assert settings.system_metrics_excluded == ("process.cpu.*", "system.network.io")
    kept = system_metrics._config(settings.system_metrics_excluded)
    assert "process.cpu.time" not in kept and "system.network.io" not in kept and "process.memory.usage" in kept
    assert f"{len(kept)} metrics would be recorded" in system_metrics.plan(settings).reason or \
        system_metrics.plan(settings).state != "enabled"


# --- scrubbing is init()'s job --------------------------------------------------------------------


def test_init_configures_scrubbing_without_the_integrations(monkeypatch: pytest.MonkeyPatch) -> None:
    from otelkit import _instrument

    monkeypatch.setattr(_instrument, "instrument_all", lambda *a, **k: [])
    try:
        with capture_telemetry(scrub_extra_patterns=[r"CUST-\d{6}"]) as captured:
            with otelkit.span("order", customer="CUST-123456"):
                pass
        assert "CUST-123456" not in str(captured.spans.span("order").attributes["customer"])
        with capture_telemetry(scrub=False) as captured:
            with otelkit.span("order", customer="CUST-123456"):
                pass
        assert captured.spans.span("order").attributes["customer"] == "CUST-123456"
    finally:
        _scrub.configure()


# --- endpoints and insecure -----------------------------------------------------------------------


def test_a_schemeless_endpoint_is_grpc_and_kept_as_given() -> None:
    settings = resolve(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"}, service_name="x")
    assert settings.traces.endpoint == "collector:4317" and settings.traces.protocol == "grpc"
    assert settings.logs.endpoint == "collector:4317" and settings.traces.exporters == ("otlp",)
    other_port = resolve(environ={}, endpoint="collector:5555", service_name="x")
    assert other_port.metrics.endpoint == "collector:5555" and other_port.metrics.protocol == "grpc"
    assert other_port.sources["metrics.protocol"] == "default (a scheme-less host:port endpoint is gRPC)"
    ipv6 = resolve(environ={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "[::1]:4317"}, service_name="x")
    assert ipv6.traces.endpoint == "[::1]:4317" and ipv6.traces.protocol == "grpc"


@pytest.mark.parametrize(("env", "where"), [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT='collector:4318'"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4317", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
     "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT='collector:4317'"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "user@collector:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT="),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317/v1/traces"}, "OTEL_EXPORTER_OTLP_ENDPOINT="),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://collector:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT="),
])
def test_a_schemeless_endpoint_is_refused_where_it_cannot_work(env: dict[str, str], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(environ=env, service_name="x")
    assert where in str(info.value) and "host:port without a scheme" in str(info.value)


def test_a_schemeless_http_endpoint_argument_names_the_argument() -> None:
    with pytest.raises(ConfigError, match=r"argument traces_endpoint='collector:4318'.*http/protobuf"):
        resolve(environ={}, traces_endpoint="collector:4318", protocol="http/protobuf", service_name="x")
    with pytest.warns(UserWarning, match="argument endpoint='collector:4318'"):
        lenient = resolve(environ={}, endpoint="collector:4318", strict=False, service_name="x")
    assert lenient.traces.endpoint is None


def test_insecure_per_signal_beats_generic_and_bad_values_are_named() -> None:
    settings = resolve(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317", "OTEL_EXPORTER_OTLP_INSECURE": "true",
                                "OTEL_EXPORTER_OTLP_LOGS_INSECURE": "false"}, service_name="x")
    assert (settings.traces.insecure, settings.metrics.insecure, settings.logs.insecure) == (True, True, False)
    assert settings.sources["logs.insecure"] == "OTEL_EXPORTER_OTLP_LOGS_INSECURE"
    with pytest.raises(ConfigError) as info:
        resolve(environ={"OTEL_EXPORTER_OTLP_METRICS_INSECURE": "plaintext"}, service_name="x")
    assert "OTEL_EXPORTER_OTLP_METRICS_INSECURE='plaintext'" in str(info.value) and "true or false" in str(info.value)


@pytest.mark.parametrize(("endpoint", "insecure", "target"), [
    ("collector:4317", True, "http://collector:4317"),  # schemeless + insecure: plaintext
    ("collector:4317", False, "https://collector:4317"),
    ("collector:4317", None, "https://collector:4317"),  # the spec's default: TLS
    ("https://collector:4317", True, "https://collector:4317"),  # the https scheme wins
    ("http://collector:4317", False, "http://collector:4317"),  # so does http
])
def test_the_grpc_sender_follows_scheme_then_insecure(endpoint: str, insecure: bool | None, target: str) -> None:
    from otelkit._export import make_sender

    settings = resolve(environ={}, endpoint=endpoint, protocol="grpc", insecure=insecure, service_name="x")
    assert make_sender("traces", settings.traces).target == target


def test_spans_reach_a_real_receiver_through_a_schemeless_insecure_endpoint(otelkit_otlp_receiver: Any) -> None:
    endpoint = f"127.0.0.1:{otelkit_otlp_receiver.grpc_port}"
    otelkit.init(service_name="schemeless", endpoint=endpoint, insecure=True, metrics_exporter="none",
                 logs_exporter="none", instrument=(), system_metrics=False)
    assert _init.get_settings() is not None
    with otelkit.span("through host:port"):
        pass
    otelkit.shutdown(timeout=30)
    assert otelkit_otlp_receiver.wait_for_spans(1, timeout=60, name="through host:port")
    assert otelkit_otlp_receiver.grpc_calls("traces") >= 1
