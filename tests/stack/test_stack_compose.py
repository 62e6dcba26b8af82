"""compose.yaml: valid against the Compose Specification, and safe to run on a laptop.

The Compose Specification JSON schema is the one vendored (and kept current)
by the check-jsonschema package (`check_jsonschema/builtin_schemas/vendor/
compose-spec.json`, from the compose-spec project); no network is needed.
"""

from __future__ import annotations

import json
import re
import subprocess
from importlib import resources
from typing import Any

import jsonschema
from _stacklib import COMPOSE, REPO, load_yaml

COMPOSE_DOC: dict[str, Any] = load_yaml(COMPOSE)
SERVICES: dict[str, dict[str, Any]] = COMPOSE_DOC["services"]

# Services whose image has no shell or HTTP client (the collector-contrib image
# is FROM scratch): their health is checked by a busybox probe that shares
# their network namespace.
PROBED_BY = {"otel-collector": "otel-collector-health", "demo-agent": "demo-agent-health"}
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|PRIVATE_KEY|DSN", re.IGNORECASE)
VAR_REF = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


def _schema() -> dict[str, Any]:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text(encoding="utf-8"))


def test_compose_is_valid_against_the_compose_specification() -> None:
    schema = _schema()
    assert schema["title"] == "Compose Specification"
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = sorted(validator_cls(schema).iter_errors(COMPOSE_DOC), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_check_catches_a_typo() -> None:
    """Negative control: a misspelt key is rejected by the same validation."""
    schema = _schema()
    broken = json.loads(json.dumps(COMPOSE_DOC))
    broken["services"]["tempo"]["healthcheck"]["intervall"] = "5s"
    assert list(jsonschema.validators.validator_for(schema)(schema).iter_errors(broken))


def _ports(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host_ip, text) of each published port, short or long syntax."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((str(port.get("host_ip", "")), json.dumps(port)))
        else:
            text = str(port)
            out.append((text.split(":")[0] if text.count(":") == 2 else "", text))
    return out


def test_every_published_port_is_bound_to_loopback() -> None:
    exposed = [f"{name}: {text}" for name, svc in SERVICES.items()
               for host_ip, text in _ports(svc) if host_ip != "127.0.0.1"]
    assert not exposed, f"ports reachable from the network: {exposed}"
    assert not any(svc.get("network_mode") == "host" for svc in SERVICES.values())


def test_anonymous_grafana_admin_only_on_loopback() -> None:
    grafana = SERVICES["grafana"]
    env = grafana["environment"]
    if env.get("GF_AUTH_ANONYMOUS_ENABLED") == "true" and env.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Admin":
        assert [ip for ip, _ in _ports(grafana)] == ["127.0.0.1"]
        # No password login at all, so the image's default admin/admin is unusable too.
        assert env.get("GF_AUTH_DISABLE_LOGIN_FORM") == "true"
        assert env.get("GF_AUTH_BASIC_ENABLED") == "false"


def test_images_are_pinned() -> None:
    problems = []
    for name, svc in SERVICES.items():
        image = svc.get("image", "")
        if "build" in svc:
            # Built from this repository: a local tag, never pulled.
            if not image.endswith(":local"):
                problems.append(f"{name}: built image should be tagged :local, got {image!r}")
            continue
        repo, _, tag = image.rpartition(":")
        if not repo or "/" in tag or tag in ("", "latest") or not re.search(r"\d+\.\d+", tag):
            problems.append(f"{name}: image {image!r} is not pinned to a version")
        if "$" in image:
            problems.append(f"{name}: image {image!r} depends on the environment")
    assert not problems, "\n".join(problems)


def test_every_service_has_a_healthcheck() -> None:
    problems = []
    for name, svc in SERVICES.items():
        if name in PROBED_BY:
            probe = SERVICES[PROBED_BY[name]]
            assert probe["network_mode"] == f"service:{name}"
            assert "13133" in " ".join(probe["healthcheck"]["test"])
            assert svc.get("profiles") == probe.get("profiles"), f"{name} and its probe start together"
            continue
        check = svc.get("healthcheck")
        if not check or check.get("disable") or not check.get("test"):
            problems.append(f"{name}: no healthcheck")
        elif check["test"][0] not in ("CMD", "CMD-SHELL"):
            problems.append(f"{name}: healthcheck test should be CMD or CMD-SHELL form")
    assert not problems, "\n".join(problems)


# What each pinned image really contains, from its project's published Dockerfile at that tag
# (docs/stack.md, "Healthchecks: evidence per image"): the base, whether there is a shell, and the
# programs a healthcheck may run. A healthcheck that runs anything else never passes.
IMAGE_CONTENTS: dict[str, dict[str, Any]] = {
    "grafana/loki:3.7.6": {
        "base": "gcr.io/distroless/static:nonroot", "shell": False, "programs": {"/usr/bin/loki"},
        "evidence": "grafana/loki cmd/loki/Dockerfile at v3.7.6 (5003600d); `-health`: cmd/loki/health.go (#20313)"},
    "grafana/tempo:3.0.3": {
        "base": "gcr.io/distroless/static-debian12", "shell": False, "programs": {"/tempo"},
        "evidence": "grafana/tempo cmd/tempo/Dockerfile at v3.0.3 (1900ed7b); `-health`: cmd/tempo/main.go"},
    "prom/prometheus:v3.14.0": {
        "base": "quay.io/prometheus/busybox", "shell": True, "programs": {"wget", "/bin/prometheus", "/bin/promtool"},
        "evidence": "prometheus/prometheus Dockerfile at v3.14.0 (d7598b71)"},
    "prom/alertmanager:v0.33.0": {
        "base": "quay.io/prometheus/busybox", "shell": True, "programs": {"wget", "/bin/alertmanager", "/bin/amtool"},
        "evidence": "prometheus/alertmanager Dockerfile at v0.33.0 (5d3ceb55)"},
    "grafana/grafana:13.1.3": {
        "base": "alpine (default variant) / ubuntu", "shell": True, "programs": {"curl"},
        "evidence": "grafana/grafana Dockerfile: `apk add ... curl` (alpine) / `apt-get install ... curl` (ubuntu)"},
    "otel/opentelemetry-collector-contrib:0.159.0": {
        "base": "scratch", "shell": False, "programs": {"/otelcol-contrib"},
        "evidence": "open-telemetry/opentelemetry-collector-releases distributions/otelcol-contrib/Dockerfile "
                    "at v0.159.0 (f8178323): FROM scratch, no health subcommand"},
    "busybox:1.37.0": {"base": "busybox", "shell": True, "programs": {"wget", "sleep"},
                       "evidence": "the busybox image is busybox"},
    "python:3.12.11-alpine3.22": {"base": "alpine", "shell": True, "programs": {"python"},
                                  "evidence": "official python image"},
    "redis:8.0.2-alpine": {"base": "alpine", "shell": True, "programs": {"redis-cli", "redis-server"},
                           "evidence": "official redis image"},
    "postgres:18.4": {"base": "debian", "shell": True, "programs": {"pg_isready"},
                      "evidence": "official postgres image"},
    "otelkit-demo:local": {"base": "python:3.12.11-slim-bookworm", "shell": True, "programs": {"otelkit"},
                           "evidence": "collector/demo/Dockerfile (pip install .[demo] puts otelkit on PATH)"},
}


def test_every_image_is_described() -> None:
    images = {svc["image"] for svc in SERVICES.values()}
    assert images == set(IMAGE_CONTENTS), images ^ set(IMAGE_CONTENTS)


def _healthcheck_problems(services: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for name, svc in services.items():
        check = svc.get("healthcheck")
        if not check or not check.get("test"):
            continue
        contents = IMAGE_CONTENTS[svc["image"]]
        form, program = check["test"][0], check["test"][1]
        if form == "CMD-SHELL":
            if not contents["shell"]:
                problems.append(f"{name}: CMD-SHELL, but {svc['image']} has no shell ({contents['base']})")
            program = program.split()[0]
        if program not in contents["programs"]:
            problems.append(f"{name}: healthcheck runs {program!r}, which {svc['image']} does not contain "
                            f"(it has {sorted(contents['programs'])}; {contents['evidence']})")
    return problems


def test_healthchecks_run_what_their_image_contains() -> None:
    """Loki's image has no wget (distroless): a wget healthcheck never passes and the stack never comes up."""
    problems = _healthcheck_problems(SERVICES)
    assert not problems, "\n".join(problems)


def test_the_image_check_catches_wget_in_a_distroless_image() -> None:
    """Negative control: the healthcheck compose.yaml had before (wget in Loki) is refused."""
    old = {"loki": {**SERVICES["loki"], "healthcheck": {
        "test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:3100/ready"]}}}
    assert any("does not contain" in p for p in _healthcheck_problems(old))
    shell = {"loki": {**SERVICES["loki"], "healthcheck": {"test": ["CMD-SHELL", "/usr/bin/loki -health"]}}}
    assert any("no shell" in p for p in _healthcheck_problems(shell))


def test_every_service_has_a_memory_limit() -> None:
    missing = [name for name, svc in SERVICES.items()
               if not (svc.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory")
                       or svc.get("mem_limit"))]
    assert not missing, f"no memory limit: {missing}"


def test_volumes_are_named_or_read_only_repo_files() -> None:
    declared = set(COMPOSE_DOC.get("volumes", {}))
    problems = []
    used = set()
    for name, svc in SERVICES.items():
        for volume in svc.get("volumes", []):
            assert isinstance(volume, str), f"{name}: use the short volume syntax"
            source, target, *mode = volume.split(":")
            if source.startswith("./"):
                if mode != ["ro"]:
                    problems.append(f"{name}: bind mount {volume!r} must be read-only")
                if not (REPO / source).exists():
                    problems.append(f"{name}: {source} does not exist in the repository")
            elif source in declared:
                used.add(source)
            else:
                problems.append(f"{name}: {volume!r} is neither a named volume nor a repository file")
    assert not problems, "\n".join(problems)
    assert declared == used, f"declared but unused volumes: {declared - used}"


def test_no_secret_is_committed() -> None:
    """Secret-looking settings come from variables, and every variable is documented in .env.example."""
    example = (REPO / ".env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^([A-Z0-9_]+)=", example, re.MULTILINE))
    problems = []
    referenced = set(VAR_REF.findall(COMPOSE.read_text(encoding="utf-8")))
    for name, svc in SERVICES.items():
        env = svc.get("environment", {})
        assert isinstance(env, dict), f"{name}: use the mapping form for environment"
        for key, value in env.items():
            if SECRET_KEY.search(key) and not VAR_REF.fullmatch(str(value)):
                problems.append(f"{name}: {key} is a literal; read it from .env")
        for arg in svc.get("command", []) if isinstance(svc.get("command"), list) else []:
            if re.search(r"password=|://[^/@\s]+:[^/@\s]+@", str(arg)):
                problems.append(f"{name}: credentials on the command line: {arg!r}")
    problems += [f"${{{var}}} is not documented in .env.example" for var in sorted(referenced - documented)]
    assert not problems, "\n".join(problems)
    # .env (with the real values) is git-ignored.
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO, check=False)
    assert ignored.returncode == 0, ".env must be listed in .gitignore"
    assert re.search(r"^[A-Z0-9_]+=$", example, re.MULTILINE), ".env.example ships names, never values"


