"""The API's outer door (api/guard.py) on a real server: refusals that come before a body is read."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import httpx2
import redis

from tests.ledger_helpers import snapshot
from tests.test_api_http import api_process

TOKEN = "guard-test-token"
LIMIT = 4096


def _raw(url: str, head: str, body_chunks: tuple[bytes, ...] = (), timeout: float = 5.0) -> tuple[int, bytes]:
    """Send a request line and headers (then body chunks) over a socket; the status and body of the answer.

    The answer is read as soon as the headers are sent: a server that refuses before reading the body
    answers while the client still holds it.
    """
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed: what it said is still in the socket
                break
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.partition(b"\r\n\r\n")[2]) < _length(reply):
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    status = int(reply.split(b" ", 2)[1])
    return status, reply.partition(b"\r\n\r\n")[2]


def _length(reply: bytes) -> int:
    for line in reply.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_bodies_and_streams_are_limited_before_they_are_read(r: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    env = dict(
        os.environ,
        CE_REDIS_URL=redis_url,
        CE_API_TOKEN=TOKEN,
        CE_API_MAX_BODY_BYTES=str(LIMIT),
        CE_API_MAX_STREAMS="2",
    )
    with api_process(env, tmp_path / "logs") as (url, _child):
        before = snapshot(r)
        post = "POST /campaigns HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json\n"
        # A huge body announced by a client without the token: refused without waiting for any of it.
        status, body = _raw(url, post + "Content-Length: 100000000\n")
        assert status == 401 and b"Authorization: Bearer" in body
        # With the token, its announced length alone refuses it.
        status, body = _raw(url, post + f"Authorization: Bearer {TOKEN}\nContent-Length: 100000000\n")
        assert status == 413 and b"CE_API_MAX_BODY_BYTES" in body
        # A chunked body has no length: it is counted as it streams in, and refused past the limit.
        chunk = b"400\r\n" + b" " * 1024 + b"\r\n"
        status, body = _raw(
            url, post + f"Authorization: Bearer {TOKEN}\nTransfer-Encoding: chunked\n", (chunk,) * 64 + (b"0\r\n\r\n",)
        )
        assert status == 413 and b"CE_API_MAX_BODY_BYTES" in body
        assert snapshot(r) == before, "no refused request wrote anything"
        # A body under the limit still reaches the route (here refused for its content, with the field).
        small = httpx2.post(f"{url}/campaigns", json={"id": "x"}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert small.status_code == 422

        # Two event streams at once, the most allowed: a third is refused until one of them closes.
        with httpx2.Client(base_url=url, timeout=10) as client:
            with (
                client.stream("GET", "/decisions/stream") as first,
                client.stream("GET", "/decisions/stream") as second,
            ):
                assert first.status_code == second.status_code == 200
                third = httpx2.get(f"{url}/decisions/stream", timeout=5)
                assert third.status_code == 503 and third.headers["retry-after"] == "5"
                assert "CE_API_MAX_STREAMS" in third.json()["detail"]
            # The server notices the closed connections within moments, and gives their places back.
            deadline = time.monotonic() + 10
            while True:
                with client.stream("GET", "/decisions/stream") as again:
                    if again.status_code == 200:
                        break
                assert time.monotonic() < deadline, "a closed stream never gave its place back"
                time.sleep(0.1)
