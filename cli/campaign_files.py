"""``campaign-engine campaigns import|export``: campaigns in CSV or JSON Lines files.

A file holds one campaign per row (CSV, with a header) or per line (JSON Lines), with the fields of
``POST /campaigns``: the flight in ticks (``start_tick``, ``end_tick``) or as ISO-8601 date-times
with an offset (``start``, ``end``). In CSV, ``platforms`` is ``id=multiplier`` pairs joined by
``;`` (``search=0.02;social=0.05``) and an empty cell is a field left out.

An import is all or nothing: every row is checked first, and any refusal names its line and reason
and imports none. Export writes the same format, so that its file imports again as it was.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from common.errors import CampaignEngineError, InvalidInput
from common.fleet.clock import Clock
from common.fleet.store import CampaignStore
from common.flights import FleetClock, blame_times, has_times, iso, parse_campaign, planned, time_of
from common.models import LEGACY_GOAL_FIELDS, Campaign, CampaignSpec, CampaignStatus

Format = Literal["csv", "jsonl"]
EXTENSIONS: dict[str, Format] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
COLUMNS = (
    "id", "budget", "value_per_conversion", "platforms", "start", "end", "start_tick", "end_tick",
    "max_bid", "target_cpa", "reach_goal", "conversion_target",
)  # fmt: skip


def file_format(path: Path, given: str | None) -> Format:
    """``given``, else the one the file's extension names."""
    if given is not None:
        if given not in ("csv", "jsonl"):
            raise InvalidInput.one("--format", f"must be csv or jsonl, not {given!r}")
        return given  # type: ignore[return-value]
    found = EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise InvalidInput.one("--format", f"cannot tell from the extension of {path.name}: give csv or jsonl")
    return found


# --- reading ----------------------------------------------------------------------------------------
def _platforms_cell(cell: str) -> dict[str, str]:
    pairs = {}
    for part in filter(None, (p.strip() for p in cell.split(";"))):
        pid, sep, multiplier = part.partition("=")
        if not sep or not pid.strip():
            raise ValueError(f"must be id=multiplier pairs joined by ';' (search=0.02;social=0.05), got {part!r}")
        pairs[pid.strip()] = multiplier.strip()
    return pairs


def _csv_rows(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | InvalidInput]]:
    reader = csv.DictReader(lines, strict=True)
    unknown = [c for c in reader.fieldnames or () if c not in COLUMNS]
    if not reader.fieldnames or unknown:
        reason = f"unknown column {unknown[0]!r}" if unknown else "the file is empty"
        yield 1, InvalidInput.one("header", f"{reason}; columns are {', '.join(COLUMNS)}")
        return
    for row in reader:
        data: dict[str, Any] = {k: v.strip() for k, v in row.items() if k is not None and v is not None and v.strip()}
        if None in row:
            yield reader.line_num, InvalidInput.one("row", f"has more cells than the header's {len(COLUMNS)}")
            continue
        if "platforms" in data:
            try:
                data["platforms"] = _platforms_cell(data["platforms"])
            except ValueError as exc:
                yield reader.line_num, InvalidInput.one("platforms", str(exc))
                continue
        yield reader.line_num, data


def _jsonl_rows(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any] | InvalidInput]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, InvalidInput.one("line", f"is not JSON: {exc.msg} (column {exc.colno})")
            continue
        if not isinstance(data, dict):
            yield number, InvalidInput.one("line", "must be a JSON object")
            continue
        yield number, data


def read_rows(path: Path, fmt: Format) -> list[tuple[int, dict[str, Any] | InvalidInput]]:
    """Each row's line number and its fields, or the reason it cannot be read."""
    try:
        with open(path, newline="" if fmt == "csv" else None) as fh:
            return list(_csv_rows(fh) if fmt == "csv" else _jsonl_rows(fh))
    except OSError as exc:
        raise InvalidInput.one("FILE", f"cannot read {path}: {exc.strerror}") from None
    except csv.Error as exc:
        raise InvalidInput.one("FILE", f"{path} is not valid CSV: {exc}") from None


