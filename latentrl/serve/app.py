"""The HTTP layer: FastAPI routes, API-key check, body-size limit, errors and metrics.

Every error, whatever raised it (a bad field, malformed JSON, an unknown model, a missing
key, an oversized body), is answered with OpenAI's error body
``{"error": {"message", "type", "param", "code"}}`` and a 4xx status; only a bug gives 500.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing, asynccontextmanager
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from latentrl.config import ServeConfig
from latentrl.serve.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIError,
    PluginLoadRequest,
    SamplingRequest,
    error_body,
)
from latentrl.serve.serving import Decoding, Metrics, ModelServer

log = logging.getLogger(__name__)
T = TypeVar("T")


def create_app(cfg: ServeConfig) -> FastAPI:
    """Load the main model, its engine and plugins, and return the app serving them."""
    server = ModelServer(cfg)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await server.start()
        try:
            yield
        finally:
            server.close()

    app = FastAPI(title="latentrl", lifespan=lifespan)
    app.state.server = server
    _add_error_handlers(app)

    # Plain ASGI middlewares (starlette's @app.middleware costs a task group per message,
    # which is most of the server's time when it streams a token per event). Added last is
    # outermost: the metrics count refused keys too.
    if cfg.api_key is not None:
        app.add_middleware(RequireApiKey, api_key=cfg.api_key)
    app.add_middleware(RecordMetrics, metrics=server.metrics)
    # Outermost, so an oversized body is refused before anything reads it.
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models() -> dict:
        return server.list_models()

    async def answer(decoding: Decoding, request: SamplingRequest, raw: Request, chat: bool):
        if not request.stream:
            return await unless_client_leaves(raw, server.response(decoding, chat))
        events = server.stream(decoding, chat=chat, include_usage=request.include_usage)
        # The first event is awaited before the response starts, so a request the engine
        # refuses still gets its HTTP error status; the rest streams as it is generated.
        first = await unless_client_leaves(raw, anext(events))
        return StreamingResponse(prepend(first, events), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest, raw: Request):
        return await answer(server.complete(request), request, raw, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatCompletionRequest, raw: Request):
        return await answer(server.chat(request), request, raw, chat=True)

    @app.post("/v1/plugins")
    async def load_plugin(request: PluginLoadRequest) -> dict:
        return await asyncio.to_thread(server.load_plugin, request.name, request.path)

    @app.delete("/v1/plugins/{name}")
    async def unload_plugin(name: str) -> dict:
        return server.unload_plugin(name)

    return app


async def unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, or, when the client disconnects first, ``work`` cancelled (its
    engine requests aborted) and a 499 that nobody reads but the metrics count."""
    task = asyncio.ensure_future(work)

    async def client_left() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(client_left())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise OpenAIError(499, "the client closed the request", code="client_closed_request")
    return task.result()


async def prepend(first: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    """``first``, then everything ``rest`` yields (closing ``rest`` if the client leaves)."""
    async with aclosing(rest):
        yield first
        async for event in rest:
            yield event


def serve(cfg: ServeConfig) -> int:
    """``latentrl serve``: run the server until interrupted."""
    import uvicorn

    app = create_app(cfg)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info")
    return 0


# ---- errors ---------------------------------------------------------------------------------


def _error_response(err: OpenAIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenAIError)
    async def openai_error(request: Request, err: OpenAIError) -> JSONResponse:
        return _error_response(err)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = err.errors()
        first = problems[0]
        if first["type"] == "json_invalid":
            message = f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}"
            return _error_response(OpenAIError(400, message.rstrip(": ")))
        fields = [_field_path(p["loc"]) for p in problems]
        message = "; ".join(
            f"{field or 'body'}: {p['msg']}" for field, p in zip(fields, problems, strict=True)
        )
        return _error_response(OpenAIError(400, message, param=fields[0] or None))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(err.detail), kind), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error")
        body = error_body(f"internal server error: {type(err).__name__}: {err}", "server_error")
        return JSONResponse(body, status_code=500)


def _field_path(loc: tuple) -> str:
    """``messages.0.role`` from pydantic's ``("body", "messages", 0, "role")``, leaving out
    the names pydantic gives union members (``prompt.str``, ``prompt.list[str]``)."""
    parts = [str(part) for part in loc[1:]]
    return ".".join(p for p in parts if p not in ("str", "int", "float", "bool") and "[" not in p)


class RequireApiKey:
    """Refuse ``/v1`` requests without ``Authorization: Bearer <api_key>`` (401)."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.api_key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            scheme, _, key = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not secrets.compare_digest(key, self.api_key):
                response = _error_response(OpenAIError(
                    401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                    code="invalid_api_key",
                ))  # fmt: skip
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RecordMetrics:
    """Count each HTTP request by route and status, and time it to its last byte."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless the app starts a response

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            route = scope.get("route")
            endpoint = route.path if route is not None else "unmatched"
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, by header or as they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than this server's limit of {self.max_bytes} bytes"
        response = JSONResponse(error_body(message), status_code=413)
        await response(scope, receive, send)
