"""The API's outer door, an ASGI middleware that answers before any route reads the request.

- A write (any method but GET, HEAD and OPTIONS) without the bearer token is refused with 401 before
  its body is read: an unauthenticated client cannot make the server receive a large body.
- A body over ``CE_API_MAX_BODY_BYTES`` is refused with 413: at once when its Content-Length says so,
  else as soon as the bytes streamed in pass the limit (a chunked body has no Content-Length).
- At most ``CE_API_MAX_STREAMS`` event streams are open at once; one more is refused with 503 and
  ``Retry-After``. A stream holds a connection and a Redis client for as long as its reader stays.

The routes' own dependencies check the token again (``api.auth``): this door only makes the refusal
come before the body, and covers a route added later without its dependency.
"""

from __future__ import annotations

import json
from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import write_refusal
from common.settings import Settings

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
STREAM_RETRY_SECONDS = 5


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit; FastAPI answers it as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over {limit:,} bytes (CE_API_MAX_BODY_BYTES)")


class Guard:
    def __init__(self, app: ASGIApp, settings: Settings, streams: Collection[str]) -> None:
        self.app = app
        self.settings = settings
        self.stream_paths = frozenset(streams)
        self.open_streams = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["method"] not in READ_METHODS:
            refusal = write_refusal(self.settings, headers.get("authorization"))
            if refusal is not None:
                await _answer(send, 401, refusal, {"www-authenticate": "Bearer"})
                return
        limit = self.settings.api_max_body_bytes
        length = _content_length(headers)
        if length is not None and length > limit:
            await _answer(send, 413, BodyTooLarge(limit).detail)
            return
        if scope["path"] in self.stream_paths:
            await self._stream(scope, _limited(receive, limit), send)
        else:
            await self._guarded(scope, _limited(receive, limit), send, limit)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except BodyTooLarge:
            # Read outside a route (FastAPI answers those inside one): answer here if nothing was sent.
            if started:
                raise
            await _answer(send, 413, BodyTooLarge(limit).detail)

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        cap = self.settings.api_max_streams
        if self.open_streams >= cap:
            detail = f"{cap} event streams are open, the most this server keeps (CE_API_MAX_STREAMS); try again later"
            await _answer(send, 503, detail, {"retry-after": str(STREAM_RETRY_SECONDS)})
            return
        # One event loop serves every request, so the count needs no lock.
        self.open_streams += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open_streams -= 1


def _limited(receive: Receive, limit: int) -> Receive:
    received = 0

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return counted


def _content_length(headers: Headers) -> int | None:
    raw = headers.get("content-length")
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


async def _answer(send: Send, status: int, detail: str, extra: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.encode(), value.encode()) for name, value in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
