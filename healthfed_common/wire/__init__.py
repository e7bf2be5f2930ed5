"""The wire protocol: typed, frozen messages and the one codec that turns them into bytes."""
