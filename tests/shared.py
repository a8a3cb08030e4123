"""Access to the project's shared contract files (scenarios, the independent scorer)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


def scenario_path(name: str) -> Path:
    path = SHARED / "scenarios" / f"{name}.json"
    if not path.exists():
        pytest.skip(f"shared scenario {path} is not present")
    return path


def scorer() -> ModuleType:
    path = SHARED / "tools" / "score.py"
    if not path.exists():
        pytest.skip(f"the independent scorer {path} is not present")
    spec = importlib.util.spec_from_file_location("shared_score", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
