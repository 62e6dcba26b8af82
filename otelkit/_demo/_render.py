"""Terminal views of the telemetry the demo collected: one event's trace, the pipeline metrics.

They read what an OTLP receiver decoded (``otelkit.testing.OtlpReceiver``'s
``ReceivedSpan`` / ``ReceivedPoint`` / ``ReceivedLog``), that is exactly what
went over the wire from the worker processes. The trace view follows span
links as well as parents, so a consumer span that is linked rather than
parented to its producer still shows under it, marked ``(linked)``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from otelkit import _names
from otelkit._console import clean, format_duration

BAR_WIDTH = 24
_MAX_SPANS = 200


# --------------------------------------------------------------------------------------------------
# The trace tree


def trace_spans(spans: Sequence[Any], trace_id: str) -> list[Any]:
    """Spans of ``trace_id`` plus, transitively, whole traces linked to one of its spans."""
    by_trace: dict[str, list[Any]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    chosen = list(by_trace.get(trace_id, []))
    ids = {s.span_id for s in chosen}
    traces = {trace_id}
    changed = True
    while changed and len(chosen) < _MAX_SPANS:
        changed = False
        for other_trace, members in by_trace.items():
            if other_trace in traces:
                continue
            if any(link.span_id in ids for s in members for link in s.links):
                traces.add(other_trace)
                chosen.extend(members)
                ids.update(s.span_id for s in members)
                changed = True
    return chosen[:_MAX_SPANS]


def render_trace(spans: Sequence[Any], *, colour: bool = False, unicode: bool = True) -> str:
    """An indented tree with a waterfall bar, one line per span; processes named where they change."""
    if not spans:
        return "(no spans)"
    by_id = {s.span_id: s for s in spans}
    children: dict[str | None, list[Any]] = defaultdict(list)
    linked: set[str] = set()
    for span in spans:
        parent = span.parent_span_id if span.parent_span_id in by_id else None
        if parent is None:
            # A root linked to a span shown here hangs under that span.
            for link in span.links:
                if link.span_id in by_id and link.span_id != span.span_id:
                    parent = link.span_id
                    linked.add(span.span_id)
                    break
        children[parent].append(span)
    for members in children.values():
        members.sort(key=lambda s: s.start_time_unix_nano)
    t0 = min(s.start_time_unix_nano for s in spans)
    t1 = max(s.end_time_unix_nano for s in spans)
    total = max(t1 - t0, 1)
    branch, last, pipe, blank = ("├─ ", "└─ ", "│  ", "   ") if unicode else ("|- ", "`- ", "|  ", "   ")
    full, empty = ("█", "·") if unicode else ("#", ".")

    def paint(code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if colour else text

    rows: list[tuple[str, str, str]] = []  # (tree+name, details, bar)

    def walk(span: Any, prefix: str, is_last: bool, parent: Any | None, depth: int) -> None:
        connector = "" if parent is None and depth == 0 else (last if is_last else branch)
        name = span.name + (" (linked)" if span.span_id in linked else "")
        if span.status_code == "ERROR":
            name = paint("31", name + " ✗" if unicode else name + " X")
        where = _process(span)
        label = f"{prefix}{connector}{name}"
        if parent is None or _process(parent) != where:
            label += "  " + paint("36", f"[{where}]")
        details = "  ".join(x for x in (format_duration(span.end_time_unix_nano - span.start_time_unix_nano),
                                        _span_facts(span)) if x)
        start = int((span.start_time_unix_nano - t0) * BAR_WIDTH / total)
        width = max(1, round((span.end_time_unix_nano - span.start_time_unix_nano) * BAR_WIDTH / total))
        start = min(start, BAR_WIDTH - 1)
        width = min(width, BAR_WIDTH - start)
        bar = empty * start + full * width + empty * (BAR_WIDTH - start - width)
        rows.append((label, details, bar))
        kids = children.get(span.span_id, [])
        child_prefix = prefix + ("" if parent is None and depth == 0 else (blank if is_last else pipe))
        for i, kid in enumerate(kids):
            walk(kid, child_prefix, i == len(kids) - 1, span, depth + 1)

    roots = children.get(None, [])
    for i, root in enumerate(roots):
        walk(root, "", i == len(roots) - 1, None, 0)
    width = max(_visible_len(r[0]) for r in rows)
    lines = []
    for label, details, bar in rows:
        pad = " " * (width - _visible_len(label))
        lines.append(f"{bar}  {label}{pad}  {paint('2', details) if details else ''}".rstrip())
    return "\n".join(lines)


def render_exceptions(spans: Sequence[Any], *, limit: int = 2, max_lines: int = 12) -> str:
    """The tracebacks recorded on the spans (one per exception: the innermost span it went through),
    each under the span and process it came from, cut to its last ``max_lines`` lines."""
    seen: dict[tuple[Any, Any], tuple[int, Any, str]] = {}
    for span in spans:
        for event in span.events:
            attributes = event.attributes or {}
            text = attributes.get("exception.stacktrace")
            if event.name != "exception" or not isinstance(text, str) or not text.strip():
                continue
            key = (attributes.get("exception.type"), attributes.get("exception.message"))
            if key not in seen or span.end_time_unix_nano < seen[key][0]:
                seen[key] = (span.end_time_unix_nano, span, text)
    blocks = []
    for _end, span, text in sorted(seen.values(), key=lambda item: item[0])[:limit]:
        lines = [clean(line) for line in text.rstrip("\n").splitlines()]
        if len(lines) > max_lines:
            lines = [lines[0], f"  … {len(lines) - max_lines} more lines", *lines[-(max_lines - 1):]]
        blocks.append(f"{clean(span.name)}  [{_process(span)}]:\n" + "\n".join("    " + line for line in lines))
    return "\n".join(blocks)


def _visible_len(text: str) -> int:
    import re

    return len(re.sub(r"\x1b\[[0-9;]*m", "", text))


def _process(span: Any) -> str:
    resource = span.resource
    service = resource.get("service.name", "?")
    pid = resource.get("process.pid")
    return f"{service} pid {pid}" if pid is not None else str(service)


def _span_facts(span: Any) -> str:
    """A few attributes that say what the span did (URL path and status, SQL, outcome...)."""
    a: Mapping[str, Any] = span.attributes
    facts: list[str] = []
    url = a.get("url.full") or a.get("http.url")
    if url:
        from urllib.parse import urlsplit

        parts = urlsplit(str(url))
        path = parts.path if len(parts.path) <= 40 else parts.path[:39] + "…"
        facts.append(f"{parts.hostname}:{parts.port}{path}")
    status = a.get("http.response.status_code", a.get("http.status_code"))
    if status is not None:
        facts.append(f"-> {status}")
    statement = a.get("db.query.text") or a.get("db.statement")
    if statement and not url:
        text = " ".join(str(statement).split())
        facts.append(text if len(text) <= 60 else text[:59] + "…")
    source = a.get(_names.ATTR_SOURCE)
    if source and span.name != source:
        facts.append(f"source={source}")
    attempt = a.get(_names.ATTR_ATTEMPT)
    if attempt is not None:
        facts.append(f"attempt={attempt}")
    outcome = a.get(_names.ATTR_OUTCOME)
    if outcome and outcome not in ("success", "ack"):
        facts.append(f"outcome={outcome}")
    if span.status_code == "ERROR" and span.status_message:
        message = span.status_message
        facts.append(message if len(message) <= 70 else message[:69] + "…")
    return "  ".join(facts)


# --------------------------------------------------------------------------------------------------
# Metrics


def latest_points(points: Iterable[Any]) -> list[Any]:
    """The last point of every series (name, process, attributes): cumulative totals per process."""
    latest: dict[tuple[Any, ...], Any] = {}
    for point in points:
        process = (point.resource.get("service.instance.id"), point.resource.get("process.pid"))
        key = (point.name, process, tuple(sorted((k, str(v)) for k, v in point.attributes.items())))
        previous = latest.get(key)
        if previous is None or point.time_unix_nano >= previous.time_unix_nano:
            latest[key] = point
    return list(latest.values())


def total(points: Sequence[Any], name: str, **where: str) -> float:
    """Sum of a counter's latest values across processes, filtered by attribute values."""
    return sum(float(p.value or 0) for p in points if p.name == name and _match(p, where))


