"""What the scenarios' users have in common: ``api.py`` and ``steady.py`` subclass these and add their pace.

Every class here is abstract (``abstract = True``), so Locust spawns none of them: a locustfile runs the
users it defines, each a subclass of one of these with its wait time and weight. Locust loads a locustfile
by path with its directory first on ``sys.path``, so the locustfiles import this module as ``users``.
"""

from __future__ import annotations

import itertools
import logging
import os
import time

from locust import HttpUser, task
from locust.env import Environment
from requests import Response

TOKEN = os.environ.get("CE_API_TOKEN", "")
# Prometheus scrapes every 5 s (docker/).
SCRAPE_PERIOD = 5.0
# A pause or resume refused because the campaign finished meanwhile: what an operator would see too.
FINISHED_REFUSAL = "finished campaign cannot"

log = logging.getLogger(__name__)


def require_token(environment: Environment, writes: str) -> bool:
    """Whether ``CE_API_TOKEN`` is set; if not, log which ``writes`` would be refused and stop Locust (exit 2)."""
    if TOKEN:
        return True
    log.error("CE_API_TOKEN is not set: every write (%s) would be refused with 401", writes)
    environment.process_exit_code = 2
    if environment.runner is not None:
        environment.runner.quit()
    return False


class ApiUser(HttpUser):
    """A client of the API: every request carries ``Authorization: Bearer $CE_API_TOKEN``."""

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


class AdOps(ApiUser):
    """A person operating campaigns; what they do, and how often, is the scenario's."""

    abstract = True

    def change(self, cid: str, action: str) -> bool:
        """Pause or resume (``action``) a campaign; a campaign that finished meanwhile is refused, not failed."""
        with self.client.post(f"/campaigns/{cid}/{action}", name=f"/campaigns/{{id}}/{action}",
                              catch_response=True) as response:  # fmt: skip
            if response.status_code == 422 and FINISHED_REFUSAL in response.text:
                response.success()
                return False
            return bool(response.ok)


class PlatformConnector(ApiUser):
    """A platform's connector: once a tick it reads the last tick from /health and posts figures for the
    tick before it, which the fleet's simulated platforms have already published (a repeat changes
    nothing: ``already_published``)."""

    abstract = True
    _numbers = itertools.count()

    def on_start(self) -> None:
        super().on_start()
        self.index = next(self._numbers)
        self.figures: dict[str, dict[str, float]] = {}

    def learn_figures(self) -> None:
        """Figures to post: the platform's newest published ones, so that a post never moves its series."""
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
    """An open dashboard tab: the three JSON reads that ``api/static/dashboard.js`` polls (its event stream
    is not loaded)."""

    abstract = True

    @task
    def poll(self) -> None:
        overview = self.client.get("/api/overview", name="/api/overview")
        self.client.get("/api/platforms", name="/api/platforms")
        self.client.get("/api/ticks", name="/api/ticks")
        self.polled(overview)

    def polled(self, overview: Response) -> None:
        """What the tab makes of the overview it read: nothing unless a scenario says so."""


class Prometheus(ApiUser):
    """One scraper of /metrics, as docker/prometheus.yml configures it."""

    abstract = True
    fixed_count = 1

    @task
    def scrape(self) -> None:
        self.client.get("/metrics", name="/metrics")
