"""The broker integrations without a broker: lazy import, status, one layer, FastStream's Redis frame."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from otelkit._pipeline import carriers

pytest.importorskip("faststream")

_PROBE = r"""
import json, sys
import otelkit
otelkit.init(service_name="x", traces_exporter="none", metrics_exporter="none", logs_exporter="none",
             system_metrics=False)
before = "faststream" in sys.modules
otelkit.init(service_name="x", traces_exporter="none", metrics_exporter="none", logs_exporter="none",
             system_metrics=False)  # re-init: idempotent
from faststream.redis import RedisBroker
from faststream.redis.opentelemetry import RedisTelemetryMiddleware

def names(broker):
    return [type(m).__name__ for m in broker.middlewares]

status = {s.name: [s.state, s.reason] for s in otelkit.integration_status()}
print(json.dumps({
    "imported_by_init": before,
    "status": status.get("faststream"),
    "auto": names(RedisBroker("redis://127.0.0.1:1")),
    "explicit": names(RedisBroker("redis://127.0.0.1:1", middlewares=[otelkit.faststream_middleware()])),
    "faststream_own": names(RedisBroker("redis://127.0.0.1:1", middlewares=[RedisTelemetryMiddleware()])),
}))
"""


def _probe(**env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_"))}
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120,
                          env={**clean, **env})
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_init_does_not_import_faststream_and_patches_brokers_made_later() -> None:
    result = _probe()
    assert result["imported_by_init"] is False
    assert result["status"][0] == "enabled" and "when the application imports it" in result["status"][1]
    assert result["auto"].count("FastStreamMiddleware") == 1  # once, after two init() calls
    assert result["explicit"].count("FastStreamMiddleware") == 1  # given by hand: not added twice
    # FastStream's own OpenTelemetry middleware already traces this broker: otelkit adds no second layer.
    assert "FastStreamMiddleware" not in result["faststream_own"]


def test_disabled_by_name() -> None:
    result = _probe(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="faststream")
    assert result["status"][0] == "disabled"
    assert "FastStreamMiddleware" not in result["auto"]


def _frame(headers: dict[str, str], body: object) -> bytes:
    from faststream.redis.parser.binary import BinaryMessageFormatV1

    return asyncio.run(BinaryMessageFormatV1.encode(message=body, reply_to=None, headers=headers,
                                                    correlation_id="fs-cid-1"))


def test_plain_unwrap_reads_faststream_redis_frames() -> None:
    traceparent = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    payload, headers = carriers.unwrap(_frame({"traceparent": traceparent}, {"a": 1}))
    assert json.loads(payload) == {"a": 1}
    assert headers["traceparent"] == traceparent
    assert headers["otelkit-correlation-id"] == "fs-cid-1"  # FastStream's correlation_id, adopted


@pytest.mark.parametrize("cut", [8, 10, 19, 25, 40])
def test_truncated_faststream_frames_come_back_raw(cut: int) -> None:
    raw = _frame({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}, {"a": 1})[:cut]
    assert carriers.unwrap(raw) == (raw, {})


def test_frame_with_lying_offsets_comes_back_raw() -> None:
    raw = bytearray(_frame({"k": "v"}, {"a": 1}))
    raw[14:18] = (10_000).to_bytes(4, "big")  # data offset beyond the end
    assert carriers.unwrap(bytes(raw)) == (bytes(raw), {})


_LIBS_PROBE = r"""
import json, sys
import otelkit
if "contrib" in sys.argv:
    from opentelemetry.instrumentation.pika import PikaInstrumentor
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
    PikaInstrumentor().instrument()
    AioPikaInstrumentor().instrument()  # refused by old contribs when aio-pika is newer than they support
    contrib_on = {"pika": PikaInstrumentor().is_instrumented_by_opentelemetry,
                  "aio-pika": AioPikaInstrumentor().is_instrumented_by_opentelemetry}
else:
    contrib_on = {}
otelkit.init(service_name="x", traces_exporter="none", metrics_exporter="none", logs_exporter="none",
             system_metrics=False)
imported = sorted(m for m in ("pika", "aio_pika", "nats", "faststream") if m in sys.modules)
status = {s.name: [s.state, s.reason] for s in otelkit.integration_status()}
import pika.channel, aio_pika.exchange, nats.aio.client
def ours(owner, name):
    return bool(getattr(vars(owner).get(name), "_self_otelkit", False))
