"""The API at a steady rate while the fleet evaluates many campaigns.

    CE_API_TOKEN=... locust -f locustfiles/steady.py --host http://127.0.0.1:8000 --headless -u 14 -r 7 -t 60s

Every user runs its task at a fixed rate (``constant_throughput``), however fast the API answers, so
the load offered is the same on a quiet and on a busy fleet. Ad-ops users run campaigns of their
own, with ids under ``LOAD_PREFIX`` so that they never meet the fleet's demo campaigns (``c00000``,
...): they create, patch (the budget, the bid cap, the target CPA, the flight's end), pause, resume
and retire them, read them and the decisions, and delete every one they still hold when they stop.
Platform connectors post the feed once a tick, dashboards poll the routes ``api/static/dashboard.js``
polls, and one Prometheus scrapes ``/metrics``. ``locustfiles/load.py`` runs it beside a fleet
started by ``campaign-engine up`` (``make load``).
"""

from __future__ import annotations

import itertools
import random
import time
from typing import TYPE_CHECKING, Any

from locust import events, task
from locust.env import Environment
from locust.user.wait_time import constant_throughput

# Locust loads a locustfile by path with its directory first on sys.path: there the shared users are the
# module ``users``; the type checker, which reads this directory as a package, knows them by their full name.
if TYPE_CHECKING:
    from locustfiles import users
else:
    import users

# Campaigns created by the load; the fleet's demo campaigns are c00000, c00001, ...
LOAD_PREFIX = "load-"
# Each run gets its own ids, so that a run never meets what an interrupted one left behind.
RUN_ID = f"{int(time.time()) % 1_000_000:06d}"
# Campaigns an ad-ops user holds at once: past it, launching retires the oldest first.
POOL = 4
# A flight long enough to outlast any run; its budget is paced over it, so it is never spent out.
FLIGHT_TICKS = 3000
BUDGET = 400.0


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--ops-rate", type=float, default=1.0,
        help="Actions per second of each ad-ops user (constant throughput); connectors and dashboards run once a tick",
    )  # fmt: skip
    parser.add_argument(
        "--tick-seconds", type=float, default=2.0, help="The fleet's tick length (CE_TICK_SECONDS): the connectors' "
        "and dashboards' period",
    )  # fmt: skip


@events.init.add_listener
def _configure(environment: Environment, **_kwargs: Any) -> None:
    if not users.require_token(environment, "create, PATCH, pause, resume, feed"):
        return
    options = environment.parsed_options
    if options is None:
        return
    per_tick = constant_throughput(1.0 / options.tick_seconds)
    AdOps.wait_time = constant_throughput(options.ops_rate)  # type: ignore[method-assign]
    PlatformConnector.wait_time = per_tick  # type: ignore[method-assign]
    Dashboard.wait_time = per_tick  # type: ignore[method-assign]


class AdOps(users.AdOps):
    """A person running a few campaigns of their own, at a fixed pace of actions."""

    weight = 5
    wait_time = constant_throughput(1.0)
    _numbers = itertools.count()

    def on_start(self) -> None:
        super().on_start()
        self.name = f"{LOAD_PREFIX}{RUN_ID}-{next(self._numbers)}"
        self._serial = itertools.count()
        self.active: list[str] = []
        self.paused: list[str] = []
        overview = self.client.get("/api/overview", name="/api/overview").json()
        self.tick = int(overview["system"]["current_tick"])
        self.platforms = sorted(self.client.get("/api/platforms", params={"ticks": 2}, name="/api/platforms").json()
                                ["platforms"])  # fmt: skip
        self.launch()

    def on_stop(self) -> None:
        for cid in [*self.active, *self.paused]:
            self.client.delete(f"/campaigns/{cid}", name="/campaigns/{id}")
        self.active, self.paused = [], []

    def owned(self) -> list[str]:
        return [*self.active, *self.paused]

    @task(2)
    def launch(self) -> None:
        """Create a campaign; with ``POOL`` held, retire the oldest first."""
        if len(self.owned()) >= POOL:
            self.retire()
        if not self.platforms:
            return
        audience = random.sample(self.platforms, k=random.randint(1, min(3, len(self.platforms))))
        cid = f"{self.name}-{next(self._serial)}"
        spec = {
            "id": cid,
            "budget": BUDGET,
            "value_per_conversion": round(random.uniform(20.0, 60.0), 2),
            "platforms": {pid: round(random.uniform(0.01, 0.05), 3) for pid in audience},
            "start_tick": self.tick,
            "end_tick": self.tick + FLIGHT_TICKS,
        }
        response = self.client.post("/campaigns", json=spec, name="/campaigns")
        if response.status_code == 201:
            self.active.append(cid)

    def retire(self) -> None:
        cid = min(self.owned(), key=lambda c: int(c.rsplit("-", 1)[1]))
        self.client.delete(f"/campaigns/{cid}", name="/campaigns/{id}")
        for held in (self.active, self.paused):
            if cid in held:
                held.remove(cid)

    @task(2)
    def raise_budget(self) -> None:
        if not self.active:
            return
        cid = random.choice(self.active)
        budget = self.client.get(f"/campaigns/{cid}", name="/campaigns/{id}").json()["spec"]["budget"]
        self.client.patch(f"/campaigns/{cid}", json={"budget": round(budget * 1.05, 2)}, name="/campaigns/{id}")

    @task(2)
    def retune(self) -> None:
        """Change the bid cap, the target CPA or the flight's end: fields other than the budget."""
        if not self.active:
            return
        cid = random.choice(self.active)
        changes = random.choice([
            {"max_bid": round(random.uniform(1.0, 8.0), 2)},
            {"target_cpa": round(random.uniform(10.0, 50.0), 2)},
            {"end_tick": self.tick + FLIGHT_TICKS + random.randint(0, 500)},
        ])  # fmt: skip
        self.client.patch(f"/campaigns/{cid}", json=changes, name="/campaigns/{id}")

    @task(2)
    def pause_or_resume(self) -> None:
        if self.paused and (not self.active or random.random() < 0.5):
            cid = self.paused.pop()
            if self.change(cid, "resume"):
                self.active.append(cid)
            return
        if self.active:
            cid = self.active.pop()
            (self.paused if self.change(cid, "pause") else self.active).append(cid)

    @task(3)
    def view_campaign(self) -> None:
        owned = self.owned()
        if owned:
            self.client.get(f"/campaigns/{random.choice(owned)}", name="/campaigns/{id}")

    @task(2)
    def list_campaigns(self) -> None:
        self.client.get("/campaigns", params={"limit": 100}, name="/campaigns")

    @task(2)
    def recent_decisions(self) -> None:
        self.client.get("/decisions", params={"limit": 50}, name="/decisions")


class PlatformConnector(users.PlatformConnector):
    """A platform's connector, once a tick (``--tick-seconds``)."""

    weight = 2
    wait_time = constant_throughput(1.0)


class Dashboard(users.Dashboard):
    """An open dashboard tab, polling once a tick (``--tick-seconds``)."""

    weight = 1
    wait_time = constant_throughput(1.0)


class Prometheus(users.Prometheus):
    """One scraper of /metrics, every 5 s."""

    wait_time = constant_throughput(1.0 / users.SCRAPE_PERIOD)
