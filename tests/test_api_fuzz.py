"""The API fuzzed from its own OpenAPI document (schemathesis), over the real test Redis.

Every operation gets valid and invalid requests generated from its schema. No answer may be a 5xx,
every answer must be one the document lists with the body it documents, invalid input must be
refused, a request without the token refused, and a refused request must write nothing.

``CE_FUZZ_CASES`` sets how many cases in all (1,000 by default; ``make fuzz`` runs more).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app, event_streams
from common.settings import Settings
from tests.fleet import load_campaigns, write_market
from tests.ledger_helpers import snapshot

TOKEN = "fuzz-token"
HEALTH = "/health"
CASES = int(os.environ.get("CE_FUZZ_CASES", "1000"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]
# The campaign the examples of the document name, so that requests about it find one.
EXAMPLE_CAMPAIGN = {
    "id": "spring-sale",
    "budget": 250.0,
    "value_per_conversion": 40.0,
    "platforms": {"search": 0.02},
    "end_tick": 720,
}


@pytest.fixture
def app(redis_url: str, r: redis.Redis, tmp_path: Path) -> Iterator[Any]:
    load_campaigns(r, write_market(tmp_path / "market.json", ticks=50), 0)  # the market's platforms
    # The health check's worker ping goes through the broker, which keeps its own keys: in another database.
    broker = redis_url.rpartition("/")[0] + "/1"
    app = create_app(Settings(redis_url=redis_url, broker_url=broker, api_token=TOKEN))
    app.state.ctx.store.create(EXAMPLE_CAMPAIGN)
    yield app
    app.state.ctx.close()


@pytest.mark.slow
def test_the_api_is_what_its_document_says(app: Any, r: redis.Redis) -> None:
    # OpenAPI cannot say that a query takes no parameters but those listed, and HTTP APIs ignore others: do
    # not count an unknown parameter as invalid input (an unknown body field is refused, and tested so).
    config = schemathesis.Config.from_dict({"generation": {"allow-extra-parameters": False}})
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    streams = event_streams(app)
    operations = [result.ok() for result in schema.get_all_operations()]
    # An event stream never ends: its answer's status and headers are checked in test_api_guard.py.
    fuzzed = [op for op in operations if op.path not in streams]
    # A little over an even share each: hypothesis stops early on an operation with few distinct inputs.
    per_mode = math.ceil(1.15 * CASES / (2 * len(fuzzed)))
    seen: Counter[str] = Counter()
    for operation in fuzzed:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, per_mode, r, seen)
    total = sum(seen.values())
    print(f"{total} cases over {len(fuzzed)} operations: {dict(sorted(seen.items()))}")
    assert total >= CASES, "hypothesis stopped early: too few distinct cases"
    assert not [status for status in seen if status.startswith("5") and status != "503 health"]


def _fuzz(operation: Any, mode: GenerationMode, examples: int, r: redis.Redis, seen: Counter[str]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        before = snapshot(r)
        response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
        status = response.status_code
        if status >= 400:
            assert snapshot(r) == before, f"{case.method} {case.formatted_path} was refused but wrote"
        checks = CHECKS
        if operation.path == HEALTH and status == 503:
            # The health check's documented answer while no fleet runs: its body is checked, not its 5xx.
            checks = [check for check in CHECKS if check is not not_a_server_error]
            status = "503 health"
        seen[str(status)] += 1
        case.validate_response(response, checks=checks, headers={"Authorization": f"Bearer {TOKEN}"})

    try:
        run()
    except Unsatisfiable:
        # Nothing of the operation can be made invalid (no parameters, no body): nothing to negate.
        assert mode is GenerationMode.NEGATIVE, f"{operation.method} {operation.path}: no valid request generated"
