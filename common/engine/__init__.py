"""The decision engine: pure functions from a campaign's state and the forecasts to its bids.

No Redis, no clock, no randomness: the live fleet, the backtests and the tests call the same code.
"""

from common.engine.bidding import DEFAULT_TUNING, Tuning, decide
from common.engine.state import CampaignState, Decision, Goal, NoBid, PacingState

__all__ = [
    "DEFAULT_TUNING",
    "CampaignState",
    "Decision",
    "Goal",
    "NoBid",
    "PacingState",
    "Tuning",
    "decide",
]
