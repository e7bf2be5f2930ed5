"""Empirical privacy auditing of the silo's DP-SGD `work`: a LOWER bound on epsilon from runs.

The accountant's epsilon is an upper bound proved on paper; an audit measures what an attacker
actually achieves and so catches a guarantee that is false in the code (a data-dependent
preprocessing step, noise that is not drawn, a sensitivity larger than the clip). Method:
repeated runs with a worst-case canary (Jagielski, Ullman, Oprea 2020, "Auditing
Differentially Private Machine Learning"; Nasr et al. 2021, "Adversary Instantiation"):

1. Two neighbouring training sets of the same size (replace-one, as HealthFed accounts):
   D = base + {canary} and D' = base + {replacement}.
2. Run the real `work` graph many times on each (fresh 128-bit noise seeds and a fresh Poisson
   sample per run, from `healthfed_common.dp.sampling`, as a silo draws them).
3. Score each run's released update with the attacker's test statistic: its projection on the
   difference of the two NOISE-FREE updates (the attacker knows both datasets: worst case).
4. For each threshold of a grid fixed before looking at the audit runs (from separate
   calibration runs), Clopper-Pearson bounds on the true- and false-positive rates; by the
   definition of (epsilon, delta)-DP, P_D(S) <= e^eps P_D'(S) + delta for both S = {score > t}
   and its complement, so eps >= log((TPR_low - delta) / FPR_high) (and the complementary
   form). Bonferroni over thresholds and the two rates: the reported bound holds with the
   stated confidence.

`epsilon_lower_bound` is pure numpy/scipy; `RepeatedWork` runs a serialized MapReduceForm
`work` many times in one TF session (importing the graph per run, as `GraphComputation` does
for a silo's single call, costs ~0.5 s; the graph and its inputs are the same).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from healthfed_common.dp.accounting import SamplingSchedule


def clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """One-sided (lower, upper) Clopper-Pearson bounds, each holding with probability 1 - alpha."""
    lower = 0.0 if successes == 0 else float(stats.beta.ppf(alpha, successes, trials - successes + 1))
    upper = 1.0 if successes == trials else float(stats.beta.ppf(1 - alpha, successes + 1, trials - successes))
    return lower, upper


@dataclass(frozen=True)
class AuditResult:
    epsilon_lower_bound: float
    threshold: float
    true_positive_rate: float
    false_positive_rate: float
    runs_per_side: int
    thresholds_tried: int
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (no NaN: a threshold that proved nothing is None)."""

        def number(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "epsilon_lower_bound": self.epsilon_lower_bound,
            "best_threshold": number(self.threshold),
            "true_positive_rate": number(self.true_positive_rate),
            "false_positive_rate": number(self.false_positive_rate),
            "runs_per_side": self.runs_per_side,
            "thresholds_tried": self.thresholds_tried,
            "confidence": self.confidence,
        }


def epsilon_lower_bound(
    scores_in: NDArray[Any], scores_out: NDArray[Any], thresholds: Sequence[float], delta: float,
    confidence: float = 0.95,
) -> AuditResult:
    """The largest epsilon any threshold test on the scores proves, at `confidence` overall.

    `scores_in`: scores of runs on D (canary in), `scores_out`: on D' (replacement). The
    thresholds must not be chosen from these scores (use separate calibration runs)."""
    scores_in, scores_out = np.asarray(scores_in), np.asarray(scores_out)
    alpha = (1 - confidence) / (2 * len(thresholds))
    best = AuditResult(0.0, float("nan"), float("nan"), float("nan"), len(scores_in), len(thresholds), confidence)
    for threshold in thresholds:
        tp, fp = int((scores_in > threshold).sum()), int((scores_out > threshold).sum())
        tpr_low, _ = clopper_pearson(tp, len(scores_in), alpha)
        _, fpr_high = clopper_pearson(fp, len(scores_out), alpha)
        candidates = []
        if tpr_low - delta > 0 and fpr_high > 0:
            candidates.append(math.log((tpr_low - delta) / fpr_high))
        if (1 - fpr_high) - delta > 0 and 1 - tpr_low > 0:
            candidates.append(math.log(((1 - fpr_high) - delta) / (1 - tpr_low)))
        epsilon = max(candidates, default=0.0)
        if epsilon > best.epsilon_lower_bound:
            best = AuditResult(epsilon, float(threshold), tp / len(scores_in), fp / len(scores_out),
                               len(scores_in), len(thresholds), confidence)
    return best


