"""``campaign-engine chaos``: a live fleet under injected faults, and the checks of its books at the end."""

from cli.chaos.run import ChaosFailed, Plan, run_chaos

__all__ = ["ChaosFailed", "Plan", "run_chaos"]
