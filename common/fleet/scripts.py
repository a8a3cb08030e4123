"""The fleet's own Lua scripts (``lua/*.lua``), sent by their SHA on a caller's pipeline.

A script sent with ``EVAL`` carries its whole text in every call, which Redis hashes every time; with
``EVALSHA`` a call carries 40 characters. A server that does not know the script (a fresh or
restarted one) answers NOSCRIPT, which ran nothing: ``rerun_missing`` loads the script and sends
those calls again, as ``common/ledger/scripts.py`` does for the ledger's. The calls are queued with
``execute_command`` because redis-py's ``ClusterPipeline.evalsha`` refuses to queue (its cluster
pipeline routes the command by its first key, which every script here keeps in the campaign's slot).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

from common.redis_conn import Client, execute_each

# A server that loses its scripts again while they are sent again is restarting in a loop: give up then.
_NOSCRIPT_ATTEMPTS = 3

Call = tuple[Sequence[str], Sequence[Any]]


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str

    def queue(self, pipe: Any, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Queue one call on ``pipe``; its reply is the script's, or NOSCRIPT (see ``rerun_missing``)."""
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)

    def rerun_missing(self, client: Client, calls: Sequence[Call], replies: list[Any]) -> list[Any]:
        """``replies`` (of ``calls``, in order) with each NOSCRIPT one replaced by the reply of the call
        sent again once the script is loaded; through ``client``, so the calls must be safe to repeat."""
        for _ in range(_NOSCRIPT_ATTEMPTS):
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if not missing:
                break
            client.script_load(self.source)
            pipe = client.pipeline(transaction=False)
            for i in missing:
                self.queue(pipe, *calls[i])
            for i, reply in zip(missing, execute_each(pipe), strict=True):
                replies[i] = reply
        return replies


@cache
def script(name: str) -> Script:
    """The script ``lua/<name>.lua``, read once per process."""
    source = resources.files(__package__).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    return Script(name, source, hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest())
