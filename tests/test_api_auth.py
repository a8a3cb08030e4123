"""Every write route, taken from the OpenAPI document so that a new one is covered by itself, refuses a
missing or wrong token with 401 and writes nothing; so does every read when reads need the token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from api.app import create_app
from common.settings import Settings
from tests.fleet import load_campaigns, write_market
from tests.ledger_helpers import snapshot

TOKEN = "auth-test-token"
CAMPAIGN = {"id": "spring", "budget": 100.0, "value_per_conversion": 40.0, "platforms": {"search": 1.0}, "end_tick": 9}
WRITES = {"post", "put", "patch", "delete"}
# What a client without the right token may send; each must be refused alike.
REFUSED = {
    "no header": {},
    "wrong token": {"Authorization": "Bearer not-the-token"},
    "empty bearer": {"Authorization": "Bearer "},
    "other scheme": {"Authorization": f"Basic {TOKEN}"},
    "token alone": {"Authorization": TOKEN},
}


@pytest.fixture
def client(redis_url: str, r: redis.Redis, tmp_path: Path) -> Iterator[TestClient]:
    load_campaigns(r, write_market(tmp_path / "market.json", ticks=50), 0)
    app = create_app(Settings(redis_url=redis_url, api_token=TOKEN, api_reads="token"))
    app.state.ctx.store.create(CAMPAIGN)
    with TestClient(app, client=("127.0.0.1", 1), base_url="http://localhost") as c:
        yield c


def _operations(client: TestClient, methods: set[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path with the campaign's id filled in, operation) of every documented operation."""
    found = []
    for path, operations in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        for method, operation in operations.items():
            if method in methods:
                found.append((method, path.replace("{campaign_id}", CAMPAIGN["id"]), operation))  # type: ignore[arg-type]
    return found


def _body(operation: dict[str, Any]) -> Any:
    """The documented example of the request body, if any: with the token, it would be accepted."""
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    examples = content.get("examples") or {}
    return next((e["value"] for e in examples.values() if "value" in e), {} if content else None)


def test_every_write_refuses_a_missing_or_wrong_token_and_writes_nothing(client: TestClient, r: redis.Redis) -> None:
    writes = _operations(client, WRITES)
    assert len(writes) >= 6, f"expected the API's write routes in its document, found {[w[:2] for w in writes]}"
    before = snapshot(r)
    for method, path, operation in writes:
        for name, headers in REFUSED.items():
            response = client.request(method.upper(), path, json=_body(operation), headers=headers)
            assert response.status_code == 401, (method, path, name, response.text)
            assert response.headers["www-authenticate"] == "Bearer", (method, path, name)
            assert "CE_API_TOKEN" in response.json()["detail"], (method, path, name)
            assert "401" in operation["responses"], f"{method} {path}: the 401 is not documented"
            assert snapshot(r) == before, f"{method} {path} ({name}) wrote while refused"
    # The same requests with the token pass the door (answers other than 401), so the above is no accident.
    for method, path, operation in writes:
        response = client.request(
            method.upper(), path, json=_body(operation), headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert response.status_code != 401, (method, path, response.text)


def test_every_read_needs_the_token_when_reads_do(client: TestClient) -> None:
    reads = [(m, p, op) for m, p, op in _operations(client, {"get"}) if p != "/health/live"]
    assert len(reads) >= 9
    for _method, path, operation in reads:
        for name, headers in REFUSED.items():
            response = client.get(path, headers=headers)
            assert response.status_code == 401, (path, name, response.text)
            assert "401" in operation["responses"], f"GET {path}: the 401 is not documented"
    assert client.get("/health/live").status_code == 200, "liveness stays open for container checks"
