"""The market: its model (docs/market.md's formulas), scenarios, the scenario generator and the simulated platforms."""
