"""build_resource(): service identity, detectors, OTEL_RESOURCE_ATTRIBUTES merge, container id, instance id."""

from __future__ import annotations

import os

import pytest

from otelkit._config import resolve
from otelkit._resource import (
    _derive_name,
    build_resource,
    derive_service_name,
    parse_container_id,
    service_instance_id,
)

CID = "a" * 12 + "0123456789abcdef" * 3 + "b" * 4  # 64 hex characters


def test_resource_has_service_host_os_process_runtime_attributes() -> None:
    s = resolve(environ={}, service_name="billing", service_version="2.1.0", environment="staging")
    attrs = dict(build_resource(s).attributes)
    assert attrs["service.name"] == "billing"
    assert attrs["service.version"] == "2.1.0"
    assert attrs["deployment.environment.name"] == "staging"
    assert len(str(attrs["service.instance.id"])) == 36
    for key in ("host.name", "host.arch", "os.type", "process.pid", "process.runtime.name",
                "process.runtime.version", "telemetry.sdk.language", "telemetry.sdk.version",
                "telemetry.distro.name"):
        assert key in attrs, key
    assert attrs["process.pid"] == os.getpid()
    assert "process.command_args" not in attrs and "process.command_line" not in attrs


def test_env_resource_attributes_merged_and_arguments_win() -> None:
    env = {"OTEL_RESOURCE_ATTRIBUTES": "team=payments,service.name=env-name,host.name=pinned,service.version=0.9",
           "OTEL_SERVICE_NAME": "svc-from-env"}
    s = resolve(environ=env, resource_attributes={"team": "core"}, service_version="1.0")
    attrs = dict(build_resource(s).attributes)
    assert attrs["team"] == "core"
    assert attrs["service.name"] == "svc-from-env"
    assert attrs["service.version"] == "1.0"
    assert attrs["host.name"] == "pinned"  # explicit attributes beat detection


def test_service_name_never_unknown_service() -> None:
    s = resolve(environ={})
    assert s.service_name and not s.service_name.startswith("unknown_service")
    assert s.sources["service_name"].startswith("derived from")
    assert build_resource(s).attributes["service.name"] == s.service_name


@pytest.mark.parametrize(
    ("argv0", "module", "expected"),
    [
        ("/srv/app/worker.py", None, "worker"),
        ("/venv/bin/my-service", None, "my-service"),
        ("-c", None, "python"),
        ("", None, "python"),
        ("/x/y/__main__.py", "billing.jobs", "billing.jobs"),
        ("/srv/payments/__main__.py", None, "payments"),
        ("weird name!.py", None, "weird-name"),
    ],
)
def test_derived_service_names(argv0: str, module: str | None, expected: str) -> None:
    assert _derive_name(argv0, module)[0] == expected


def test_derive_service_name_reads_the_running_program() -> None:
    name, how = derive_service_name()
    assert name  # pytest runs as a console script or as -m pytest
    assert how in ("sys.argv[0]", "the __main__ module", "the interpreter (no program name)")


CGROUP_V1_DOCKER = f"""12:memory:/docker/{CID}
11:cpu,cpuacct:/docker/{CID}
0::/
"""
CGROUP_V1_K8S = f"""5:cpuset:/kubepods/besteffort/pod5e1c3e6f-4c2b-11e9-8ed4-0242ac110002/{CID}
"""
CGROUP_V2_SYSTEMD = f"""0::/system.slice/docker-{CID}.scope
"""
CGROUP_CRI = f"""0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{CID}.scope
"""
MOUNTINFO_V2 = f"""680 679 0:58 / / rw,relatime master:308 - overlay overlay rw
700 680 254:1 /var/lib/docker/containers/{CID}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda1 rw
701 680 254:1 /var/lib/docker/containers/{CID}/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw
"""
HOST_CGROUP = """4:memory:/process_api/dfef276c313c840298bbe653c3f78b1b
1:cpu:/
0::/
"""


@pytest.mark.parametrize("cgroup", [CGROUP_V1_DOCKER, CGROUP_V1_K8S, CGROUP_V2_SYSTEMD, CGROUP_CRI])
def test_container_id_from_cgroup(cgroup: str) -> None:
    assert parse_container_id(cgroup, "") == CID


def test_container_id_from_mountinfo_when_cgroup_v2_hides_it() -> None:
    assert parse_container_id("0::/\n", MOUNTINFO_V2) == CID


def test_no_container_id_outside_a_container() -> None:
    assert parse_container_id(HOST_CGROUP, "22 1 0:21 / /proc rw - proc proc rw\n") is None
    assert parse_container_id("", "") is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_service_instance_id_is_stable_per_process_and_new_in_a_forked_child() -> None:
    parent_id = service_instance_id()
    assert service_instance_id() == parent_id
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its id and leave without running pytest's atexit hooks
        try:
            os.write(write_fd, service_instance_id().encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        child_id = fh.read().decode()
    os.waitpid(pid, 0)
    assert len(child_id) == 36
    assert child_id != parent_id


def test_explicit_instance_id_is_kept() -> None:
    s = resolve(environ={"OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=pod-7"}, service_name="x")
    assert build_resource(s).attributes["service.instance.id"] == "pod-7"
