"""Money at the boundary: currency floats outside, integer micro-units inside the ledger.

Every conversion happens here. Costs are rounded *up* to the next micro-unit before they are
settled, so the ledger's ``spent`` is never below what the platform really charged, and a budget
that holds in micro-units holds in currency too.
"""

from __future__ import annotations

import math

MICROS_PER_UNIT = 1_000_000


def to_micros(amount: float) -> int:
    """Nearest micro-unit of a currency amount (budgets, caps entered by people)."""
    if not math.isfinite(amount):
        raise ValueError(f"amount must be finite, got {amount!r}")
    return round(amount * MICROS_PER_UNIT)


def to_micros_ceil(amount: float) -> int:
    """Micro-units of a charged cost, rounded up so the ledger never under-counts spend.

    A relative slack of 1e-12 absorbs float noise (0.1 * 1e6 = 100000.00000000001) so that an
    exact cost does not round up a whole micro-unit.
    """
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"cost must be finite and >= 0, got {amount!r}")
    scaled = amount * MICROS_PER_UNIT
    return math.ceil(scaled - abs(scaled) * 1e-12)


def to_micros_floor(amount: float) -> int:
    """Micro-units of an allowance, rounded down so a cap never exceeds what was granted."""
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"allowance must be finite and >= 0, got {amount!r}")
    return math.floor(amount * MICROS_PER_UNIT)


def from_micros(micros: int) -> float:
    return micros / MICROS_PER_UNIT


def charge_micros(cost: float, grant: int) -> int:
    """What the ledger charges for a bid that cost ``cost`` on a grant of ``grant`` micro-units.

    Rounded up; but a bid that kept to its cap may pass the grant by the rounding alone, and is then
    charged the grant. A platform that overshot the cap is charged its whole cost (and alerted).
    """
    micros = to_micros_ceil(cost)
    return min(micros, grant) if to_micros_floor(cost) <= grant else micros
