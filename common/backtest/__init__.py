"""Backtests: scenarios through the fleet's path, the hindsight optimum and the Pareto sweep."""
