"""A private Redis Cluster of local nodes, for ``campaign-engine bench --cluster`` and for tests.

Starts ``size`` ``redis-server --cluster-enabled yes`` processes (each node also listens on its port
+ 10000, the cluster bus) and joins them with ``redis-cli --cluster create``, without replicas, so
the hash slots are split evenly between them.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from cli.redis_server import FsyncPolicy, RedisServer, find_redis_server
from common.errors import RedisServerError

# A cluster node's bus listens at its port + 10000: ports are picked where both are free.
BUS_PORT_OFFSET = 10_000


def find_redis_cli() -> str | None:
    """The redis-cli beside the redis-server in use, else the one on PATH; None when there is none."""
    beside = Path(find_redis_server()).parent / "redis-cli"
    return str(beside) if beside.exists() else shutil.which("redis-cli")


def _port_pair_free(port: int) -> bool:
    for p in (port, port + BUS_PORT_OFFSET):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def _cluster_ports(count: int) -> list[int]:
    """Free ports below 45536 (their bus ports must exist too), starting somewhere different each run."""
    ports: list[int] = []
    port = 21_000 + (time.monotonic_ns() // 1000) % 20_000
    while len(ports) < count:
        port += 1
        if _port_pair_free(port):
            ports.append(port)
    return ports


class LocalCluster:
    """``size`` cluster nodes on loopback, with their files under ``directory``.

    Without ``appendfsync`` the nodes keep nothing on disk; with it, each keeps an AOF with that policy.
    """

    def __init__(self, directory: Path, size: int = 3, *, appendfsync: FsyncPolicy | None = None) -> None:
        self.directory = Path(directory).resolve()
        self.size = size
        self.appendfsync = appendfsync
        self.nodes: list[RedisServer] = []

    @property
    def url(self) -> str:
        """The state URL that names this cluster (``common.redis_conn``'s cluster scheme)."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout: float = 30.0) -> LocalCluster:
        cli = find_redis_cli()
        if cli is None:
            raise RedisServerError("no redis-cli to create a cluster with")
        try:
            for port in _cluster_ports(self.size):
                directory = self.directory / f"node-{port}"
                extra = ("--cluster-enabled", "yes", "--cluster-config-file", str(directory / "nodes.conf"))
                node = RedisServer(
                    directory,
                    port=port,
                    appendonly=self.appendfsync is not None,
                    appendfsync=self.appendfsync or "everysec",
                    extra_args=extra,
                )
                self.nodes.append(node.start())
            created = subprocess.run(
                [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                 "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True, text=True, timeout=timeout, check=False,
            )  # fmt: skip
            if created.returncode != 0:
                raise RedisServerError(f"redis-cli --cluster create failed: {created.stdout[-500:]}{created.stderr}")
            self._wait_until_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ok(self, timeout: float) -> None:
        """Every node agrees the cluster is up (it takes a moment for the nodes to meet)."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            with redis.Redis(port=node.port, decode_responses=True) as client:
                while client.cluster("info")["cluster_state"] != "ok":
                    if time.monotonic() > deadline:
                        raise RedisServerError(f"cluster node {node.port} never reached cluster_state ok")
                    time.sleep(0.02)

    def stop(self) -> None:
        nodes, self.nodes = self.nodes, []
        for node in nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start() if not self.nodes else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
