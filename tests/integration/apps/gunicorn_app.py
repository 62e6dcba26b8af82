"""A WSGI app that calls otelkit.init() at import: with ``gunicorn --preload`` that happens once, in the
master, before the workers are forked (no post_fork hook)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import trace

import otelkit

otelkit.init()
tracer = trace.get_tracer("gunicorn_app")
with tracer.start_as_current_span("preload"):
    pass


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    with tracer.start_as_current_span("request", attributes={"pid": os.getpid()}):
        body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