def _match(point: Any, where: Mapping[str, str]) -> bool:
    return all(str(point.attributes.get(k.replace("__", "."))) == v for k, v in where.items())


class Histogram:
    """Histogram points merged across processes (same bucket bounds)."""

    def __init__(self) -> None:
        self.bounds: list[float] = []
        self.counts: list[int] = []
        self.count = 0
        self.sum = 0.0

    def add(self, point: Any) -> None:
        if not self.bounds and point.explicit_bounds:
            self.bounds = list(point.explicit_bounds)
            self.counts = [0] * (len(self.bounds) + 1)
        if list(point.explicit_bounds) == self.bounds and len(point.bucket_counts) == len(self.counts):
            self.counts = [a + b for a, b in zip(self.counts, point.bucket_counts, strict=True)]
        self.count += int(point.count or 0)
        self.sum += float(point.sum or 0.0)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """Estimated by linear interpolation inside the bucket holding the q-th observation."""
        if not self.count or not self.bounds:
            return self.mean
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.counts):
            if n and seen + n >= rank:
                low = self.bounds[i - 1] if i > 0 else 0.0
                high = self.bounds[i] if i < len(self.bounds) else self.bounds[-1]
                return low + (high - low) * ((rank - seen) / n)
            seen += n
        return self.bounds[-1]


