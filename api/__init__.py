"""The HTTP API and dashboard (``campaign-engine api``): FastAPI over the engine's ``common`` layer."""
