"""Run the HTTP API with uvicorn (``campaign-engine api``)."""

from __future__ import annotations

import uvicorn

from api.app import create_app
from common.settings import Settings

# Open event streams (the dashboard's live decisions) would otherwise hold a shutdown forever.
GRACEFUL_SHUTDOWN_SECONDS = 2


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    config = uvicorn.Config(
        create_app(settings),
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_config=None,  # the engine's logging, configured by the caller
        access_log=settings.log_level == "DEBUG",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        server_header=False,
    )
    uvicorn.Server(config).run()
