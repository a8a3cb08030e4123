"""The FastAPI application: routes, error handlers, the dashboard's files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from api import campaigns, decisions, errors, feed, platforms, system
from api.context import ApiContext
from api.guard import Guard
from api.metrics import registry
from api.trends import Trends
from common.settings import Settings, get_settings

STATIC = Path(__file__).resolve().parent / "static"

DESCRIPTION = """
Operate the campaign engine: campaigns, platforms, the platform feed, the bids placed, health and metrics.

**Writes** (POST, PATCH, DELETE) need `Authorization: Bearer <CE_API_TOKEN>`, checked before the body
is read. **Reads** are open to clients on this machine by default (naming a host of
`CE_API_ALLOWED_HOSTS` or localhost in `Host`); `CE_API_READS=token` makes them need the token too,
and `CE_API_READS=open` opens them to everyone. The token is never accepted in a URL.

Bodies over `CE_API_MAX_BODY_BYTES` are refused with 413; more than `CE_API_MAX_STREAMS` event
streams at once with 503.

Refusals answer `{"detail": "...", "errors": [{"field": "...", "reason": "..."}]}`; amounts are in
currency units, with the ledger's exact integer micro-units alongside (`*_micros`).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    ctx = ApiContext(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        ctx.close()

    # The documentation pages load Swagger UI and ReDoc from the installed package, not from a CDN.
    app = FastAPIOffline(
        title="campaign-engine",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "campaigns", "description": "Campaigns, their budgets (through the ledger) and outcomes."},
            {"name": "platforms", "description": "The ad platforms campaigns may list and the feed may publish."},
            {"name": "feed", "description": "Platform figures (CPC, CVR, volume) published after each tick."},
            {"name": "decisions", "description": "Bids placed, from the decision stream."},
            {"name": "system", "description": "Health and Prometheus metrics."},
            {"name": "dashboard", "description": "The JSON the dashboard at `/` draws."},
        ],
    )
    app.state.ctx = ctx
    app.state.registry = registry(ctx)
    app.state.trends = Trends()
    errors.install(app)
    for router in (campaigns.router, platforms.router, feed.router, decisions.router, system.router, system.dashboard):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(Guard, settings=settings, streams=event_streams(app))

    @app.get("/", include_in_schema=False)
    def dashboard_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    return app


def event_streams(app: FastAPI) -> set[str]:
    """Paths whose answer is a stream of server-sent events, as the OpenAPI document declares them."""
    return {
        path
        for path, operations in app.openapi()["paths"].items()
        for operation in operations.values()
        if "text/event-stream" in operation.get("responses", {}).get("200", {}).get("content", {})
    }
