"""Container health checks that need nothing beyond the image's Python (no curl in a slim image).

python /app/healthcheck.py http URL   # healthy when URL answers 2xx
python /app/healthcheck.py ticks      # healthy when the fleet's last tick is recent (beat is firing)
"""

from __future__ import annotations

import sys
import time
import urllib.request


def http(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=3) as response:
        return 200 <= int(response.status) < 300


def ticks() -> bool:
    from common import keys
    from common.redis_conn import connect
    from common.settings import get_settings

    settings = get_settings()
    client = connect(settings.state_url)
    clock: list[str | None] = client.hmget(keys.CLOCK, ["epoch", "tick_seconds"])  # type: ignore[assignment]
    last: str | None = client.get(keys.LAST_TICK)  # type: ignore[assignment]
    if clock[0] is None or clock[1] is None or last is None:
        return True  # not ticked yet: starting up (the start period of the check covers it)
    tick_seconds = float(clock[1])
    age = time.time() - (float(clock[0]) + int(last) * tick_seconds)
    return age < max(10.0, 5 * tick_seconds)


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["http"] and len(argv) == 2:
            return 0 if http(argv[1]) else 1
        if argv == ["ticks"]:
            return 0 if ticks() else 1
    except Exception as exc:  # any failure is simply "unhealthy", with the reason on stderr
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
