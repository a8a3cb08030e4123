"""``CE_PLATFORM_ADAPTER=http``: bids as JSON to each platform's registered endpoint (common/market/wire.py).

The endpoint comes from the platform registry (``POST /platforms`` with ``endpoint``), re-read every
``REFRESH_SECONDS`` so that a change reaches every worker without a restart. Each request waits at
most ``CE_PLATFORM_TIMEOUT_SECONDS``. What the replies mean for the money:

* 2xx with outcomes: settled at once; ``pending`` ones are asked for each tick (``collect``);
* 4xx, or a connection refused: nothing was placed (``BidsNotPlaced``), the grants go back;
* 5xx, a time-out, a reply that does not parse: the bids may have been placed; they are asked for
  like pending ones and, if the platform never reports them, charged in full by the sweeper.

Standard library HTTP (``urllib``): one short request per platform and evaluation needs no pool.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

from pydantic import BaseModel, ValidationError

from common.errors import BidsNotPlaced, PlatformError
from common.fleet.store import CampaignStore
from common.market.platforms import PENDING, Order, idempotency_key
from common.market.wire import BidItem, BidRequest, OutcomeQuery, OutcomeReply
from common.models import Outcome

REFRESH_SECONDS = 5.0


class HttpPlatforms:
    def __init__(self, store: CampaignStore, timeout: float) -> None:
        self.store = store
        self.timeout = timeout
        self._endpoints: dict[str, str | None] = {}
        self._read_at = -REFRESH_SECONDS

    def endpoint(self, platform: str) -> str:
        if time.monotonic() - self._read_at > REFRESH_SECONDS or platform not in self._endpoints:
            self._endpoints = {pid: info.endpoint for pid, info in self.store.platforms().items()}
            self._read_at = time.monotonic()
        found = self._endpoints.get(platform)
        if not found:
            raise BidsNotPlaced(f"platform {platform} has no endpoint registered (POST /platforms with endpoint)")
        return found

    def submit(self, tick: int, orders: Sequence[Order]) -> list[Outcome | None]:
        out: list[Outcome | None] = [PENDING] * len(orders)
        for platform, indices in _by_platform(orders).items():
            bids = [
                BidItem(
                    key=idempotency_key(tick, orders[i].bid),
                    campaign=orders[i].bid.campaign,
                    bid=orders[i].bid.bid,
                    spend_cap=orders[i].bid.spend_cap,
                    audience=orders[i].campaign.platforms.get(platform, 0.0),
                    value_per_conversion=orders[i].campaign.value_per_conversion,
                )
                for i in indices
            ]
            reply = self._post(platform, "bids", BidRequest(tick=tick, platform=platform, bids=bids), refusable=True)
            found = {item.key: item.outcome() for item in reply.outcomes}
            for i, bid in zip(indices, bids, strict=True):
                out[i] = found.get(bid.key)
        return out

    def collect(self, tick: int, orders: Sequence[Order]) -> list[Outcome | None]:
        out: list[Outcome | None] = [PENDING] * len(orders)
        for platform, indices in _by_platform(orders).items():
            wanted = [idempotency_key(tick, orders[i].bid) for i in indices]
            reply = self._post(platform, "outcomes", OutcomeQuery(tick=tick, platform=platform, keys=wanted))
            found = {item.key: item.outcome() for item in reply.outcomes}
            for i, key in zip(indices, wanted, strict=True):
                out[i] = found.get(key)
        return out

    def _post(self, platform: str, path: str, body: BaseModel, *, refusable: bool = False) -> OutcomeReply:
        url = f"{self.endpoint(platform)}/{path}"
        request = urllib.request.Request(
            url, data=body.model_dump_json().encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if refusable and 400 <= exc.code < 500:
                raise BidsNotPlaced(f"{url} refused the bids: HTTP {exc.code} {_detail(exc)}") from None
            raise PlatformError(f"{url}: HTTP {exc.code} {_detail(exc)}") from None
        except urllib.error.URLError as exc:
            if refusable and isinstance(exc.reason, ConnectionRefusedError):
                raise BidsNotPlaced(f"{url}: connection refused, nothing sent") from None
            raise PlatformError(f"{url}: {exc.reason}") from None
        except TimeoutError:
            raise PlatformError(f"{url}: no answer within {self.timeout} s") from None
        try:
            return OutcomeReply.model_validate_json(raw)
        except ValidationError as exc:
            raise PlatformError(f"{url}: the reply is not outcomes: {exc.errors()[0]['msg']}") from None


def _by_platform(orders: Sequence[Order]) -> dict[str, list[int]]:
    by: dict[str, list[int]] = {}
    for i, order in enumerate(orders):
        by.setdefault(order.bid.platform, []).append(i)
    return by


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read(300).decode(errors="replace")
    except OSError:
        return ""
    try:
        return str(json.loads(text).get("detail", text))[:200]
    except (ValueError, AttributeError):
        return text[:200]
