"""The aggregator: runs plans round by round and learns only sums of silo updates."""
