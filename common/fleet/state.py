"""A campaign's engine state, the hash ``{c:<id>}:state``: its outcomes so far and its pacing.

An evaluation writes it with one script per campaign (``lua/record_state.lua``, ``queue_record``):
the outcomes are increments (an overlapping evaluation of another tick never loses the other's),
the last decision's fields are set outright unless a later tick's are there already. The script
applies a (campaign, tick) once: it runs only for the delivery holding the evaluation's mark and
marks it recorded, so a client retry of the same write adds nothing twice. Evaluations read it back
to decide; the API shows it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common import keys
from common.engine import Decision, PacingState
from common.fleet import scripts
from common.redis_conn import Client, Fields

OUTCOMES = ("spend", "clicks", "conversions", "value")
# What lua/record_state.lua appends to the evaluation's mark once the delivery holding it has recorded.
RECORDED = ":recorded"


@dataclass(frozen=True, slots=True)
class StateRecord:
    """What the hash holds; a field never written reads as its default (a campaign not yet evaluated).

    ``lam`` and ``planned`` are the last decision's multiplier and planned spend, ``reason`` why it
    bid nothing (None when it bid), ``last_tick`` the tick it was made for.
    """

    spend: float = 0.0
    clicks: float = 0.0
    conversions: float = 0.0
    value: float = 0.0
    pacing: PacingState = field(default_factory=PacingState)
    lam: float | None = None
    planned: float | None = None
    last_tick: int | None = None
    reason: str | None = None
    goal: GoalRecord | None = None

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> StateRecord:
        """Parse an ``HGETALL`` of the hash."""
        pacing = raw.get("pacing")
        return cls(
            spend=float(raw.get("spend", 0.0)),
            clicks=float(raw.get("clicks", 0.0)),
            conversions=float(raw.get("conversions", 0.0)),
            value=float(raw.get("value", 0.0)),
            pacing=PacingState.from_dict(json.loads(pacing) if pacing else None),
            lam=_optional_float(raw.get("lam")),
            planned=_optional_float(raw.get("planned")),
            last_tick=int(raw["last_tick"]) if raw.get("last_tick") else None,
            reason=raw.get("reason") or None,
            goal=GoalRecord.parse(raw.get("goal")),
        )


@dataclass(frozen=True, slots=True)
class GoalRecord:
    """The last decision's view of the campaign's goal (field ``goal``, written only for campaigns with
    one): what it projected for the end of the flight, from what had been achieved by then."""

    metric: str
    target: float
    achieved: float
    projected: float
    status: str
    shortfall: float

    @classmethod
    def parse(cls, text: str | None) -> GoalRecord | None:
        if not text:
            return None
        try:
            doc = json.loads(text)
            return cls(
                str(doc["metric"]), float(doc["target"]), float(doc["achieved"]), float(doc["projected"]),
                str(doc["status"]), float(doc["shortfall"]),
            )  # fmt: skip
        except (ValueError, KeyError, TypeError):
            return None  # a damaged field reads as no projection yet, never as a failed read


def _optional_float(text: str | None) -> float | None:
    return float(text) if text else None


def read(client: Client, campaign: str) -> StateRecord:
    """One campaign's state, in a round trip of its own."""
    raw: dict[str, str] = client.hgetall(keys.state(campaign))  # type: ignore[assignment]
    return StateRecord.from_hash(raw)


def queue_read(pipe: Any, campaign: str) -> None:
    """Queue the read of ``campaign``'s state on a pipeline; ``StateRecord.from_hash`` parses the reply."""
    pipe.hgetall(keys.state(campaign))


def queue_outcomes(pipe: Any, campaign: str, spend: float, clicks: float, conversions: float, value: float) -> None:
    """Queue adding one evaluation's outcomes; increments, so overlapping evaluations both count."""
    key = keys.state(campaign)
    for name, amount in zip(OUTCOMES, (spend, clicks, conversions, value), strict=True):
        if amount:
            pipe.hincrbyfloat(key, name, amount)


def decision_fields(decision: Decision, tick: int) -> Fields:
    """The engine's decision for ``tick`` as the hash stores it: its pacing for the next one, what it planned,
    and for a campaign with a goal its progress (one field, rewritten each tick: bounded)."""
    fields: Fields = {
        "pacing": json.dumps(decision.pacing.to_dict()),
        "lam": repr(decision.lam),
        "planned": repr(decision.planned),
        "last_tick": tick,
        "reason": decision.reason.value if decision.reason else "",
    }
    if decision.goal is not None:
        fields["goal"] = json.dumps(decision.goal.to_dict())
    return fields


def queue_decision(pipe: Any, campaign: str, decision: Decision, tick: int) -> None:
    """Queue storing the engine's decision for ``tick`` outright (for tools and tests; evaluations use
    ``queue_record``)."""
    pipe.hset(keys.state(campaign), mapping=decision_fields(decision, tick))


def record_call(
    campaign: str, tick: int, token: str, outcomes: tuple[float, float, float, float], decision: Decision
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of one evaluation's write of ``campaign``'s state (``lua/record_state.lua``)."""
    args: list[Any] = [token, tick, *(repr(float(x)) for x in outcomes)]
    for name, value in decision_fields(decision, tick).items():
        args += (name, value)
    return [keys.state(campaign), keys.evaluated(campaign, tick)], args


def queue_record(
    pipe: Any, campaign: str, tick: int, token: str, outcomes: tuple[float, float, float, float], decision: Decision
) -> None:
    """Queue one evaluation's write of ``campaign``'s state for ``tick``, by the delivery holding ``token``.

    ``outcomes`` are the tick's spend, clicks, conversions and value. The reply is 1 (applied), 0
    (applied before by this delivery) or -1 (not this delivery's mark). Sent as EVAL with the script's
    text, which needs no handling of NOSCRIPT; evaluations, which send many, queue ``record_call`` by
    the script's SHA instead (``common/fleet/scripts.py``).
    """
    keys_, args = record_call(campaign, tick, token, outcomes, decision)
    # Through execute_command: redis-py's ClusterPipeline.eval refuses to queue (as for EVALSHA in
    # common/ledger/scripts.py); routed by the first key, with both keys in the campaign's slot.
    pipe.execute_command("EVAL", scripts.script("record_state").source, len(keys_), *keys_, *args)
