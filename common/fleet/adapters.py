"""The platform adapter ``CE_PLATFORM_ADAPTER`` names, built once per process.

* ``simulated``: the market model of docs/market.md. With ``CE_FEED=simulated`` it clears each bid
  at once on the simulated market's series (``SimulatedPlatforms``); with ``CE_FEED=external`` it
  paper-trades (``PaperPlatforms``): bids clear on the posted figures once their tick's arrive.
* ``http``: JSON to each platform's registered endpoint (``HttpPlatforms``).
* ``module:callable``: your own. The callable gets the ``Settings`` and returns an object with
  ``submit(tick, orders)`` (``common.market.platforms.PlatformAdapter``), and ``collect`` too if its
  outcomes may come later (``LateOutcomes``).
"""

from __future__ import annotations

import importlib

from common.errors import SettingsError
from common.fleet.feed import FeedStore
from common.fleet.http_platforms import HttpPlatforms
from common.fleet.paper import PaperPlatforms
from common.fleet.store import CampaignStore
from common.market.platforms import PlatformAdapter, SimulatedPlatforms
from common.market.scenario import Scenario
from common.redis_conn import Client
from common.settings import Settings

SETTING = "CE_PLATFORM_ADAPTER"


def build(settings: Settings, client: Client, scenario: Scenario) -> PlatformAdapter:
    """The adapter of ``settings``; ``SettingsError`` naming ``CE_PLATFORM_ADAPTER`` when it cannot be had."""
    name = settings.platform_adapter
    if name == "simulated":
        if settings.feed == "external":
            return PaperPlatforms(FeedStore(client), CampaignStore(client))
        return SimulatedPlatforms(scenario)
    if name == "http":
        return HttpPlatforms(CampaignStore(client), settings.platform_timeout_seconds)
    return load(name, settings)


def load(spec: str, settings: Settings) -> PlatformAdapter:
    """Import ``module:callable`` and call it with the settings."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SettingsError(f"{SETTING}: cannot import module {module_name!r}: {exc}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise SettingsError(f"{SETTING}: module {module_name!r} has no callable {attribute!r}")
    try:
        adapter = factory(settings)
    except Exception as exc:  # whatever the user's factory raises is a reason not to start
        raise SettingsError(f"{SETTING}: {spec}(settings) failed: {type(exc).__name__}: {exc}") from None
    if not callable(getattr(adapter, "submit", None)):
        raise SettingsError(f"{SETTING}: {spec}(settings) returned {type(adapter).__name__}, which has no submit()")
    return adapter  # type: ignore[no-any-return]
