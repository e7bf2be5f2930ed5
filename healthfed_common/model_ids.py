"""The model ids this build's registry holds, and the kind of data each takes, without
TensorFlow.

Why apart from `healthfed_common.models`: judging a plan (`silo-node plans show`, `plans
approve`, the node's policy check) needs only to know whether the id is registered, and
importing the Keras builders costs a hospital's data steward 10-20 s of TensorFlow start-up and
its console noise. `tests/core/test_model_ids.py` keeps this table equal to the registry.
"""

from __future__ import annotations

MODEL_KINDS: dict[str, str] = {"logistic_regression": "tabular", "mlp": "tabular", "small_cnn": "image"}
"""Model id -> `tabular` or `image`, exactly the ids of `healthfed_common.models.MODEL_REGISTRY`."""
