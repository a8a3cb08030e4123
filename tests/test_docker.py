"""The deployment files: the compose file and Prometheus config are valid, and what they reference exists.

No docker engine is needed: ``docker compose config`` (or the older ``docker-compose``) only reads the
file, and ``promtool`` checks the Prometheus config and alert rules.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from api.app import create_app
from common import keys
from common.fleet import stats
from common.fleet.stats import TickStats
from common.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
SECRETS = {
    "CE_API_TOKEN": "t0ken",
    "CE_FLOWER_PASSWORD": "fl0wer",
    "CE_REDIS_PASSWORD": "r3dis",
    "GF_ADMIN_PASSWORD": "gr4fana",
}
SERVICES = {"redis", "broker", "worker", "beat", "flower", "api", "prometheus", "grafana"}


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    pytest.skip("neither `docker compose` nor `docker-compose` is installed (.ci/run installs docker-compose)")


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CE_", "GF_"))}
    return subprocess.run(
        [*compose_command(), "-f", str(DOCKER / "compose.yaml"), "config"],
        capture_output=True, text=True, env={**clean, **env}, cwd=ROOT, check=False,
    )  # fmt: skip


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package prometheus; .ci/run installs it)")
    return path


def test_compose_file_is_valid_and_complete() -> None:
    done = compose_config(SECRETS)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    services = config["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--appendfsync always" in redis_cmd
    assert any(str(v).endswith(":/data") or "/data" in str(v) for v in services["redis"]["volumes"])
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]
    # The broker holds no money: no append-only file to fsync on every publish.
    broker_cmd = " ".join(services["broker"]["command"])
    assert "--appendonly no" in broker_cmd and "volumes" not in services["broker"]
    assert "inspect ping" in " ".join(services["worker"]["healthcheck"]["test"])
    # Workers scale with --scale worker=N: no fixed name, no host port.
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]
    assert services["beat"].get("deploy", {}).get("replicas") == 1
    for name in ("worker", "beat", "flower", "api"):
        assert services[name]["environment"]["CE_REDIS_URL"] == "redis://:r3dis@redis:6379/0"
        assert services[name]["environment"]["CE_BROKER_URL"] == "redis://:r3dis@broker:6379/0"
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile"
    assert services["api"]["environment"]["CE_API_TOKEN"] == SECRETS["CE_API_TOKEN"]
    # Both Redis servers require the password, and no secret is written on a command line.
    for name in ("redis", "broker"):
        assert "requirepass" in " ".join(services[name]["command"]), name
        assert services[name]["environment"]["REDISCLI_AUTH"] == "r3dis", "the health check's redis-cli logs in"
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] == "admin:fl0wer"
    for name, service in services.items():
        command = " ".join(service.get("command") or [])
        for secret in SECRETS.values():
            assert secret not in command, f"{name}: a secret on the command line"


@pytest.mark.parametrize("secret", ["CE_API_TOKEN", "CE_REDIS_PASSWORD", "CE_FLOWER_PASSWORD"])
def test_compose_refuses_to_run_without_each_secret(secret: str) -> None:
    done = compose_config({k: v for k, v in SECRETS.items() if k != secret})
    assert done.returncode != 0
    assert secret in done.stdout + done.stderr


def test_prometheus_config_and_alert_rules_are_valid() -> None:
    tool = promtool()
    for args in (["check", "config", str(DOCKER / "prometheus.yml")], ["check", "rules", str(DOCKER / "alerts.yml")]):
        done = subprocess.run([tool, *args], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert "api:8000" in targets


def _exported_names(r: redis.Redis, redis_url: str) -> set[str]:
    """Every sample name the API exposes once the fleet has some history."""
    r.hset(keys.METRICS_FORECAST_ERROR, mapping={"search:cpc:sum": 0.1, "search:cpc:count": 1, "search:cpc:last": 0.1})
    r.hset(keys.CLOCK, mapping={"epoch": repr(time.time() - 10), "tick_seconds": "2.0"})
    r.set(keys.LAST_TICK, 4)
    stats.append(r, TickStats(tick=3, fanned=1, evaluated=1), 1_000)
    with TestClient(
        create_app(Settings(redis_url=redis_url)), client=("127.0.0.1", 1), base_url="http://127.0.0.1"
    ) as client:
        text = client.get("/metrics").text
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_grafana_and_alerts_use_only_exported_metrics(r: redis.Redis, redis_url: str) -> None:
    exported = _exported_names(r, redis_url)
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "campaign-engine.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    rules = yaml.safe_load((DOCKER / "alerts.yml").read_text())
    exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = {name for expr in exprs for name in re.findall(r"\bce_[a-z_]+", expr)}
    assert used and used <= exported, sorted(used - exported)
    datasource = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {uid}


def test_dockerfile_runs_unprivileged_from_a_slim_base() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM python:[\d.]+-slim\b", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "PYTHONUNBUFFERED=1" in text
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    for source in re.findall(r"^COPY\s+(\S+)\s", text, re.M):
        if source != "--from":
            assert (ROOT / source).exists(), source
            assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} is left out of the build context"


def test_container_health_check_of_ticks(r: redis.Redis, redis_url: str) -> None:
    env = {**os.environ, "CE_REDIS_URL": redis_url}

    def check(*args: str) -> int:
        return subprocess.run([sys.executable, str(DOCKER / "healthcheck.py"), *args], env=env, cwd=ROOT,
                              capture_output=True, check=False).returncode  # fmt: skip

    assert check("ticks") == 0, "a fleet that has not ticked yet is starting"
    r.hset(keys.CLOCK, mapping={"epoch": repr(time.time() - 100), "tick_seconds": "2.0"})
    r.set(keys.LAST_TICK, 49)
    assert check("ticks") == 0
    r.set(keys.LAST_TICK, 10)
    assert check("ticks") == 1, "the last tick is 78 s old"
    assert check("http", "http://127.0.0.1:9/") == 1
    assert check("nonsense") == 2
