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
from api.metrics import registry
from api.trends import Trends
from common.settings import Settings, get_settings

STATIC = Path(__file__).resolve().parent / "static"

DESCRIPTION = """
Operate the campaign engine: campaigns, platforms, the platform feed, the bids placed, health and metrics.

**Writes** (POST, PATCH, DELETE) need `Authorization: Bearer <CE_API_TOKEN>`. **Reads** are open to
clients on this machine by default; `CE_API_READS=token` makes them need the token too, and
`CE_API_READS=open` opens them to everyone.

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

    @app.get("/", include_in_schema=False)
    def dashboard_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    return app
