"""Each stored record round-trips: written by the production writer, read back by its one reader."""

from __future__ import annotations

import pytest
import redis

from common import keys
from common.ledger import Balance, Ledger, queue_balance
from tests.ledger_helpers import make_campaign


# --- the budget hash: {c:<id>}:budget ---------------------------------------------------------
@pytest.mark.parametrize("decoded", [True, False])
def test_a_balance_read_on_a_callers_pipeline_is_the_ledgers(redis_url: str, decoded: bool) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=decoded)
    ledger = Ledger(client)
    make_campaign(client, "c1")
    ledger.open("c1", 1000)
    ledger.reserve("c1", 1, {"search": 300})
    ledger.settle("c1", 1, {"search": 120})
    ledger.reserve("c1", 2, {"search": 50})
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.campaign("c1"))  # a caller's other reads share the round trip
    queue_balance(pipe, "c1")
    queue_balance(pipe, "never-opened")
    _, row, missing = pipe.execute()
    assert Balance.from_row(row) == ledger.balance("c1") == Balance(1000, 830, 50, 120)
    assert Balance.from_row(missing) is None
    client.close()