# --- import -----------------------------------------------------------------------------------------
Rows = list[tuple[int, dict[str, Any] | InvalidInput]]


def check_rows(store: CampaignStore, clock: FleetClock, rows: Rows) -> list[CampaignSpec]:
    """The campaigns of ``rows``, every one checked; ``InvalidInput`` with each refused row's line."""
    errors: list[tuple[str, str]] = []
    specs: list[tuple[int, CampaignSpec]] = []
    first_line: dict[str, int] = {}
    for line, row in rows:
        try:
            if isinstance(row, InvalidInput):
                raise row
            spec = parse_campaign(row, clock)
            try:
                store.check_new(spec)
            except InvalidInput as exc:
                raise blame_times(exc, row) from None
        except InvalidInput as exc:
            errors += [(f"line {line}: {field}", reason) for field, reason in exc.errors]
            continue
        if spec.id in first_line:
            errors.append((f"line {line}: id", f"{spec.id!r} is also on line {first_line[spec.id]}"))
            continue
        first_line[spec.id] = line
        specs.append((line, spec))
    existing = store.get_many(s.id for _, s in specs)
    errors += [(f"line {line}: id", f"campaign {s.id!r} already exists") for line, s in specs if s.id in existing]
    if errors:
        errors.sort(key=lambda e: int(e[0].split()[1].rstrip(":")) if e[0].startswith("line ") else 0)
        raise InvalidInput(errors)
    return [s for _, s in specs]


def import_campaigns(store: CampaignStore, clock: Clock, path: Path, fmt: Format) -> list[str]:
    """Create every campaign of the file, or none: the ids created."""
    rows = read_rows(path, fmt)
    plan = planned(clock)
    specs = check_rows(store, plan, rows)
    timed = any(isinstance(row, dict) and has_times(row) for _, row in rows)
    if timed and clock.epoch() != plan.at:
        specs = check_rows(store, clock, rows)  # the fleet's clock started meanwhile, on another epoch
    created: list[str] = []
    try:
        for spec in specs:
            store.create(spec)
            created.append(spec.id)
    except CampaignEngineError:
        # A campaign created by someone else meanwhile, or Redis gone: take back what this import made.
        for cid in created:
            store.delete(cid)
        raise
    return created


# --- export -----------------------------------------------------------------------------------------
def campaign_row(campaign: Campaign, epoch: float | None, tick_seconds: float) -> dict[str, Any]:
    """A campaign's fields as a row; its flight as date-times when the fleet's clock has started."""
    row: dict[str, Any] = campaign.spec.model_dump(exclude_none=True)
    if epoch is not None:
        row["start"] = iso(time_of(row.pop("start_tick"), epoch, tick_seconds))
        if "end_tick" in row:
            row["end"] = iso(time_of(row.pop("end_tick"), epoch, tick_seconds))
    return row


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row for the CSV columns: the goal in the column of its metric (reach_goal for clicks,
    conversion_target for conversions), which import reads back as the goal."""
    goal = row.pop("goal", None)
    if goal is not None:
        column = next(name for name, metric in LEGACY_GOAL_FIELDS.items() if metric.value == goal["metric"])
        row[column] = goal["target"]
    return row


def _csv_cell(value: Any) -> str:
    if isinstance(value, dict):
        return ";".join(f"{k}={v!r}" for k, v in value.items())
    return repr(value) if isinstance(value, float) else str(value)


def export_campaigns(
    store: CampaignStore, clock: Clock, path: Path, fmt: Format, status: CampaignStatus | None, in_ticks: bool
) -> int:
    """Write the campaigns (of ``status``, or all) in id order; returns how many."""
    epoch = None if in_ticks else clock.stored_epoch()
    rows = [campaign_row(c, epoch, clock.tick_seconds) for c in sorted(store.list(status), key=lambda c: c.id)]
    with open(path, "w", newline="" if fmt == "csv" else None) as fh:
        if fmt == "csv":
            writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: _csv_cell(v) for k, v in _csv_row(row).items()} for row in rows)
        else:
            fh.writelines(json.dumps(row) + "\n" for row in rows)
    return len(rows)
