"""Who may do what: writes need the bearer token; reads follow the ``api_reads`` setting.

``api_reads`` is ``loopback`` by default (reads from this machine are open, others need the
token), ``open`` (no token for reads) or ``token`` (every read needs it). A read may also carry the
token as ``?token=``, for clients that cannot set headers such as a browser's ``EventSource``.
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from api.context import ApiContext

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <CE_API_TOKEN>`")
_query_token = APIKeyQuery(name="token", auto_error=False, description="The token, for reads only.")

Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
QueryToken = Annotated[str | None, Depends(_query_token)]


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Context = Annotated[ApiContext, Depends(context)]


def _matches(ctx: ApiContext, token: str | None) -> bool:
    expected = ctx.settings.api_token.get_secret_value()
    return token is not None and secrets.compare_digest(token.encode(), expected.encode())


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def require_write(ctx: Context, credentials: Bearer) -> None:
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "this request changes state: send the header 'Authorization: Bearer <CE_API_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not _matches(ctx, credentials.credentials):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "the bearer token is not CE_API_TOKEN", headers={"WWW-Authenticate": "Bearer"}
        )


def require_read(request: Request, ctx: Context, credentials: Bearer, token: QueryToken) -> None:
    mode = ctx.settings.api_reads
    if mode == "open" or (mode == "loopback" and is_loopback(request.client.host if request.client else None)):
        return
    if _matches(ctx, credentials.credentials if credentials else None) or _matches(ctx, token):
        return
    where = "" if mode == "token" else " from another machine"
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        f"reads{where} need the token: send 'Authorization: Bearer <CE_API_TOKEN>' (see CE_API_READS)",
        headers={"WWW-Authenticate": "Bearer"},
    )


Write = Depends(require_write)
Read = Depends(require_read)
