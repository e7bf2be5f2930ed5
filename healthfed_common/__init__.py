"""Code both sides of a HealthFed federation need: plan schema, model registry, the TFF
learning process built from a plan, the wire protocol and the secure-aggregation math.

This package imports neither `silo_node` nor `aggregator` (checked by import-linter in the
test suite), so each role can be installed and audited on its own.
"""

__version__ = "0.1.0"
