"""Load on the HTTP API as it is used: platform connectors, ad-ops people, dashboards and Prometheus.

    CE_API_TOKEN=... locust -f locustfiles/api.py --host http://127.0.0.1:8000

Requests are named by route (``/campaigns/{id}``), so the statistics group by route, not by campaign.
Writes carry ``Authorization: Bearer $CE_API_TOKEN``; so do reads, so that it also works where
``CE_API_READS=token``. Writes are gentle on the fleet's state: budgets only go up (by 1%), every
campaign paused is resumed (by the next toggle or when its user stops), and the feed is posted for
the tick that ended, which the fleet's simulated platforms have already published: a repeated
(platform, tick) changes nothing and is counted in ``already_published``.
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

TOKEN = os.environ.get("CE_API_TOKEN", "")
# An ad-ops person's pause between two actions, in seconds.
THINK_SECONDS = (2.0, 6.0)
# The dashboard polls at most once a second (api/static/dashboard.js); Prometheus every 5 s (docker/).
DASHBOARD_MIN_PERIOD = 1.0
SCRAPE_PERIOD = 5.0
# A pause or resume refused because the campaign finished meanwhile: what an operator would see too.
FINISHED_REFUSAL = "finished campaign cannot"

log = logging.getLogger(__name__)


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--think-time-scale", type=float, default=1.0,
        help="Multiplies the ad-ops users' think time between actions (2-6 s); 0.1 makes ten times their traffic",
    )  # fmt: skip


@events.init.add_listener
def _require_token(environment: Environment, **_kwargs: Any) -> None:
    if not TOKEN:
        log.error("CE_API_TOKEN is not set: every write (feed, PATCH, pause, resume) would be refused with 401")
        environment.process_exit_code = 2
        if environment.runner is not None:
            environment.runner.quit()


class ApiUser(HttpUser):
    abstract = True
    host = "http://127.0.0.1:8000"

    def on_start(self) -> None:
        if TOKEN:
            self.client.headers["Authorization"] = f"Bearer {TOKEN}"

    def paced(self, period: float) -> float:
        """Wait so that a task starts every ``period`` seconds, however long the last one took."""
        started = getattr(self, "_task_started", None)
        elapsed = 0.0 if started is None else time.monotonic() - started
        wait = max(0.0, period - elapsed)
        self._task_started = time.monotonic() + wait
        return wait


class PlatformConnector(ApiUser):
    """A platform's connector: once a tick it reads the tick from /health and posts the figures of the tick
    that ended."""

    weight = 2
    _numbers = itertools.count()

    def on_start(self) -> None:
        super().on_start()
        self.index = next(self._numbers)
        self.tick_seconds = self.client.get("/api/overview", name="/api/overview").json()["system"]["tick_seconds"]
        self.figures: dict[str, dict[str, float]] = {}

    def wait_time(self) -> float:
        return self.paced(self.tick_seconds)

    def learn_figures(self) -> None:
        """Figures to post: the platform's newest published ones (so a post never moves its series)."""
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
        if last is None or last < 1:
            return
        self.client.post("/feed", json={"tick": last - 1, "platforms": self.figures}, name="/feed")


class AdOps(ApiUser):
    """A person operating campaigns: mostly reading, now and then raising a budget or pausing one."""

    weight = 5

    def on_start(self) -> None:
        super().on_start()
        self.active: list[str] = []
        self.paused: list[str] = []
        self.list_campaigns()

    def on_stop(self) -> None:
        while self.paused:
            self.resume(self.paused.pop())

    def wait_time(self) -> float:
        scale = getattr(self.environment.parsed_options, "think_time_scale", 1.0)
        return random.uniform(*THINK_SECONDS) * scale

    def some_campaign(self) -> str | None:
        return random.choice(self.active) if self.active else None

    @task(3)
    def list_campaigns(self) -> None:
        body = self.client.get("/campaigns", params={"limit": 200}, name="/campaigns").json()
        self.active = [c["id"] for c in body["campaigns"] if c["status"] == "active"]

    @task(6)
    def view_campaign(self) -> None:
        cid = self.some_campaign()
        if cid is not None:
            self.client.get(f"/campaigns/{cid}", name="/campaigns/{id}")

    @task(3)
    def recent_decisions(self) -> None:
        self.client.get("/decisions", params={"limit": 50}, name="/decisions")

    @task(1)
    def raise_budget(self) -> None:
        cid = self.some_campaign()
        if cid is None:
            return
        budget = self.client.get(f"/campaigns/{cid}", name="/campaigns/{id}").json()["spec"]["budget"]
        self.client.patch(f"/campaigns/{cid}", json={"budget": round(budget * 1.01, 2)}, name="/campaigns/{id}")

    @task(1)
    def pause_or_resume(self) -> None:
        if self.paused:
            self.resume(self.paused.pop())
            return
        cid = self.some_campaign()
        if cid is not None and self.change(cid, "pause"):
            self.paused.append(cid)

    def resume(self, cid: str) -> None:
        self.change(cid, "resume")

    def change(self, cid: str, action: str) -> bool:
        with self.client.post(f"/campaigns/{cid}/{action}", name=f"/campaigns/{{id}}/{action}",
                              catch_response=True) as response:  # fmt: skip
            if response.status_code == 422 and FINISHED_REFUSAL in response.text:
                response.success()
                return False
            return response.ok


class Dashboard(ApiUser):
    """An open dashboard tab: the three JSON reads once a tick (its event stream is not measured here)."""

    weight = 2
    tick_seconds = 2.0

    def wait_time(self) -> float:
        return self.paced(max(DASHBOARD_MIN_PERIOD, self.tick_seconds))

    @task
    def poll(self) -> None:
        overview = self.client.get("/api/overview", name="/api/overview")
        self.client.get("/api/platforms", name="/api/platforms")
        self.client.get("/api/ticks", name="/api/ticks")
        if overview.ok:
            self.tick_seconds = overview.json()["system"]["tick_seconds"]


class Prometheus(ApiUser):
    """One scraper of /metrics, as docker/prometheus.yml configures it."""

    fixed_count = 1

    def wait_time(self) -> float:
        return self.paced(SCRAPE_PERIOD)

    @task
    def scrape(self) -> None:
        self.client.get("/metrics", name="/metrics")
