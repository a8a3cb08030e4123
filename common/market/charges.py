"""What the simulated platforms charged, written down where a checker can read it afterwards.

A real platform keeps its own books; the simulated one keeps none, so nothing could show that the
ledger recorded every cost a bid incurred. ``ChargeLog`` wraps a platform adapter and appends one
line per bid that cost anything to a file of the process's own (``charges-<host>-<pid>.jsonl``):
the campaign, the tick, the platform and the micro-units billed. The line is written and fsynced
before the outcomes are returned, so a charge the engine could settle is never missing from the
file, whatever happens to the process afterwards.

Switched on by ``CE_PLATFORM_CHARGE_LOG`` (a directory); the chaos driver reads it with
``read_charges``. It costs an fsync per evaluation, so it is meant for tests, not for production.
``CE_PLATFORM_REPLY_MS`` makes the answer come that long after the charge, as a real platform's
reply crosses the network: the window in which a crash leaves a charge the ledger never heard of.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.market.platforms import Order, PlatformAdapter
from common.models import Outcome
from common.money import to_micros, to_micros_ceil

Key = tuple[str, int, str]  # campaign, tick, platform


def billed_micros(order: Order, outcome: Outcome) -> int:
    """What a platform bills for one bid: its cost rounded up to the micro-unit, never above the cap.

    The evaluation settles the same figure (``min(ceil(cost), grant)``); the cap is a whole number of
    micro-units (the grant), so ``to_micros`` recovers it exactly.
    """
    return min(to_micros_ceil(outcome.cost), to_micros(order.bid.spend_cap))


@dataclass(frozen=True, slots=True)
class Charge:
    campaign: str
    tick: int
    platform: str
    micros: int
    source: str  # the file it was read from: which host and process charged

    @property
    def key(self) -> Key:
        return self.campaign, self.tick, self.platform


class ChargeLog:
    """A ``PlatformAdapter`` that records what the wrapped one charged, then answers as it did."""

    def __init__(self, inner: PlatformAdapter, directory: Path, *, reply_ms: int = 0, host: str | None = None) -> None:
        self.inner = inner
        self.directory = directory
        self.reply_ms = reply_ms
        self.host = host or socket.gethostname()
        self._fd: int | None = None
        self._pid: int | None = None

    def submit(self, tick: int, orders: Sequence[Order]) -> Sequence[Outcome | None]:
        outcomes = self.inner.submit(tick, orders)
        lines = [
            json.dumps({"campaign": o.bid.campaign, "tick": tick, "platform": o.bid.platform, "micros": micros})
            for o, out in zip(orders, outcomes, strict=True)
            if out is not None and (micros := billed_micros(o, out)) > 0
        ]
        if lines:
            fd = self._file()
            os.write(fd, ("\n".join(lines) + "\n").encode())
            os.fsync(fd)
            if self.reply_ms:
                # The platform has charged; its answer is still on its way.
                time.sleep(self.reply_ms / 1000)
        return outcomes

    def _file(self) -> int:
        # Opened lazily and again after a fork: each pool process writes a file of its own.
        if self._fd is None or self._pid != os.getpid():
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"charges-{self.host}-{os.getpid()}.jsonl"
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._pid = os.getpid()
        return self._fd


def read_charges(directory: Path) -> list[Charge]:
    """Every charge recorded under ``directory`` (recursively); a torn last line (a kill mid-write) is skipped.

    A torn line was never followed by the fsync, so its outcomes never reached the engine.
    """
    return list(_charges(directory))


def _charges(directory: Path) -> Iterator[Charge]:
    for path in sorted(directory.rglob("charges-*.jsonl")):
        source = str(path.relative_to(directory))
        for line in path.read_text().splitlines():
            try:
                raw = json.loads(line)
            except json.JSONDecodeError:
                continue
            yield Charge(raw["campaign"], int(raw["tick"]), raw["platform"], int(raw["micros"]), source)
