"""``campaign-engine platform-server``: a small ad platform that speaks the ``http`` adapter's JSON.

It serves every platform of a scenario file at ``http://HOST:PORT/<platform>`` (register that as
the platform's ``endpoint``) and clears bids with the market model of docs/market.md on the
scenario's true series, as the simulated platforms do. It keeps its books by idempotency key: a
bid submitted again gets its first outcome and is never charged twice (``GET /charges`` lists what
it charged, ``POST /reset`` forgets it all). It is the other end of the tests of
``CE_PLATFORM_ADAPTER=http`` and a demo of it; ``POST /control`` switches how it answers, to drill
what the engine does when a platform misbehaves:

* ``normal``: outcomes in the reply;
* ``late``: bids placed and charged, the reply says ``pending``; ``/outcomes`` reports them;
* ``slow``: outcomes in a reply that comes ``delay_seconds`` after the charge;
* ``error``: HTTP 500, nothing placed (the engine cannot know: it asks, and is told ``unknown``);
* ``refuse``: HTTP 409, nothing placed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Body, FastAPI, HTTPException
from pydantic import BaseModel, Field

from common.market.platforms import clear
from common.market.scenario import Scenario
from common.market.wire import BidRequest, OutcomeItem, OutcomeQuery, OutcomeReply
from common.money import to_micros, to_micros_ceil

Mode = Literal["normal", "late", "slow", "error", "refuse"]


class Control(BaseModel):
    mode: Mode = "normal"
    delay_seconds: float = Field(0.0, ge=0, le=60)


class Charges(BaseModel):
    charges: dict[str, int] = Field(description="Idempotency key -> micro-units charged, once per key.")
    submits: int = Field(description="Bids received, duplicates included.")


@dataclass
class Books:
    """What the platform placed, by idempotency key; one lock, as requests come on several threads."""

    scenario: Scenario
    control: Control = field(default_factory=Control)
    outcomes: dict[str, OutcomeItem] = field(default_factory=dict)
    charged: dict[str, int] = field(default_factory=dict)
    submits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def place(self, request: BidRequest) -> list[OutcomeItem]:
        series = self.scenario.platforms.get(request.platform)
        if series is None:
            raise HTTPException(404, f"no platform {request.platform!r} here")
        with self.lock:
            self.submits += len(request.bids)
            new = [b for b in request.bids if b.key not in self.outcomes]
            cleared = clear(
                series.figures(request.tick % self.scenario.ticks),
                series.price_sigma,
                [(b.bid, b.spend_cap, b.audience, b.value_per_conversion) for b in new],
            )
            for b, outcome in zip(new, cleared, strict=True):
                self.outcomes[b.key] = OutcomeItem.cleared(b.key, outcome)
                # Billed as a platform bills: rounded up to the micro-unit, never past the cap.
                self.charged[b.key] = min(to_micros_ceil(outcome.cost), to_micros(b.spend_cap))
            return [self.outcomes[b.key] for b in request.bids]

    def look_up(self, query: OutcomeQuery) -> list[OutcomeItem]:
        with self.lock:
            return [self.outcomes.get(k) or OutcomeItem(key=k, status="unknown") for k in query.keys]


def create_app(scenario: Scenario) -> FastAPI:
    books = Books(scenario)
    app = FastAPI(title="campaign-engine platform server", docs_url=None, redoc_url=None)

    @app.post("/{platform}/bids", response_model=OutcomeReply)
    def bids(platform: str, request: BidRequest) -> OutcomeReply:
        mode, delay = books.control.mode, books.control.delay_seconds
        if mode == "refuse":
            raise HTTPException(409, "bids refused (platform-server control: refuse)")
        if mode == "error":
            raise HTTPException(500, "internal error (platform-server control: error)")
        placed = books.place(request.model_copy(update={"platform": platform}))
        if mode == "late":
            return OutcomeReply(outcomes=[OutcomeItem(key=o.key, status="pending") for o in placed])
        if mode == "slow":
            time.sleep(delay)
        return OutcomeReply(outcomes=placed)

    @app.post("/{platform}/outcomes", response_model=OutcomeReply)
    def outcomes(platform: str, query: OutcomeQuery) -> OutcomeReply:
        return OutcomeReply(outcomes=books.look_up(query))

    @app.post("/control", response_model=Control)
    def control(setting: Annotated[Control, Body()]) -> Control:
        books.control = setting
        return setting

    @app.post("/reset", response_model=Charges)
    def reset() -> Charges:
        """Forget every bid placed (a drill starting afresh); answers what was charged until now."""
        with books.lock:
            before = Charges(charges=dict(books.charged), submits=books.submits)
            books.outcomes.clear()
            books.charged.clear()
            books.submits = 0
        return before

    @app.get("/charges", response_model=Charges)
    def charges() -> Charges:
        with books.lock:
            return Charges(charges=dict(books.charged), submits=books.submits)

    return app


def serve(scenario_path: Path, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(Scenario.load(scenario_path)), host=host, port=port, log_level="warning")
