"""Errors as HTTP answers: the field and the reason, never a stack trace.

Every refusal has the same shape, ``{"detail": "...", "errors": [{"field": ..., "reason": ...}]}``,
whether FastAPI refused the request (bad JSON, a wrong type, NaN) or the engine did.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisClusterException, RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.errors import CampaignEngineError, Conflict, InvalidInput, LedgerError, NotFound, StoreUnavailable
from common.redis_conn import translated_errors

log = logging.getLogger(__name__)

_LOCATIONS = {"body", "query", "path", "header", "cookie"}


def error_response(status: int, detail: str, errors: list[tuple[str, str]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail}
    if errors:
        body["errors"] = [{"field": field, "reason": reason} for field, reason in errors]
    return JSONResponse(body, status_code=status)


def invalid(errors: list[tuple[str, str]]) -> JSONResponse:
    return error_response(422, "; ".join(f"{field}: {reason}" for field, reason in errors), errors)


def request_errors(exc: RequestValidationError) -> list[tuple[str, str]]:
    """Field and reason of each problem FastAPI found, without its location prefix or the input."""
    found = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        reason = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            found.append(("body", f"invalid JSON ({err.get('ctx', {}).get('error', 'bad syntax')})"))
            continue
        if loc == ["body"] and isinstance(err.get("input"), bytes):
            found.append(("body", "must be a JSON object sent with Content-Type: application/json"))
            continue
        if len(loc) > 1 and loc[0] in _LOCATIONS:
            loc = loc[1:]
        if loc in (["body"], []):
            # A check across fields names the field it blames as "field: reason".
            field, sep, rest = reason.partition(": ")
            found.append((field, rest) if sep and field.isidentifier() else ("body", reason))
        else:
            found.append((".".join(loc), reason))
    return found


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return invalid(request_errors(exc))


async def _http(request: Request, exc: Exception) -> Response:
    """FastAPI's own refusals, in the same shape; a body it could not decode is bad input like any other."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError | ValueError):
        return invalid([("body", "must be JSON encoded as UTF-8")])
    return await http_exception_handler(request, exc)


async def _engine(request: Request, exc: Exception) -> JSONResponse:
    """Map the engine's exception tree; the order matters, some errors are two things at once."""
    if isinstance(exc, InvalidInput):
        return invalid(exc.errors)
    if isinstance(exc, NotFound):
        return error_response(404, str(exc))
    if isinstance(exc, Conflict):
        return error_response(409, str(exc), exc.errors)
    if isinstance(exc, LedgerError):
        return error_response(409, str(exc))
    if isinstance(exc, StoreUnavailable):
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return error_response(503, "the state store is unavailable; try again shortly")
    return error_response(400, str(exc))


async def _redis(request: Request, exc: Exception) -> JSONResponse:
    """A Redis error raised by a read outside the engine's own boundaries, translated as they are."""
    try:
        with translated_errors(f"{request.method} {request.url.path}"):
            raise exc
    except StoreUnavailable as unavailable:
        return await _engine(request, unavailable)
    except Exception:  # not a failure of the store: a bug, or damaged data
        return await _unexpected(request, exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error; the server log has the details")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(CampaignEngineError, _engine)
    app.add_exception_handler(RedisError, _redis)
    app.add_exception_handler(RedisClusterException, _redis)
    app.add_exception_handler(Exception, _unexpected)
