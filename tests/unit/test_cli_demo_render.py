"""The demo's terminal views: trace tree (parents and links), histogram quantiles, metrics summary."""

from __future__ import annotations

from otelkit._demo import _render
from otelkit.testing._receiver import ReceivedLink, ReceivedPoint, ReceivedSpan

MS = 1_000_000


def span(name: str, span_id: str, parent: str | None, start: int, end: int, *, trace: str = "t1", pid: int = 1,
         links: tuple[str, ...] = (), status: str = "UNSET", **attrs: object) -> ReceivedSpan:
    return ReceivedSpan(name=name, kind="INTERNAL", trace_id=trace, span_id=span_id, parent_span_id=parent,
                        attributes=dict(attrs), resource={"service.name": f"svc{pid}", "process.pid": pid},
                        scope="s", links=[ReceivedLink(trace_id="t1", span_id=s, attributes={}) for s in links],
                        events=[], status_code=status, status_message="boom" if status == "ERROR" else "",
                        start_time_unix_nano=start * MS, end_time_unix_nano=end * MS)


def test_tree_nests_parents_follows_links_and_names_processes() -> None:
    spans = [
        span("discover", "a", None, 0, 2),
        span("send tokens", "b", "a", 1, 2),
        span("process tokens", "c", None, 10, 100, trace="t2", pid=2, links=("b",)),
        span("GET", "d", "c", 20, 90, trace="t2", pid=2, status="ERROR",
             **{"url.full": "http://127.0.0.1:9/x", "http.response.status_code": 503}),
        span("unrelated", "z", None, 0, 1, trace="t3"),
    ]
    chosen = _render.trace_spans(spans, "t1")
    assert {s.name for s in chosen} == {"discover", "send tokens", "process tokens", "GET"}
    text = _render.render_trace(chosen, unicode=False)
    lines = text.splitlines()
    assert len(lines) == 4
    assert "discover  [svc1 pid 1]" in lines[0]
    assert "`- send tokens" in lines[1]
    assert "`- process tokens (linked)  [svc2 pid 2]" in lines[2]
    assert "GET X" in lines[3] and "127.0.0.1:9/x  -> 503" in lines[3] and "boom" in lines[3]
    # Waterfall: the process span starts a tenth of the way in and lasts most of the trace.
    bar = lines[2][:_render.BAR_WIDTH]
    assert bar == ".." + "#" * 22, bar


def point(name: str, value: float | None = None, *, pid: int = 1, t: int = 1, kind: str = "sum",
          counts: list[int] | None = None, bounds: list[float] | None = None, **attrs: object) -> ReceivedPoint:
    return ReceivedPoint(name=name, unit="", description="", type=kind, attributes=dict(attrs),
                         resource={"process.pid": pid}, scope="s", value=value,
                         count=sum(counts) if counts else None, sum=0.0 if counts else None,
                         bucket_counts=counts or [], explicit_bounds=bounds or [], time_unix_nano=t)


def test_latest_points_keep_the_last_cumulative_value_per_process() -> None:
    points = [point("c", 1, t=1), point("c", 5, t=2), point("c", 3, pid=2, t=1)]
    assert _render.total(_render.latest_points(points), "c") == 8


def test_histogram_quantiles_interpolate_within_buckets() -> None:
    h = _render.Histogram()
    h.add(point("h", kind="histogram", counts=[0, 10, 0], bounds=[0.1, 0.2]))
    h.add(point("h", kind="histogram", counts=[0, 10, 0], bounds=[0.1, 0.2], pid=2))
    assert h.count == 20
    assert abs((h.quantile(0.5) or 0) - 0.15) < 1e-9
    assert abs((h.quantile(1.0) or 0) - 0.2) < 1e-9


def test_metrics_summary_names_the_slowest_source_and_error_rates() -> None:
    stage = "otelkit.pipeline.stage.duration"
    http = "http.client.request.duration"
    points = [
        point("otelkit.pipeline.discovered.items", 4),
        point("otelkit.messaging.settled.messages", 3, **{"otelkit.outcome": "ack"}),
        point("otelkit.messaging.settled.messages", 1, **{"otelkit.outcome": "dead_letter"}),
        point(stage, kind="histogram", counts=[4, 0], bounds=[0.05],
              **{"otelkit.pipeline.stage": "fetch", "otelkit.pipeline.source": "fast"}),
        point(stage, kind="histogram", counts=[0, 4], bounds=[0.05],
              **{"otelkit.pipeline.stage": "fetch", "otelkit.pipeline.source": "slow"}),
        point(http, kind="histogram", counts=[3, 0], bounds=[0.05], **{"server.port": 81,
                                                                         "http.response.status_code": 200}),
        point(http, kind="histogram", counts=[1, 0], bounds=[0.05], **{"server.port": 81,
                                                                         "http.response.status_code": 503}),
        point(http, kind="histogram", counts=[1, 0], bounds=[0.05], **{"server.port": 99}),
    ]
    text = _render.render_metrics(points, api_ports={81: "jupiter"})
    assert "discovered     4" in text and "ack 3" in text and "dead_letter 1" in text
    slow_line = next(line for line in text.splitlines() if "fetch/slow" in line)
    assert "<- slowest" in slow_line
    api_line = next(line for line in text.splitlines() if line.strip().startswith("jupiter"))
    assert "4 calls" in api_line and "25% errors (1x 503)" in api_line
    assert ":99" not in text, "calls to other servers are not counted as an API"
