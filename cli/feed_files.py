"""``campaign-engine feed post``: the platforms' figures from a CSV or JSON Lines file.

One figure per row (CSV, with a header) or line (JSON Lines): ``tick``, ``platform``, ``cpc``,
``cvr``, ``volume``, as ``POST /feed`` takes them. The post is all or nothing: every row is checked
first (a registered platform, figures in their domain, a tick that has ended or is under way, no
(platform, tick) twice in the file), and any refusal names its line and reason and publishes none.
"""

from __future__ import annotations

import csv
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cli.campaign_files import Format, read_rows
from common.errors import InvalidInput
from common.fleet.clock import Clock
from common.fleet.feed import FeedStore
from common.fleet.store import CampaignStore
from common.models import PlatformFigures

COLUMNS = ("tick", "platform", "cpc", "cvr", "volume")
# As POST /feed (api/feed.py): a figure is published after its tick ends; clocks differ a little.
MAX_TICKS_AHEAD = 2


def check_rows(
    rows: list[tuple[int, dict[str, Any] | InvalidInput]], known: set[str], newest: int
) -> dict[int, dict[str, PlatformFigures]]:
    """The figures of ``rows`` by tick; ``InvalidInput`` naming each refused row's line."""
    errors: list[tuple[str, str]] = []
    seen: dict[tuple[str, int], int] = {}
    by_tick: dict[int, dict[str, PlatformFigures]] = defaultdict(dict)
    for line, row in rows:
        if isinstance(row, InvalidInput):
            errors += [(f"line {line}: {field}", reason) for field, reason in row.errors]
            continue
        problems = [(c, "missing") for c in COLUMNS if c not in row]
        problems += [(c, f"unknown field; fields are {', '.join(COLUMNS)}") for c in row if c not in COLUMNS]
        tick = _tick(row.get("tick"), problems) if "tick" in row else None
        pid = str(row.get("platform", ""))
        if "platform" in row and pid not in known:
            problems.append(("platform", f"unknown platform {pid!r}; known: {', '.join(sorted(known)) or 'none'}"))
        if tick is not None and tick > newest + MAX_TICKS_AHEAD:
            problems.append(("tick", f"is {tick - newest} ticks past the tick under way ({newest})"))
        try:
            figures = PlatformFigures.model_validate({k: row[k] for k in ("cpc", "cvr", "volume") if k in row})
        except ValidationError as exc:
            problems += [(str(e["loc"][0]), e["msg"]) for e in exc.errors() if e["loc"][0] in row]
            figures = None
        if tick is not None and (pid, tick) in seen:
            problems.append(("tick", f"platform {pid!r} at tick {tick} is also on line {seen[(pid, tick)]}"))
        if problems:
            errors += [(f"line {line}: {field}", reason) for field, reason in problems]
            continue
        assert tick is not None and figures is not None
        seen[(pid, tick)] = line
        by_tick[tick][pid] = figures
    if errors:
        raise InvalidInput(errors)
    return dict(by_tick)


def _tick(value: Any, problems: list[tuple[str, str]]) -> int | None:
    try:
        tick = int(value)
        if isinstance(value, float | bool) or (isinstance(value, str) and not value.strip().isdigit()):
            raise ValueError
    except (TypeError, ValueError):
        problems.append(("tick", f"must be a whole number >= 0, got {value!r}"))
        return None
    return tick


def _read(path: Path, fmt: Format) -> list[tuple[int, dict[str, Any] | InvalidInput]]:
    if fmt == "jsonl":
        return read_rows(path, fmt)
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh, strict=True)
            rows: list[tuple[int, dict[str, Any] | InvalidInput]] = []
            if not reader.fieldnames:
                return [(1, InvalidInput.one("header", f"the file is empty; columns are {', '.join(COLUMNS)}"))]
            for row in reader:
                if None in row:
                    rows.append((reader.line_num, InvalidInput.one("row", "has more cells than the header")))
                    continue
                rows.append((reader.line_num, {k: v.strip() for k, v in row.items() if v is not None and v.strip()}))
            return rows
    except OSError as exc:
        raise InvalidInput.one("FILE", f"cannot read {path}: {exc.strerror}") from None
    except csv.Error as exc:
        raise InvalidInput.one("FILE", f"{path} is not valid CSV: {exc}") from None


def post_feed(store: CampaignStore, path: Path, fmt: Format, tick_seconds: float) -> tuple[int, int]:
    """Publish every figure of the file, or none: (figures written, figures published before and kept)."""
    rows = _read(path, fmt)
    epoch = Clock(store.r, tick_seconds).stored_epoch()
    newest = 0 if epoch is None else max(0, int((time.time() - epoch) // tick_seconds))
    by_tick = check_rows(rows, set(store.platforms()), newest)
    feed = FeedStore(store.r)
    written = sum(feed.publish(tick, figures) for tick, figures in sorted(by_tick.items()))
    return written, sum(len(f) for f in by_tick.values()) - written
