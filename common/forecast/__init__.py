"""Forecasts of each platform's next figures and the volume cycle, pure; ``cache`` keeps a tick's in Redis."""
