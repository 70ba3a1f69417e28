"""HTTP layer of `bonesoup serve`: an OpenAI-compatible API on the standard library's HTTP server.

Endpoints:
    POST /v1/chat/completions   chat messages through the tokenizer's chat template
    POST /v1/completions        a raw text prompt
    GET  /v1/models             the one served model id
    GET  /health                status, methods, objectives and queue length

`ThreadingHTTPServer` runs one thread per connection. At most `max_concurrency` requests are
admitted at once (queued or generating), the others get 503 at once. Bodies above
`max_body_bytes` get 413 without being read. Every response carries an X-Request-Id header, and
every error the server handles is logged with that id.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bonesoup.serve.engine import Job, SoupEngine
from bonesoup.serve.protocol import (
    ApiError,
    chunk_body,
    completion_body,
    parse_request,
    usage_chunk,
)
from bonesoup.serve.tracker import Event

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONCURRENCY = 16
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_REQUEST_TIMEOUT = 600.0  # seconds a request may wait for its queue turn and generation
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_ROUTES = {"/v1/chat/completions": "chat", "/v1/completions": "completion"}


class SoupServer(ThreadingHTTPServer):
    """The HTTP server: owns the engine and the admission limits."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        engine: SoupEngine,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        self.engine = engine
        self.max_concurrency = int(max_concurrency)
        self.max_body_bytes = int(max_body_bytes)
        self.request_timeout = float(request_timeout)
        self.slots = threading.BoundedSemaphore(self.max_concurrency)
        self.created = int(time.time())
        super().__init__(address, SoupRequestHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class SoupRequestHandler(BaseHTTPRequestHandler):
    """Routes requests; one instance per connection, called on the connection's thread."""

    protocol_version = "HTTP/1.1"
    server_version = "bonesoup"
    timeout = 60  # seconds a connection may stay idle or take to send its request
    server: SoupServer

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    # Responses -----------------------------------------------------------------------------
    def _send_json(
        self,
        status: int,
        body: dict[str, Any],
        request_id: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Request-Id", request_id)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, error: ApiError, request_id: str, close: bool = False) -> None:
        logger.warning("%s: %d %s", request_id, error.status, error.message)
        headers = {"Retry-After": "1"} if error.status == 503 else {}
        if error.status == 405:
            headers["Allow"] = "POST"
        if close:
            headers["Connection"] = "close"
            self.close_connection = True
        self._send_json(error.status, error.body(), request_id, headers)

    # GET -----------------------------------------------------------------------------------
    def do_GET(self) -> None:
        request_id = _new_request_id()
        engine = self.server.engine
        path = self.path.split("?", 1)[0]
        model = {
            "id": engine.served_id,
            "object": "model",
            "created": self.server.created,
            "owned_by": "bonesoup",
        }
        if path == "/health":
            body = {
                "status": "ok",
                "model": engine.served_id,
                "methods": list(engine.methods),
                "objectives": list(engine.objectives),
                "seed": engine.seed,
                "queued": engine.queued,
                **engine.stats,
            }
            self._send_json(200, body, request_id)
        elif path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [model]}, request_id)
        elif path == f"/v1/models/{engine.served_id}":
            self._send_json(200, model, request_id)
        elif path in _ROUTES:
            allowed = ApiError(f"{path} accepts POST only", None, 405, code="method_not_allowed")
            self._send_error(allowed, request_id)
        else:
            self._send_error(_not_found(path), request_id)

    # POST ----------------------------------------------------------------------------------
    def do_POST(self) -> None:
        request_id = _new_request_id()
        path = self.path.split("?", 1)[0]
        kind = _ROUTES.get(path)
        try:
            if kind is None:
                self._discard_body()
                raise _not_found(path)
            body = self._read_json()
        except ApiError as error:
            self._send_error(error, request_id, close=error.status in (408, 411, 413))
            return
        if not self.server.slots.acquire(blocking=False):
            overloaded = ApiError(
                f"the server is at its limit of {self.server.max_concurrency} concurrent "
                "requests; retry later",
                None,
                503,
                "server_error",
                "server_overloaded",
            )
            self._send_error(overloaded, request_id)
            return
        try:
            self._complete(kind, body, request_id)
        finally:
            self.server.slots.release()

    def _discard_body(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= self.server.max_body_bytes:
            self.rfile.read(int(length))
        else:
            self.close_connection = True

    def _read_json(self) -> Any:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise ApiError(
                "chunked request bodies are not supported; send Content-Length", None, 411
            )
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ApiError("the request needs a Content-Length header", None, 411)
        size = int(length)
        if size > self.server.max_body_bytes:
            raise ApiError(
                f"the request body is {size} bytes; this server accepts at most "
                f"{self.server.max_body_bytes} bytes",
                None,
                413,
                code="request_too_large",
            )
        try:
            raw = self.rfile.read(size)
        except TimeoutError:
            raise ApiError(
                f"timed out after {self.timeout} s reading a {size}-byte body; send the whole "
                "body that Content-Length announces",
                None,
                408,
            ) from None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ApiError(f"the request body is not valid JSON: {error}", None) from None
        except RecursionError:
            raise ApiError("the request body nests JSON too deeply", None) from None

    def _complete(self, kind: str, body: Any, request_id: str) -> None:
        engine = self.server.engine
        try:
            request = parse_request(
                body, kind, engine.served_id, len(engine.objectives), engine.methods, engine.limits
            )
            prompt_ids = engine.prompt_ids(request)
            job = engine.submit(request_id, request, prompt_ids)
        except ApiError as error:
            self._send_error(error, request_id)
            return
        logger.info(
            "%s: %s, method %s, preference %s, %d prompt tokens, max_tokens %d%s",
            request_id,
            kind,
            request.method,
            list(request.preference),
            len(prompt_ids),
            request.sampling.max_tokens,
            ", stream" if request.stream else "",
        )
        if request.stream:
            self._stream(kind, job, request_id, request.include_usage)
        else:
            self._respond(kind, job, request_id)

    def _next_event(self, job: Job, deadline: float):
        try:
            return job.events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            job.cancelled.set()
            raise ApiError(
                f"the request timed out after {self.server.request_timeout:g} s in the queue "
                "and generation; retry later or lower max_tokens",
                None,
                504,
                "server_error",
            ) from None

    def _respond(self, kind: str, job: Job, request_id: str) -> None:
        # NOTE: a client that disconnects while waiting here is not detected, so its generation
        # runs to max_tokens. Streaming requests stop at the next token instead.
        deadline = time.monotonic() + self.server.request_timeout
        parts: list[str] = []
        try:
            while True:
                event = self._next_event(job, deadline)
                if event.kind == "error":
                    raise event.error
                if event.kind == "delta":
                    parts.append(event.text)
                    continue
                break
        except ApiError as error:
            self._send_error(error, request_id)
            return
        body = completion_body(
            kind,
            _response_id(kind, request_id),
            self.server.engine.served_id,
            "".join(parts),
            event.finish_reason,
            len(job.prompt_ids),
            event.completion_tokens,
            job.soup,
        )
        self._send_json(200, body, request_id)

    def _stream(self, kind: str, job: Job, request_id: str, include_usage: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.send_header("X-Request-Id", request_id)
        self.end_headers()
        self.close_connection = True

        response_id = _response_id(kind, request_id)
        model = self.server.engine.served_id
        created = int(time.time())
        deadline = time.monotonic() + self.server.request_timeout
        try:
            if kind == "chat":
                first = {"role": "assistant", "content": ""}
                self._write_event(chunk_body(kind, response_id, model, created, delta=first))
            while True:
                try:
                    event = self._next_event(job, deadline)
                except ApiError as error:
                    event = Event("error", error=error)
                if event.kind == "error":
                    logger.warning(
                        "%s: %d %s (while streaming)",
                        request_id,
                        event.error.status,
                        event.error.message,
                    )
                    self._write_event(event.error.body())
                    break
                if event.kind == "delta":
                    chunk = chunk_body(
                        kind,
                        response_id,
                        model,
                        created,
                        delta={"content": event.text},
                        text=event.text,
                    )
                    self._write_event(chunk)
                    continue
                self._write_event(
                    chunk_body(kind, response_id, model, created, finish_reason=event.finish_reason)
                )
                if include_usage:
                    self._write_event(
                        usage_chunk(
                            kind,
                            response_id,
                            model,
                            created,
                            len(job.prompt_ids),
                            event.completion_tokens,
                        )
                    )
                break

            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            job.cancelled.set()
            logger.info("%s: client closed the stream; generation for it stops", request_id)

    def _write_event(self, body: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(body).encode() + b"\n\n")
        self.wfile.flush()


def _new_request_id() -> str:
    return f"req-{uuid.uuid4().hex[:16]}"


def _response_id(kind: str, request_id: str) -> str:
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    return f"{prefix}-{request_id.removeprefix('req-')}"


def _not_found(path: str) -> ApiError:
    return ApiError(
        f"no route for {path!r}; this server has POST /v1/chat/completions, POST /v1/completions, "
        "GET /v1/models and GET /health",
        None,
        404,
        code="not_found",
    )


def create_server(
    engine: SoupEngine,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
) -> SoupServer:
    """Bind the server (port 0 picks a free port) and start the engine's scheduler."""
    if host not in LOOPBACK_HOSTS:
        logger.warning(
            "binding to %s: the API has no authentication, so anyone who reaches this address "
            "can use the model",
            host,
        )
    server = SoupServer((host, port), engine, max_concurrency, max_body_bytes, request_timeout)
    engine.start()
    return server


def serve(server: SoupServer) -> None:
    """Serve until interrupted, then stop the engine and close the socket."""
    logger.info("serving %s at %s", server.engine.served_id, server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("interrupted")
    finally:
        server.server_close()
        server.engine.stop()
        logger.info("stopped serving %s", server.engine.served_id)
