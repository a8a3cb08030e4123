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

import random
from typing import TYPE_CHECKING, Any

from locust import events, task
from locust.env import Environment
from requests import Response

# Locust loads a locustfile by path with its directory first on sys.path: there the shared users are the
# module ``users``; the type checker, which reads this directory as a package, knows them by their full name.
if TYPE_CHECKING:
    from locustfiles import users
else:
    import users

# An ad-ops person's pause between two actions, in seconds.
THINK_SECONDS = (2.0, 6.0)
# The dashboard polls at most once a second (api/static/dashboard.js).
DASHBOARD_MIN_PERIOD = 1.0


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--think-time-scale", type=float, default=1.0,
        help="Multiplies the ad-ops users' think time between actions (2-6 s); 0.1 makes ten times their traffic",
    )  # fmt: skip


@events.init.add_listener
def _require_token(environment: Environment, **_kwargs: Any) -> None:
    users.require_token(environment, "feed, PATCH, pause, resume")


class PlatformConnector(users.PlatformConnector):
    """A platform's connector, once a tick as the fleet's overview gives it."""

    weight = 2

    def on_start(self) -> None:
        super().on_start()
        self.tick_seconds = self.client.get("/api/overview", name="/api/overview").json()["system"]["tick_seconds"]

    def wait_time(self) -> float:
        return self.paced(self.tick_seconds)


class AdOps(users.AdOps):
    """A person operating campaigns: mostly reading, now and then raising a budget or pausing one."""

    weight = 5

    def on_start(self) -> None:
        super().on_start()
        self.active: list[str] = []
        self.paused: list[str] = []
        self.list_campaigns()

    def on_stop(self) -> None:
        while self.paused:
            self.resume(self.paused[-1])
            self.paused.pop()

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
        # A campaign is on the list from before its pause is sent until its resume has answered, so
        # a user stopped mid-request still resumes it in on_stop (resuming an active one changes nothing).
        if self.paused:
            self.resume(self.paused[-1])
            self.paused.pop()
            return
        cid = self.some_campaign()
        if cid is None:
            return
        self.paused.append(cid)
        if not self.change(cid, "pause"):
            self.paused.remove(cid)

    def resume(self, cid: str) -> None:
        self.change(cid, "resume")


class Dashboard(users.Dashboard):
    """An open dashboard tab, polling once a tick (at most once a second) as the overview gives the tick."""

    weight = 2
    tick_seconds = 2.0

    def wait_time(self) -> float:
        return self.paced(max(DASHBOARD_MIN_PERIOD, self.tick_seconds))

    def polled(self, overview: Response) -> None:
        if overview.ok:
            self.tick_seconds = overview.json()["system"]["tick_seconds"]


class Prometheus(users.Prometheus):
    """One scraper of /metrics, every 5 s."""

    def wait_time(self) -> float:
        return self.paced(users.SCRAPE_PERIOD)
