"""A second host on this machine: a network namespace joined to the host by a veth pair.

Workers started with ``ip netns exec <ns>`` have their own network stack and reach Redis over the
pair, at the host side's address, as a worker on another machine reaches it over the network.
Setting the host side's link down cuts them off: their packets are dropped, no connection is reset,
and their Redis calls hang as they would behind a failed switch, while the workers on the host carry
on. Setting it up again heals the cut.

Needs root (``ip netns add``, ``ip link``). ``available`` tells why not when it cannot be set up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

SUBNET = "10.231.{n}"


class NetnsUnavailable(Exception):
    """The namespace cannot be created here; the message says why."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetnsUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")


@dataclass
class Host:
    """A namespace ``name`` whose address is ``address``; the host side is ``host_address`` on ``host_dev``."""

    name: str
    index: int

    @property
    def host_dev(self) -> str:
        return f"ce{self.index}h"

    @property
    def ns_dev(self) -> str:
        return f"ce{self.index}n"

    @property
    def host_address(self) -> str:
        return SUBNET.format(n=self.index) + ".1"

    @property
    def address(self) -> str:
        return SUBNET.format(n=self.index) + ".2"

    def create(self) -> Host:
        self.destroy()
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.host_dev, "type", "veth", "peer", "name", self.ns_dev, "netns", self.name)
            _ip("addr", "add", f"{self.host_address}/24", "dev", self.host_dev)
            _ip("link", "set", self.host_dev, "up")
            _ip("-n", self.name, "addr", "add", f"{self.address}/24", "dev", self.ns_dev)
            _ip("-n", self.name, "link", "set", self.ns_dev, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except NetnsUnavailable:
            self.destroy()
            raise
        return self

    def argv(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: the pid stays the same)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        _ip("link", "set", self.host_dev, "down")

    def heal(self) -> None:
        _ip("link", "set", self.host_dev, "up")

    def destroy(self) -> None:
        # Deleting one end of a veth pair deletes both; a missing namespace or link is fine.
        for args in (["link", "del", self.host_dev], ["netns", "del", self.name]):
            subprocess.run(["ip", *args], capture_output=True, check=False)


def available() -> str | None:
    """None when a namespace can be made here, else why not."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if os.geteuid() != 0:
        return "not root: network namespaces need CAP_NET_ADMIN"
    probe = Host(f"ce-probe-{os.getpid()}", 250)
    try:
        probe.create()
    except NetnsUnavailable as exc:
        return str(exc)
    finally:
        probe.destroy()
    return None
