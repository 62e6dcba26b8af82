"""Root spans per task in a celery worker: celery integration off (redis integration only) vs on.

A solo worker on the real Redis broker exports through the real rotel collector; 20 tasks. Figures in
docs/integrations/celery.md. Run from the repository root: ``.venv/bin/python benchmarks/celery_silence.py``.
"""

from __future__ import annotations

import sys
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))

import test_instrument_celery as t

from otelkit.testing._receiver import OtlpReceiver, RotelCollector

REDIS = "redis://127.0.0.1:6379/0"
N = 20


def main() -> None:
    for label, extra in (("celery integration off (redis only)", {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "celery"}),
                         ("celery integration on", {})):
        receiver = OtlpReceiver().start()
        rotel = RotelCollector(receiver)
        rotel.start()
        queue = f"otelkit-bench-celery-{uuid.uuid4().hex[:12]}"
        worker = t.Worker(t._env(rotel, "celery-worker", REDIS, queue, "otelkit", extra), "solo")
        try:
            t.produce(t._env(rotel, "celery-producer", REDIS, queue, "otelkit", extra),
                      [["ok", [f"x{i}"]] for i in range(N)])
            receiver.wait_for(lambda rx=receiver: len([r for r in rx.logs() if str(r.body).startswith("processing")])
                              >= N or None, timeout=60)
        finally:
            worker.stop()
            t._delete_queue(REDIS, queue)
        spans = [s for s in receiver.spans() if s.resource.get("service.name") == "celery-worker"]
        roots = [s for s in spans if s.parent_span_id is None]
        print(f"{label}: {len(spans)} worker spans, {len(roots)} roots for {N} tasks = {len(roots) / N:.2f} "
              f"roots/task; root names {Counter(s.name for s in roots).most_common(6)}")
        rotel.stop()
        receiver.stop()


if __name__ == "__main__":
    main()
