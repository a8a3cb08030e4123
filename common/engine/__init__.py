"""The decision engine: pure functions from a campaign's state and the forecasts to its bids.

No Redis, no clock, no randomness: the live fleet, the backtests and the tests call the same code.
"""

from common.engine.bidding import DEFAULT_TUNING, Tuning
from common.engine.goals import DEFAULT_GOAL_TUNING, GoalTuning, decide
from common.engine.state import CampaignState, Decision, GoalProgress, GoalStatus, NoBid, PacingState

__all__ = [
    "DEFAULT_GOAL_TUNING",
    "DEFAULT_TUNING",
    "CampaignState",
    "Decision",
    "GoalProgress",
    "GoalStatus",
    "GoalTuning",
    "NoBid",
    "PacingState",
    "Tuning",
    "decide",
]
