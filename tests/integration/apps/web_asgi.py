"""FastAPI and Starlette apps for the server tests (run by uvicorn or gunicorn in a subprocess).

``WEB_BEFORE_INIT=1`` builds the apps before ``otelkit.init()`` (they must be traced all the same).
``WEB_DOWNSTREAM`` is a URL the ``/items`` route and the ``/ws`` websocket call with httpx (the test's server
records the headers).
"""

from __future__ import annotations

# ruff: noqa: E402  (otelkit.init() runs before or after the imports, on purpose)
import asyncio
import logging
import os

BEFORE = os.environ.get("WEB_BEFORE_INIT") == "1"

if not BEFORE:
    import otelkit

    otelkit.init()

import httpx
from fastapi import BackgroundTasks, FastAPI, WebSocket
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket as StarletteWebSocket

log = logging.getLogger("web_asgi")
log.setLevel(logging.INFO)
tracer = trace.get_tracer("web_asgi")

app = FastAPI()


def _background(item_id: int) -> None:
    with tracer.start_as_current_span("background-task", attributes={"pid": os.getpid()}):
        log.info("background for %s", item_id)


async def _child(item_id: int) -> None:
    await asyncio.sleep(0)
    with tracer.start_as_current_span("asyncio-task"):
        log.info("task for %s", item_id)


@app.get("/items/{item_id}")
async def item(item_id: int, background: BackgroundTasks) -> dict[str, object]:
    log.info("handling item %s", item_id)
    await asyncio.create_task(_child(item_id))
    downstream = os.environ.get("WEB_DOWNSTREAM")
    if downstream:
        async with httpx.AsyncClient() as client:
            await client.get(downstream)
    background.add_task(_background, item_id)
    return {"item": item_id, "pid": os.getpid()}


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError("boom")


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.websocket("/ws/{room}")
async def ws(websocket: WebSocket, room: str) -> None:
    """Echoes, per message, the correlation ID seen by the handler and by a task it spawned."""
    import otelkit

    await websocket.accept()
    async for text in websocket.iter_text():
        log.info("ws %s got %s", room, text)

        async def spawned(text: str) -> str | None:
            await asyncio.sleep(0)
            with tracer.start_as_current_span("ws-task"):
                log.info("ws task for %s", text)
            return otelkit.correlation_id()

        from_task = await asyncio.create_task(spawned(text))
        downstream = os.environ.get("WEB_DOWNSTREAM")
        if downstream:
            async with httpx.AsyncClient() as client:
                await client.get(downstream)
        await websocket.send_json({"handler": otelkit.correlation_id(), "task": from_task})


async def hello(request: Request) -> PlainTextResponse:
    log.info("starlette hello %s", request.path_params["name"])
    return PlainTextResponse(f"hello {os.getpid()}")


async def star_ws(websocket: StarletteWebSocket) -> None:
    import otelkit

    await websocket.accept()
    text = await websocket.receive_text()
    log.info("starlette ws got %s", text)
    await websocket.send_text(otelkit.correlation_id() or "")
    await websocket.close()


starlette_app = Starlette(routes=[Route("/hello/{name}", hello), WebSocketRoute("/ws", star_ws)])

if BEFORE:
    import otelkit

    otelkit.init()
