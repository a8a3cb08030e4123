"""Finished and deleted campaigns leave a compact record in ``ce:archive`` and nothing else.

A deleted campaign is archived at once. A finished one stays in full for ``CE_ARCHIVE_AFTER_TICKS``
(its reservations settled, its figures readable through the API), then the upkeep
(``common.fleet.maintenance``) archives it: one stream entry with its final balances, its spec and
its status, in a stream capped near ``CE_ARCHIVE_MAXLEN`` entries, and every key of the campaign
removed. A finished campaign that still holds a reservation waits for the sweeper to close it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from common import keys
from common.ledger import Balance
from common.redis_conn import Client, Fields

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ArchivedCampaign:
    """One entry of ``ce:archive``: what is left of a campaign once its keys are gone."""

    campaign: str
    status: str  # finished or deleted
    tick: int  # the newest tick when it was archived
    budget: int
    remaining: int
    reserved: int
    spent: int
    overdraft: int
    spec: str  # JSON, as the store kept it

    def to_fields(self) -> Fields:
        return {name: str(value) for name, value in asdict(self).items()}

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> ArchivedCampaign:
        return cls(
            fields["campaign"], fields["status"], int(fields["tick"]), int(fields["budget"]),
            int(fields["remaining"]), int(fields["reserved"]), int(fields["spent"]), int(fields["overdraft"]),
            fields["spec"],
        )  # fmt: skip


def current_tick(client: Client) -> int:
    return int(client.get(keys.LAST_TICK) or 0)  # type: ignore[arg-type]


def record(client: Client, campaign_id: str, status: str, maxlen: int) -> ArchivedCampaign:
    """Append the campaign's archive entry (its balances and spec as they are now); returns it."""
    pipe = client.pipeline(transaction=False)
    pipe.hmget(keys.budget(campaign_id), list(Balance.FIELDS))
    pipe.hget(keys.campaign(campaign_id), "spec")
    pipe.get(keys.LAST_TICK)
    row, spec, tick = pipe.execute()
    balance = Balance.from_row(row) or Balance(0, 0, 0, 0)
    entry = ArchivedCampaign(
        campaign_id, status, int(tick or 0), balance.budget, balance.remaining, balance.reserved, balance.spent,
        balance.overdraft, spec or "",
    )  # fmt: skip
    client.xadd(keys.ARCHIVE, entry.to_fields(), maxlen=maxlen, approximate=True)
    log.info("campaign archived", extra={"campaign": campaign_id, "status": status, "spent": balance.spent})
    return entry


def due(client: Client, tick: int, after_ticks: int, limit: int = 500) -> list[str]:
    """Finished campaigns whose retention is over at ``tick``, oldest first."""
    found: list[str] = client.zrangebyscore(keys.ENDED, "-inf", tick - after_ticks, start=0, num=limit)  # type: ignore[assignment]
    return found