def histograms(points: Iterable[Any], name: str, key: Any = None) -> dict[str, Histogram]:
    """Histogram points of ``name`` merged per ``key(point)`` (``None`` key: skipped)."""
    out: dict[str, Histogram] = {}
    for point in points:
        if point.name != name or point.type != "histogram":
            continue
        group = key(point) if key is not None else ""
        if group is None:
            continue
        out.setdefault(group, Histogram()).add(point)
    return out


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return format_duration(int(value * 1e9))


def _latency(h: Histogram) -> str:
    return f"p50 {_seconds(h.quantile(0.5)):>8}  p95 {_seconds(h.quantile(0.95)):>8}"


def render_metrics(raw_points: Sequence[Any], *, api_ports: Mapping[int, str] | None = None) -> str:
    """The pipeline summary a ``metrics:summary`` command would print, from the exported metrics."""
    points = latest_points(raw_points)
    lines: list[str] = []
    gauge_points = [p for p in raw_points if p.name == _names.QUEUE_LENGTH.name
                     and p.attributes.get(_names.ATTR_QUEUE_STATE) != "dead_letter"]
    dead_points = [p for p in raw_points if p.name == _names.QUEUE_LENGTH.name
                   and p.attributes.get(_names.ATTR_QUEUE_STATE) == "dead_letter"]

    def counter(name: str, **where: str) -> int:
        return int(total(points, name, **where))

    discovered = counter(_names.DISCOVERED_ITEMS.name)
    sent = counter(_names.MESSAGING_SENT.name)
    consumed = counter(_names.MESSAGING_CONSUMED.name)
    settled: dict[str, int] = defaultdict(int)
    for p in points:
        if p.name == _names.MESSAGES_SETTLED.name:
            settled[str(p.attributes.get(_names.ATTR_OUTCOME, "?"))] += int(p.value or 0)
    lines.append("Pipeline")
    lines.append(f"  discovered {discovered:>5}   sent {sent:>5}   processed {consumed:>5}   "
                 + "   ".join(f"{k} {v}" for k, v in sorted(settled.items())))
    for name, label in ((_names.MESSAGE_END_TO_END.name, "end-to-end latency"),
                        (_names.MESSAGE_TIME_IN_QUEUE.name, "time in queue"),
                        (_names.MESSAGING_PROCESS_DURATION.name, "processing time")):
        merged = histograms(points, name).get("")
        if merged is not None and merged.count:
            lines.append(f"  {label:<20}{_latency(merged)}   ({merged.count} messages)")
    if gauge_points:
        lines.append(f"  queue depth           max {max(int(p.value or 0) for p in gauge_points)}"
                     f"   ({len(gauge_points)} samples of {_names.QUEUE_LENGTH.name})")
    if dead_points:
        lines.append(f"  dead-letter list      {int(dead_points[-1].value or 0)}")

    def stage_key(p: Any) -> str:
        source = p.attributes.get(_names.ATTR_SOURCE)
        return f"{p.attributes.get(_names.ATTR_STAGE, '?')}" + (f"/{source}" if source else "")

    stages = histograms(points, _names.STAGE_DURATION.name, stage_key)
    if stages:
        failures: dict[str, int] = defaultdict(int)
        for p in points:
            if p.name == _names.STAGE_ITEMS.name and p.attributes.get(_names.ATTR_OUTCOME) == "failure":
                failures[stage_key(p)] += int(p.value or 0)
        lines.append("Stages (by source)")
        slowest = max(stages, key=lambda k: stages[k].quantile(0.5) or 0.0)
        for key in sorted(stages):
            h = stages[key]
            failed = failures.get(key, 0)
            rate = f"{100.0 * failed / h.count:4.0f}% failed" if h.count else ""
            mark = "  <- slowest" if key == slowest and len(stages) > 1 else ""
            lines.append(f"  {key:<20}{h.count:>5} runs  {_latency(h)}  {rate}{mark}")

    ports = dict(api_ports or {})

    def http_key(p: Any) -> str | None:
        port = p.attributes.get("server.port")
        host = p.attributes.get("server.address", "?")
        if ports and isinstance(port, int) and port not in ports:
            return None
        return ports.get(port, f"{host}:{port}") if isinstance(port, int) else str(host)

    http = histograms(points, _names.HTTP_CLIENT_DURATION.name, http_key)
    if http:
        errors: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for p in points:
            if p.name == _names.HTTP_CLIENT_DURATION.name and p.type == "histogram":
                status = p.attributes.get("http.response.status_code")
                api = http_key(p)
                if api is not None and (p.attributes.get("error.type") or (isinstance(status, int) and status >= 400)):
                    errors[api][str(status or p.attributes.get("error.type"))] += int(p.count or 0)
        lines.append(f"External APIs ({_names.HTTP_CLIENT_DURATION.name})")
        for key in sorted(http):
            h = http[key]
            failed = sum(errors[key].values())
            detail = ", ".join(f"{n}x {s}" for s, n in sorted(errors[key].items()))
            lines.append(f"  {key:<20}{h.count:>5} calls {_latency(h)}  "
                         f"{100.0 * failed / h.count:4.0f}% errors" + (f" ({detail})" if detail else ""))

    def db_key(p: Any) -> str:
        system = p.attributes.get("db.system.name") or p.attributes.get("db.system") or "?"
        operation = p.attributes.get("db.operation.name") or p.attributes.get("db.operation") or "?"
        return f"{system} {operation}"

    db = histograms(points, _names.DB_CLIENT_DURATION.name, db_key)
    if db:
        lines.append(f"Database and Redis ({_names.DB_CLIENT_DURATION.name})")
        for key in sorted(db):
            h = db[key]
            lines.append(f"  {key:<20}{h.count:>5} ops   {_latency(h)}")
    return "\n".join(lines)


def render_logs(logs: Sequence[Any], trace_ids: set[str], *, limit: int = 8) -> str:
    """Log records of the shown trace, with the IDs they carry."""
    chosen = sorted((r for r in logs if r.trace_id in trace_ids), key=lambda r: r.time_unix_nano)
    lines = []
    for record in chosen[:limit]:
        cid = record.attributes.get(_names.CORRELATION_ATTRIBUTE) or record.attributes.get("correlation_id")
        lines.append(f"  {record.severity_text or '?':<7} {record.body}   "
                     f"trace_id={record.trace_id} span_id={record.span_id}" + (f" correlation_id={cid}" if cid else ""))
    if len(chosen) > limit:
        lines.append(f"  ... and {len(chosen) - limit} more")
    return "\n".join(lines)
