"""How the server's weighted mean weighs each silo's update (plan `algorithm.client_weighting`).

Why a choice at all: FedAvg's textbook weight, the silo's examples, makes the federation
minimise the pooled loss, where a hospital of 199 training records outweighs one of 30 more
than six to one. Weighting by the square root of the examples counts small hospitals for more
than their size and large ones for less (each record of a hospital of n counts 1/sqrt(n) as
much as under `examples`), which is what the Fed-Heart-Disease ceiling benchmark found to help
on validation records (`pipelines/fed_heart_disease_ceiling.py`). `uniform` counts every silo
alike.

Every weight is a function of the number of examples the silo processed this round (under
DP-SGD the EXPECTED number, which depends on the dataset's size only). The dataset's size is
metadata every plan releases (the privacy statement says so), so no weighting reveals
anything the example count does not.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

ClientWeighting = Literal["examples", "sqrt_examples", "uniform"]
CLIENT_WEIGHTINGS: tuple[str, ...] = get_args(ClientWeighting)
DEFAULT_CLIENT_WEIGHTING: ClientWeighting = "examples"


def client_weight(examples: Any, weighting: str) -> Any:
    """A silo's update weight (float32 tensor) from the examples it processed this round.
    `examples` weighting returns the count itself (cast), so its graph is what it was before
    the option existed."""
    import tensorflow as tf

    count = tf.cast(examples, tf.float32)
    if weighting == "examples":
        return count
    if weighting == "sqrt_examples":
        return tf.sqrt(count)
    if weighting == "uniform":
        return tf.where(count > 0, tf.constant(1.0), tf.constant(0.0))
    raise ValueError(f"client_weighting must be one of {CLIENT_WEIGHTINGS}, got {weighting!r}")


def max_client_weight(max_examples: float, weighting: str) -> float:
    """The largest weight a silo of at most `max_examples` examples per round can send: the
    upper bound of the weight's secure sum (a tighter bound quantizes the sum more finely)."""
    if weighting == "examples":
        return float(max_examples)
    if weighting == "sqrt_examples":
        return math.sqrt(max_examples)
    if weighting == "uniform":
        return 1.0
    raise ValueError(f"client_weighting must be one of {CLIENT_WEIGHTINGS}, got {weighting!r}")
