"""Record-level differential privacy for HealthFed silos.

`accounting` turns a plan's (epsilon, delta) target and a silo's dataset size into a noise
multiplier and the exact `dp_accounting.DpEvent` of each round; `sampling` builds the
Poisson-sampled per-step batches that event assumes; `client_work` is the DP-SGD
`ClientWorkProcess` compiled into the MapReduceForm's `work`.

Importing this package imports neither TensorFlow Federated nor TensorFlow (the modules that
need them import them lazily), so the silo's ledger can use the accounting alone.
"""

from healthfed_common.dp.errors import CalibrationFailed, DPError, InvalidDpEvent

__all__ = ["CalibrationFailed", "DPError", "InvalidDpEvent"]
