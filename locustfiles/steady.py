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
import logging
import os
import random
import time
from typing import Any

from locust import HttpUser, events, task
from locust.env import Environment
from locust.user.wait_time import constant_throughput

TOKEN = os.environ.get("CE_API_TOKEN", "")
# Campaigns created by the load; the fleet's demo campaigns are c00000, c00001, ...
LOAD_PREFIX = "load-"
# Each run gets its own ids, so that a run never meets what an interrupted one left behind.
RUN_ID = f"{int(time.time()) % 1_000_000:06d}"
# Campaigns an ad-ops user holds at once: past it, launching retires the oldest first.
POOL = 4
# A flight long enough to outlast any run; its budget is paced over it, so it is never spent out.
FLIGHT_TICKS = 3000
BUDGET = 400.0
# The dashboard polls once a tick (api/static/dashboard.js); Prometheus scrapes every 5 s (docker/).
SCRAPE_PERIOD = 5.0
# A pause or resume refused because the campaign finished meanwhile: what an operator would see too.
FINISHED_REFUSAL = "finished campaign cannot"

log = logging.getLogger(__name__)


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
    if not TOKEN:
        log.error("CE_API_TOKEN is not set: every write (create, PATCH, pause, resume, feed) would be refused")
        environment.process_exit_code = 2
        if environment.runner is not None:
            environment.runner.quit()
        return
    options = environment.parsed_options
    if options is None:
        return
    per_tick = constant_throughput(1.0 / options.tick_seconds)
    AdOps.wait_time = constant_throughput(options.ops_rate)  # type: ignore[method-assign]
    PlatformConnector.wait_time = per_tick  # type: ignore[method-assign]
    Dashboard.wait_time = per_tick  # type: ignore[method-assign]


class ApiUser(HttpUser):
    abstract = True
    host = "http://127.0.0.1:8000"
    wait_time = constant_throughput(1.0)

    def on_start(self) -> None:
        self.client.headers["Authorization"] = f"Bearer {TOKEN}"


class AdOps(ApiUser):
    """A person running a few campaigns of their own, at a fixed pace of actions."""

    weight = 5
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
        spec = {
            "id": f"{self.name}-{next(self._serial)}",
            "budget": BUDGET,
            "value_per_conversion": round(random.uniform(20.0, 60.0), 2),
            "platforms": {pid: round(random.uniform(0.01, 0.05), 3) for pid in audience},
            "start_tick": self.tick,
            "end_tick": self.tick + FLIGHT_TICKS,
        }
        response = self.client.post("/campaigns", json=spec, name="/campaigns")
        if response.status_code == 201:
            self.active.append(spec["id"])

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

    def change(self, cid: str, action: str) -> bool:
        with self.client.post(f"/campaigns/{cid}/{action}", name=f"/campaigns/{{id}}/{action}",
                              catch_response=True) as response:  # fmt: skip
            if response.status_code == 422 and FINISHED_REFUSAL in response.text:
                response.success()
                return False
            return response.ok

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


class PlatformConnector(ApiUser):
    """A platform's connector: once a tick it reads the last tick from /health and posts figures for the
    tick before it, which the fleet's simulated platforms have already published (a repeat changes
    nothing: ``already_published``)."""

    weight = 2
    _numbers = itertools.count()

    def on_start(self) -> None:
        super().on_start()
        self.index = next(self._numbers)
        self.figures: dict[str, dict[str, float]] = {}

    def learn_figures(self) -> None:
        """The platform's newest published figures, so that a post never moves its series."""
        view = self.client.get("/api/platforms", params={"ticks": 5}, name="/api/platforms").json()
        if not view["platforms"]:
            return
        pids = sorted(view["platforms"])
        pid = pids[self.index % len(pids)]
        actual = view["platforms"][pid]["actual"]
        newest = {m: [v for v in values if v is not None] for m, values in actual.items()}
        if all(newest.values()):
            self.figures = {pid: {m: values[-1] for m, values in newest.items()}}

    @task
    def publish(self) -> None:
        if not self.figures:
            self.learn_figures()
            return
        last = self.client.get("/health", name="/health").json().get("last_tick")
        if last is not None and last >= 1:
            self.client.post("/feed", json={"tick": last - 1, "platforms": self.figures}, name="/feed")


class Dashboard(ApiUser):
    """An open dashboard tab: the three JSON reads once a tick (its event stream is not loaded)."""

    weight = 1

    @task
    def poll(self) -> None:
        self.client.get("/api/overview", name="/api/overview")
        self.client.get("/api/platforms", name="/api/platforms")
        self.client.get("/api/ticks", name="/api/ticks")


class Prometheus(ApiUser):
    """One scraper of /metrics, as docker/prometheus.yml configures it."""

    fixed_count = 1
    wait_time = constant_throughput(1.0 / SCRAPE_PERIOD)

    @task
    def scrape(self) -> None:
        self.client.get("/metrics", name="/metrics")
