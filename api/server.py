"""Run the HTTP API with uvicorn (``campaign-engine api``)."""

from __future__ import annotations

import uvicorn

from api.app import create_app
from common.settings import Settings

# Open event streams (the dashboard's live decisions) would otherwise hold a shutdown forever.
GRACEFUL_SHUTDOWN_SECONDS = 2
# Pollers (Prometheus every few seconds, the dashboard every tick) reuse their connections. With
# uvicorn's default of 5 s idle, a client polling every 5 s can send its request just as the server
# closes the connection, and sees "remote end closed connection without response".
KEEP_ALIVE_SECONDS = 75


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    config = uvicorn.Config(
        create_app(settings),
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_config=None,  # the engine's logging, configured by the caller
        access_log=settings.log_level == "DEBUG",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        server_header=False,
    )
    uvicorn.Server(config).run()
