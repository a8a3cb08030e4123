"""The ledger's Lua scripts: read from ``lua/*.lua``, registered once per client, run one or many.

Redis scripts cannot import, so the helpers they share (argument checks, ``fail``, ``fmt``) live in
``lua/prelude.lua`` and are put in front of each script's own text.

Single calls go through redis-py's ``Script``, which loads a script the server does not know
(NOSCRIPT, e.g. after a restart) and calls it again. Batches do not: redis-py's pipeline sends
``SCRIPT EXISTS`` before every execute (one more round trip per batch) and a cluster pipeline does
not handle NOSCRIPT at all. So ``run_many`` sends EVALSHA directly and, only for the replies that
are NOSCRIPT, loads the script and sends those calls again. That is safe: a NOSCRIPT call ran nothing.

EVALSHA goes through ``execute_command`` because redis-py's ``ClusterPipeline.evalsha`` refuses to
queue it for no documented reason (redis/redis-py#2914); routing by the first key works as for EVAL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, TypeAlias

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError

Client: TypeAlias = "redis.Redis | RedisCluster"

NAMES = ("open", "reserve", "submit", "reserve_submit", "settle", "release", "adjust", "compact")

# Scripts that run other scripts of the ledger, one after the other, in one call. Each part's text
# becomes a local function whose parameters KEYS and ARGV shadow the call's, so that the joining
# file passes each part its own keys and arguments, and a part's `return` ends only that part.
PARTS = {"reserve_submit": ("reserve", "submit")}

# A server that loses its scripts twice within one batch is restarting in a loop; give up then.
_NOSCRIPT_ATTEMPTS = 3


def _read(name: str, package: str = __package__) -> str:
    return resources.files(package).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


@cache
def source(name: str, package: str = __package__) -> str:
    """The script Redis runs: ``lua/prelude.lua`` followed by ``lua/<name>.lua`` (of ``package``'s folder,
    for a script outside the ledger that moves money the ledger's way, such as the store's ``create``),
    with the ``PARTS`` it runs between them."""
    parts = PARTS.get(name, ()) if package == __package__ else ()
    functions = "".join(f"local function {part}(KEYS, ARGV)\n{_read(part)}\nend\n\n" for part in parts)
    return _read("prelude") + "\n" + functions + _read(name, package)


@dataclass(frozen=True, slots=True)
class Call:
    """One script call: which script, its KEYS and its ARGV."""

    script: str
    keys: tuple[str, ...]
    args: tuple[str, ...]


class Scripts:
    def __init__(self, client: Client) -> None:
        self.client = client
        self._scripts: dict[str, Script] = {name: client.register_script(source(name)) for name in NAMES}

    def run(self, call: Call) -> Any:
        return self._scripts[call.script](keys=call.keys, args=call.args)

    def run_many(self, calls: Sequence[Call]) -> list[Any]:
        """Replies in order, in one round trip; an error reply is returned as its exception."""
        results = self._send(calls)
        for _ in range(_NOSCRIPT_ATTEMPTS):
            missing = [i for i, reply in enumerate(results) if isinstance(reply, NoScriptError)]
            if not missing:
                break
            for name in sorted({calls[i].script for i in missing}):
                script = self._scripts[name]
                script.sha = self.client.script_load(script.script)
            for i, reply in zip(missing, self._send([calls[i] for i in missing]), strict=True):
                results[i] = reply
        return results

    def _send(self, calls: Sequence[Call]) -> list[Any]:
        if not calls:
            return []
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            pipe.execute_command("EVALSHA", self._scripts[call.script].sha, len(call.keys), *call.keys, *call.args)
        return list(pipe.execute(raise_on_error=False))
