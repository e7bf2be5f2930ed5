"""How far apart two benchmark figures are, given the spread over the seeds they were measured on.

Why: a benchmark bar such as "the federated model >= the pooled reference" compares two means
of five seeds each. When the seed-to-seed spread is larger than the gap, "met" and "missed" are
decided by which seeds were drawn, and a reader of `met: false` cannot tell a real shortfall
from a tie. The figures here are reported BESIDE such a bar, never instead of it: the bar keeps
its own `met`.

- Paired (the same seed value on both sides, e.g. a federated run and the pooled reference
  given the same plan seed): the interval of the mean per-seed difference, Student t with n - 1
  degrees of freedom. Pairing is valid whether or not the two sides are correlated through the
  seed; it narrows the interval only when they are.
- Unpaired (e.g. a DP run, whose noise comes from OS entropy, against the pooled reference):
  Welch's interval for the difference of the two means (Welch-Satterthwaite degrees of freedom).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

CONFIDENCE = 0.95


def difference_interval(left: ArrayLike, right: ArrayLike, *, paired: bool,
                        confidence: float = CONFIDENCE) -> dict[str, Any]:
    """`mean(left) - mean(right)` with its `confidence` interval over the seeds (see the module
    docstring). Needs at least two values per side (and as many on both sides when paired)."""
    a = np.asarray(left, dtype=float)
    b = np.asarray(right, dtype=float)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError(f"an interval needs finite figures, got {a.tolist()} and {b.tolist()}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"an interval needs at least two seeds per side, got {len(a)} and {len(b)}")
    if paired and len(a) != len(b):
        raise ValueError(f"a paired difference needs the same seeds on both sides, got {len(a)} and {len(b)}")
    if paired:
        differences = a - b
        centre = float(differences.mean())
        standard_error = float(differences.std(ddof=1) / np.sqrt(len(differences)))
        degrees = float(len(differences) - 1)
    else:
        centre = float(a.mean() - b.mean())
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        standard_error = float(np.sqrt(va + vb))
        # Welch-Satterthwaite; with no spread on either side the width is 0 whatever the degrees
        degrees = float((va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))) if va + vb > 0 else 1.0
    half = float(stats.t.ppf(0.5 + confidence / 2, degrees)) * standard_error
    low, high = round(centre - half, 4) + 0.0, round(centre + half, 4) + 0.0  # + 0.0: never -0.0
    out: dict[str, Any] = {
        "difference": round(centre, 4),
        "interval": [low, high],
        "confidence": confidence,
        "method": ("paired: Student t over the per-seed differences" if paired
                   else "unpaired: Welch's t interval for the difference of the means"),
        "seeds": [len(a), len(b)] if not paired else len(a),
    }
    if paired:
        out["per_seed_differences"] = [round(float(d), 4) for d in a - b]
        out["seeds_left_ge_right"] = int(np.sum(a >= b))
    # Read off the rounded bounds a reader sees, so float noise never reads as a finding; with no
    # spread at all there is no interval to read.
    if round(standard_error, 6) == 0:
        out["reads"] = "no spread over the seeds: no interval can be drawn, only the difference"
    elif low <= 0 <= high:
        out["reads"] = "no difference shown at this confidence: the interval holds 0"
    else:
        out["reads"] = ("left above right" if low > 0 else "left below right") + " at this confidence"
    return out


def shown(interval: dict[str, Any]) -> str:
    """`difference_interval`'s result as one reads it in a table: `+0.0046 [-0.0113, +0.0205]`."""
    low, high = interval["interval"]
    return f"{interval['difference']:+.4f} [{low:+.4f}, {high:+.4f}]"
