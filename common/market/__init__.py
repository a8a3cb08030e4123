"""The market: its model (MARKET.md's formulas), scenarios, the scenario generator and the simulated platforms."""