def test_profiles_and_dependencies() -> None:
    demo = {name for name, svc in SERVICES.items() if "demo" in svc.get("profiles", [])}
    assert {"redis", "postgres", "demo-agent", "otelkit-demo"} <= demo
    for name, svc in SERVICES.items():
        for dep in svc.get("depends_on", {}):
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            if name not in demo:
                assert dep not in demo, f"{name} (default profile) depends on {dep} (demo profile only)"
    # The demo pipeline is built from this repository and sends to the collector.
    build = SERVICES["otelkit-demo"]["build"]
    assert (REPO / build["context"] / build["dockerfile"]).is_file()
    assert SERVICES["otelkit-demo"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    assert "--continuous" in SERVICES["otelkit-demo"]["command"]


def test_demo_command_is_accepted_by_the_otelkit_cli() -> None:
    from otelkit.__main__ import build_parser

    args = build_parser().parse_args(SERVICES["otelkit-demo"]["command"])
    assert args.command == "demo" and args.continuous and args.telemetry == "otlp"
    check = SERVICES["otelkit-demo"]["healthcheck"]["test"]
    assert check[:2] == ["CMD", "otelkit"]
    assert build_parser().parse_args(check[2:]).command == "doctor"


def test_config_files_mounted_by_compose_exist() -> None:
    collector = SERVICES["otel-collector"]
    config_arg = collector["command"][0]
    assert config_arg.startswith("--config=")
    mounted = {v.split(":")[1]: v.split(":")[0] for v in collector["volumes"]}
    assert config_arg.removeprefix("--config=") in mounted



def test_demo_image_context_contains_what_the_dockerfile_copies() -> None:
    """Build context = repository root, filtered by Dockerfile.dockerignore (BuildKit): COPY sources survive it."""
    build = SERVICES["otelkit-demo"]["build"]
    dockerfile = REPO / build["context"] / build["dockerfile"]
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text(encoding="utf-8").split("\n")
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "start from nothing and re-include what the image needs"
    included = {p[1:] for p in patterns if p.startswith("!")}
    copies = [line.split()[1:-1] for line in dockerfile.read_text(encoding="utf-8").splitlines()
              if line.startswith("COPY ")]
    sources = {src for srcs in copies for src in srcs}
    assert sources and sources <= included, sources - included
    assert all((REPO / src).exists() for src in sources)
    text = dockerfile.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-", text, re.MULTILINE), "pinned base image"
    assert re.search(r"^USER (?!0|root)", text, re.MULTILINE), "the demo does not run as root"
