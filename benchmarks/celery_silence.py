"""Root spans per task in a celery worker (solo pool, real Redis broker, real rotel collector): celery integration off vs on.

Run from the repository root: `.venv/bin/python benchmarks/celery_silence.py` (figures in docs/integrations/celery.md).
import sys, uuid
from collections import Counter
sys.path.insert(0, "tests/integration")
from otelkit.testing._receiver import OtlpReceiver, RotelCollector
import test_instrument_celery as t

N = 20
for label, extra in (("celery integration off (redis only)", {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "celery"}),
                     ("celery integration on", {})):
    receiver = OtlpReceiver().start(); rotel = RotelCollector(receiver); rotel.start()
    queue = f"otelkit-test-celery-{uuid.uuid4().hex[:12]}"
    w = t.Worker(t._env(rotel, "celery-worker", "redis://127.0.0.1:6379/0", queue, "otelkit", extra), "solo")
    try:
        t.produce(t._env(rotel, "celery-producer", "redis://127.0.0.1:6379/0", queue, "otelkit", extra), [["ok", [f"x{i}"]] for i in range(N)])
        receiver.wait_for(lambda: len([r for r in receiver.logs() if str(r.body).startswith("processing")]) >= N or None, timeout=60)
    finally:
        w.stop(); t._delete_queue("redis://127.0.0.1:6379/0", queue)
    spans = [s for s in receiver.spans() if s.resource.get("service.name") == "celery-worker"]
    roots = [s for s in spans if s.parent_span_id is None]
    print(f"{label}: {len(spans)} worker spans, {len(roots)} roots for {N} tasks = {len(roots)/N:.2f} roots/task; "
          f"root names {Counter(s.name for s in roots).most_common(6)}")
    rotel.stop(); receiver.stop()