print(json.dumps({"imported": imported, "status": status, "contrib_on": contrib_on,
                  "wrapped": {"pika": ours(pika.channel.Channel, "basic_publish"),
                              "aio-pika": ours(aio_pika.exchange.Exchange, "publish"),
                              "nats": ours(nats.aio.client.Client, "publish")}}))
"""


def _libs_probe(*argv: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_"))}
    proc = subprocess.run([sys.executable, "-c", _LIBS_PROBE, *argv], capture_output=True, text=True, timeout=120,
                          env=clean)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_rabbitmq_and_nats_libraries_are_patched_on_import_not_by_init() -> None:
    pytest.importorskip("aio_pika")
    result = _libs_probe()
    assert result["imported"] == []
    status = result["status"]
    assert isinstance(status, dict)
    for name in ("pika", "aio-pika", "nats"):
        assert status[name][0] == "enabled" and "when the application imports it" in status[name][1], status[name]
    assert result["wrapped"] == {"pika": True, "aio-pika": True, "nats": True}


def test_contrib_pika_instrumentors_enabled_by_the_app_mean_no_second_layer() -> None:
    pytest.importorskip("opentelemetry.instrumentation.aio_pika")
    result = _libs_probe("contrib")
    status, contrib_on, wrapped = result["status"], result["contrib_on"], result["wrapped"]
    assert isinstance(status, dict) and isinstance(contrib_on, dict) and isinstance(wrapped, dict)
    assert contrib_on["pika"], "the contrib pika instrumentation should accept this pika"
    for name, instrumentor in (("pika", "PikaInstrumentor"), ("aio-pika", "AioPikaInstrumentor")):
        if contrib_on[name]:  # the app instrumented it: otelkit steps aside, no second layer
            assert status[name][0] == "disabled" and instrumentor in status[name][1], status[name]
            assert wrapped[name] is False
        else:  # an older contrib refused this library version (it instruments nothing): otelkit's own layer
            assert status[name][0] == "enabled", status[name]
            assert wrapped[name] is True
    assert wrapped["nats"] is True


class _Odd:
    """A delivery whose every attribute is hostile: telemetry must still hand it to the application."""

    def __getattr__(self, name: str) -> object:
        raise RuntimeError(f"no {name}")

    def __str__(self) -> str:
        raise RuntimeError("unprintable")


def test_odd_deliveries_reach_the_handler_untraced_never_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from otelkit._instrument import nats as nats_integration
    from otelkit._instrument import pika as pika_integration

    monkeypatch.setattr(pika_integration, "_enabled", True)
    monkeypatch.setattr(nats_integration, "_enabled", True)
    got: list[object] = []
    traced = pika_integration._traced_callback(lambda *args: got.append(args) or "done", "q")
    assert traced(_Odd(), _Odd(), _Odd(), b"body") == "done" and len(got) == 1

    class Headers:
        """Properties whose headers are garbage and whose correlation_id is not a str."""

        headers = {"traceparent": "00-zz-not-a-trace-01", "baggage": "%%%", "x-delivery-count": "many"}
        correlation_id = b"\xff\xfe"
        message_id = 12

    class Method:
        routing_key, exchange, delivery_tag, redelivered = "q", "", 7, True

    assert traced(_Odd(), Method(), Headers(), b"body") == "done" and len(got) == 2

    async def handler(msg: object) -> str:
        got.append(msg)
        return "handled"

    assert asyncio.run(nats_integration._traced(handler, _Odd())(_Odd())) == "handled"


def test_queue_depth_switches_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from otelkit import _active
    from otelkit._config import ConfigError, resolve
    from otelkit._instrument import _amqp

    for value, expected in (("false", False), ("0", False), ("NO", False), ("true", True), ("", True)):
        settings = resolve(environ={"OTELKIT_PIKA_QUEUE_DEPTH": value})
        monkeypatch.setattr(_active, "settings", lambda s=settings: s)
        assert _amqp.depth_enabled("pika") is expected
        assert _amqp.depth_enabled("nats") is True
    with pytest.raises(ConfigError, match="OTELKIT_NATS_QUEUE_DEPTH"):
        resolve(environ={"OTELKIT_NATS_QUEUE_DEPTH": "sometimes"})
