from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from common.errors import SettingsError
from common.settings import Settings, load_settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CE_REDIS_URL", "CE_TICK_SECONDS", "CE_CAMPAIGNS_PER_TASK", "CE_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.redis_url is None
    assert s.tick_seconds == 2.0
    assert s.forecast_window == 30
    assert s.campaigns_per_task == 1


def test_environment_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CE_REDIS_URL", "redis://example:6380/2")
    monkeypatch.setenv("CE_TICK_SECONDS", "0.5")
    monkeypatch.setenv("CE_CAMPAIGNS_PER_TASK", "25")
    monkeypatch.setenv("CE_LOG_LEVEL", "debug")
    s = Settings()
    assert s.state_url == "redis://example:6380/2"
    assert s.broker == "redis://example:6380/2", "the broker defaults to the state store"
    assert (s.tick_seconds, s.campaigns_per_task, s.log_level) == (0.5, 25, "DEBUG")
    monkeypatch.setenv("CE_BROKER_URL", "redis://broker:6379/0")
    assert Settings().broker == "redis://broker:6379/0"


def test_a_cluster_state_store_needs_a_broker_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CE_REDIS_URL", "redis+cluster://node1:7000")
    monkeypatch.delenv("CE_BROKER_URL", raising=False)
    with pytest.raises(SettingsError, match=r"CE_BROKER_URL: .*Redis Cluster"):
        load_settings()
    monkeypatch.setenv("CE_BROKER_URL", "redis://broker:6379/0")
    s = load_settings()
    assert (s.state_url, s.broker) == ("redis+cluster://node1:7000", "redis://broker:6379/0")


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("CE_TICK_SECONDS", "0", "tick_seconds"),
        ("CE_TICK_SECONDS", "soon", "tick_seconds"),
        ("CE_CAMPAIGNS_PER_TASK", "0", "campaigns_per_task"),
        ("CE_FORECAST_WINDOW", "1", "forecast_window"),
        ("CE_LOG_LEVEL", "loud", "log_level"),
        ("CE_API_ALLOWED_HOSTS", "engine.local,http://evil.example", "api_allowed_hosts"),
        ("CE_API_MAX_BODY_BYTES", "10", "api_max_body_bytes"),
        ("CE_API_MAX_STREAMS", "0", "api_max_streams"),
    ],
)
def test_bad_values_are_refused_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert [e["loc"][0] for e in info.value.errors()] == [field]


def test_secrets_are_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CE_FLOWER_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("CE_API_TOKEN", "token-secret-value")
    s = Settings()
    assert s.flower_password.get_secret_value() == "hunter2-secret"
    assert "hunter2-secret" not in repr(s) and "token-secret-value" not in repr(s)
    assert "hunter2-secret" not in str(s.model_dump())


def test_generated_secrets_differ_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CE_API_TOKEN", raising=False)
    a, b = Settings(), Settings()
    assert len(a.api_token.get_secret_value()) >= 24
    assert a.api_token.get_secret_value() != b.api_token.get_secret_value()


def test_a_bad_value_names_its_variable_and_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CE_TICK_SECONDS", "abc")
    monkeypatch.setenv("CE_CAMPAIGNS_PER_TASK", "0")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("CE_TICK_SECONDS: Input should be a valid number") and "\n" not in message
    assert "CE_CAMPAIGNS_PER_TASK: Input should be greater than or equal to 1" in message


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        ([sys.executable, "-c", "import worker"], 1),
        ([sys.executable, "-c", "import beat"], 1),
        ([sys.executable, "-m", "celery", "-A", "worker", "worker"], 1),
        ([sys.executable, "-m", "cli.main", "up"], 2),
    ],
    ids=["import worker", "import beat", "celery worker", "cli"],
)
def test_a_bad_setting_stops_a_process_with_one_line(argv: list[str], code: int, tmp_path: Path) -> None:
    env = dict(os.environ, CE_TICK_SECONDS="abc", CE_REDIS_URL="redis://127.0.0.1:1/0", CE_RUN_DIR=str(tmp_path))
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == code, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == ["error: CE_TICK_SECONDS: Input should be a valid number, unable to parse string as a number"]


def test_token_less_reads_may_name_the_local_hosts_and_those_allowed() -> None:
    settings = Settings(api_host="10.1.2.3", api_allowed_hosts=" Engine.Example , ops.example")
    assert settings.allowed_hosts == {"localhost", "127.0.0.1", "::1", "10.1.2.3", "engine.example", "ops.example"}
