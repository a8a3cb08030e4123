"""The example scenarios in ``scenarios/``, the project's scorer, and the reference scorer where present.

A checkout beside the market's reference files (``../shared``: the specification's original scorer)
also checks that the project's scorer agrees with it; without them those few checks are skipped.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from common.backtest.score import score_files

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "scenarios"
SHARED = REPO.parent / "shared"


def scenario_path(name: str) -> Path:
    """One of the example scenarios in ``scenarios/`` (``campaign-engine scenario generate``)."""
    return SCENARIOS / f"{name}.json"


def score(scenario: Path, decisions: Path) -> dict[str, Any]:
    """The report of ``campaign-engine score SCENARIO DECISIONS``."""
    return score_files(scenario, decisions).report()


def reference_scorer() -> ModuleType:
    """The reference scorer ``../shared/tools/score.py``; the test is skipped where it is absent."""
    path = SHARED / "tools" / "score.py"
    if not path.exists():
        pytest.skip(f"the reference scorer {path} is not present")
    spec = importlib.util.spec_from_file_location("reference_score", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
