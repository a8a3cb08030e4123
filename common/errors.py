"""One exception tree for the whole engine.

Adapters translate Redis and broker failures at the boundary (``raise StoreUnavailable(...) from e``),
so callers only ever catch ``CampaignEngineError`` subclasses.
"""

from __future__ import annotations

from typing import Any


class CampaignEngineError(Exception):
    """Root of every error the engine raises on purpose."""


class InvalidInput(CampaignEngineError):
    """Input that was refused; nothing was written.

    ``errors`` lists ``(field, reason)`` pairs so that an HTTP layer or the command line can say
    exactly what is wrong without showing a stack trace.
    """

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{field}: {reason}" for field, reason in errors))

    @classmethod
    def one(cls, field: str, reason: str) -> InvalidInput:
        return cls([(field, reason)])

    @classmethod
    def from_pydantic(cls, exc: Any, prefix: str = "") -> InvalidInput:
        """Translate a ``pydantic.ValidationError`` into field/reason pairs."""
        errors = []
        for err in exc.errors():
            loc = ".".join(str(part) for part in err.get("loc", ()))
            reason = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            if not loc:
                # Checks across fields say which field they blame as "field: reason".
                field, sep, rest = reason.partition(": ")
                loc, reason = (field, rest) if sep and field.isidentifier() else ("input", reason)
            errors.append((f"{prefix}{loc}", reason))
        return cls(errors)


class NotFound(CampaignEngineError):
    """The named object does not exist."""


class Conflict(CampaignEngineError):
    """The request contradicts the current state (for example, creating an id that exists).

    ``errors`` lists the ``(field, reason)`` pairs to blame, when the conflict lies in one field.
    """

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None) -> None:
        self.errors = errors or []
        super().__init__(message)

    @classmethod
    def one(cls, field: str, reason: str) -> Conflict:
        return cls(f"{field}: {reason}", [(field, reason)])


class StoreUnavailable(CampaignEngineError):
    """Redis cannot serve now (unreachable, loading, read-only, out of memory); a later call may succeed.

    Decided in one place, ``common.redis_conn``.
    """


class SettingsError(CampaignEngineError):
    """A setting is missing or invalid, or contradicts the fleet's; the message names the variable."""


class RedisServerError(CampaignEngineError):
    """The embedded redis-server could not be found, or did not start."""


class BacktestError(CampaignEngineError):
    """A backtest cannot run: its database is not fresh, or its workers did not finish a tick."""


class LedgerError(CampaignEngineError):
    """A budget movement was refused; the ledger is unchanged.

    ``reason`` is the refusal without the campaign and tick it concerns, when a script gave one.
    """

    reason: str = ""


class LedgerFault(LedgerError):
    """One call of a batch failed inside Redis (a key of the wrong type, a script error): damaged data
    or a bug, confined to that call's campaign. Nothing of that call is known to have been written."""


class PlatformError(CampaignEngineError):
    """A platform's submit failed; whether its bids reached the platform is not known.

    The grants of such bids stay submitted, and the sweeper charges them in full unless a settle
    arrives: a platform may have spent them.
    """


class BidsNotPlaced(PlatformError):
    """A platform refused a submit before any of its bids were placed: nothing was spent on it."""


class PlatformTimeout(PlatformError):
    """A platform did not answer a submit in time; its bids may have been placed."""