class RepeatedWork:
    """One silo's `work` (a `healthfed_common.tf_graph.GraphComputation`) on one training set,
    runnable many times: the graph is imported once with the client dataset built from
    placeholders, and every run feeds a fresh Poisson sample (`poisson_step_indices`) and fresh
    noise seeds (`noise_seeds`, 128 bits of OS entropy per step) -- the same elements
    `poisson_dataset_factory` builds for a silo's round."""

    def __init__(self, work: Any, client_input: Sequence[Any], x: NDArray[Any], y: NDArray[Any],
                 schedule: SamplingSchedule, noise_multiplier: float) -> None:
        import tensorflow as tf

        from healthfed_common.tf_graph import SequenceSlot, TensorSlot, _node_name

        self._schedule = schedule
        self._graph = tf.Graph()
        self._feed: dict[Any, Any] = {}
        with self._graph.as_default():
            self._flat = tf.compat.v1.placeholder(tf.int64, [None])
            self._lengths = tf.compat.v1.placeholder(tf.int64, [None])
            self._seeds = tf.compat.v1.placeholder(tf.int64, [None, 2])
            features = tf.constant(np.asarray(x, np.float32))
            labels = tf.constant(np.asarray(y, np.float32))
            sigma = np.float32(noise_multiplier)
            expected = np.float32(schedule.expected_batch_size)

            def to_batch(indices: Any, seed: Any) -> Any:
                return collections.OrderedDict(
                    x=tf.gather(features, indices), y=tf.gather(labels, indices),
                    noise_multiplier=tf.constant(sigma), expected_batch_size=tf.constant(expected),
                    noise_seed=seed)

            ragged = tf.RaggedTensor.from_row_lengths(self._flat, self._lengths)
            dataset = tf.data.Dataset.from_tensor_slices((ragged, self._seeds)).map(to_batch)
            input_map: dict[str, Any] = {}
            values = iter(client_input)
            for slot in work.parameter_slots:
                if isinstance(slot, TensorSlot):
                    placeholder = tf.compat.v1.placeholder(slot.dtype, shape=slot.shape)
                    self._feed[placeholder] = np.asarray(next(values), dtype=slot.dtype)
                    input_map[slot.tensor_name] = placeholder
                elif isinstance(slot, SequenceSlot):
                    input_map[slot.variant_tensor_name] = tf.data.experimental.to_variant(dataset)
            for name, tensor in list(input_map.items()):
                input_map["^" + _node_name(name)] = "^" + tensor.op.name
            if work._session_token:
                input_map[work._session_token] = tf.constant("healthfed")
            elements = list(work._result_names) + ([work._initialize_op] if work._initialize_op else [])
            imported = tf.graph_util.import_graph_def(work._graph_def, input_map=input_map,
                                                      return_elements=elements, name="c")
        init = imported.pop() if work._initialize_op else None
        self._outputs = imported
        self._session = tf.compat.v1.Session(graph=self._graph)
        if init is not None:
            # Once per session: it initialises the graph's variables, and every `work` run
            # assigns the round's initial weights to them first (client_update), so a
            # second run starts exactly where a fresh session would (tests check it).
            self._session.run(init, feed_dict=self._initial_feed())

    def _initial_feed(self) -> dict[Any, Any]:
        from healthfed_common.dp.sampling import noise_seeds, poisson_step_indices

        steps = poisson_step_indices(self._schedule)
        feed = dict(self._feed)
        feed[self._flat] = np.concatenate(steps) if steps else np.zeros([0], np.int64)
        feed[self._lengths] = np.array([len(s) for s in steps], np.int64)
        feed[self._seeds] = noise_seeds(len(steps))
        return feed

    def run(self) -> list[NDArray[Any]]:
        """One round of `work` with a fresh Poisson sample and fresh noise seeds: the outputs
        a silo's call would return."""
        return [np.asarray(r) for r in self._session.run(self._outputs, feed_dict=self._initial_feed())]

    def close(self) -> None:
        self._session.close()


def update_vector(outputs: Sequence[NDArray[Any]]) -> NDArray[Any]:
    """The released model update of a `work` call, flattened: the non-scalar outputs (the
    weighted trainable deltas); the scalars are public counts."""
    return np.concatenate([np.ravel(o).astype(np.float64) for o in outputs if np.ndim(o) >= 1])
