"""Who may do what: writes need the bearer token; reads follow the ``api_reads`` setting.

``api_reads`` is ``loopback`` by default (reads from this machine are open, others need the
token), ``open`` (no token for reads) or ``token`` (every read needs it). The token travels only in
the ``Authorization`` header, never in a URL, where it would end up in logs and browser history.

A loopback read without the token must also name an allowed host in its ``Host`` header
(``CE_API_ALLOWED_HOSTS``, and always the localhost names and the address the API is bound to): a
web page whose name an attacker points at 127.0.0.1 (DNS rebinding) reaches the API from loopback,
but its requests still carry the attacker's host name.
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.context import ApiContext
from common.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <CE_API_TOKEN>`")

Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]

NO_TOKEN = "this request changes state: send the header 'Authorization: Bearer <CE_API_TOKEN>'"
WRONG_TOKEN = "the bearer token is not CE_API_TOKEN"


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Context = Annotated[ApiContext, Depends(context)]


def _matches(settings: Settings, token: str | None) -> bool:
    expected = settings.api_token.get_secret_value()
    return token is not None and secrets.compare_digest(token.encode(), expected.encode())


def write_refusal(settings: Settings, authorization: str | None) -> str | None:
    """Why a write with this ``Authorization`` header is refused; None when its token is right."""
    scheme, _, token = (authorization or "").partition(" ")
    if not authorization or scheme.lower() != "bearer" or not token.strip():
        return NO_TOKEN
    return None if _matches(settings, token.strip()) else WRONG_TOKEN


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def host_name(header: str | None) -> str | None:
    """The name in a ``Host`` header, without its port, lower case: ``[::1]:8000`` -> ``::1``."""
    if not header:
        return None
    header = header.strip().lower()
    if header.startswith("["):
        name, bracket, _ = header[1:].partition("]")
        return name if bracket else None
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def require_write(ctx: Context, credentials: Bearer) -> None:
    refusal = write_refusal(ctx.settings, f"Bearer {credentials.credentials}" if credentials else None)
    if refusal is not None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, refusal, headers={"WWW-Authenticate": "Bearer"})


def require_read(request: Request, ctx: Context, credentials: Bearer) -> None:
    settings = ctx.settings
    mode = settings.api_reads
    if credentials is not None and _matches(settings, credentials.credentials):
        return
    if mode == "open":
        return
    where = "" if mode == "token" else " from another machine"
    if mode == "loopback" and is_loopback(request.client.host if request.client else None):
        name = host_name(request.headers.get("host"))
        if name in settings.allowed_hosts:
            return
        where = f" naming the host {name!r}" if name else " without a Host header"
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        f"reads{where} need the token: send 'Authorization: Bearer <CE_API_TOKEN>' (see CE_API_READS"
        + (", CE_API_ALLOWED_HOSTS)" if mode == "loopback" else ")"),
        headers={"WWW-Authenticate": "Bearer"},
    )


Write = Depends(require_write)
Read = Depends(require_read)
