"""The fleet's side of the domain: the tick, the evaluation, the campaign store, feed, clock and metrics in Redis."""
