"""DP-SGD client work: clipping bound, noise distribution, run-time entropy, contract."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from healthfed_common.dp.accounting import SamplingSchedule
from healthfed_common.dp.client_work import (
    clip_per_example,
    dp_sgd_gradient,
    per_example_gradients,
    binary_crossentropy_per_example,
)
from healthfed_common.dp import sampling
from healthfed_common.dp.sampling import noise_seeds, poisson_dataset_factory
from tests.dp.conftest import WIDTH, keras_lr_model_fn

# Significance of every statistical test below; each is two-sided, so a correct
# implementation fails one with probability 1e-4 (a flake rate we accept; the seeds come
# from run-time entropy on purpose, so they are not fixed).
ALPHA = 1e-4


def _serialize(comp: Any) -> Any:
    import tensorflow_federated as tff

    from healthfed_common.tf_graph import GraphComputation

    return GraphComputation(tff.framework.serialize_computation(comp))


def test_per_example_gradients_are_clipped_to_the_bound() -> None:
    rng = np.random.default_rng(1)
    model = keras_lr_model_fn()
    x = tf.constant(rng.normal(scale=5.0, size=(64, WIDTH)), tf.float32)
    y = tf.constant(rng.integers(0, 2, size=(64, 1)), tf.float32)
    trainable = list(model.trainable_variables)
    grads = per_example_gradients(model, trainable, x, y, binary_crossentropy_per_example)
    assert [g.shape for g in grads] == [(64, WIDTH, 1), (64, 1)]
    # Per-example gradients equal one-example tape gradients.
    for i in (0, 17, 63):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(binary_crossentropy_per_example(y[i : i + 1], model.predict_on_batch(x[i : i + 1])))
        single = tape.gradient(loss, trainable)
        for g, s in zip(grads, single):
            np.testing.assert_allclose(g[i].numpy(), s.numpy(), rtol=1e-4, atol=1e-5)
    clip = 0.5
    norms_before = np.sqrt(sum(np.sum(g.numpy().reshape(64, -1) ** 2, axis=1) for g in grads))
    assert (norms_before > clip).sum() > 10 and (norms_before < clip).sum() > 0
    clipped = clip_per_example(grads, tf.constant(clip))
    norms = np.sqrt(sum(np.sum(c.numpy().reshape(64, -1) ** 2, axis=1) for c in clipped))
    assert np.all(norms <= clip * (1 + 1e-5))
    np.testing.assert_allclose(norms, np.minimum(norms_before, clip), rtol=1e-5)
    # Same as tensorflow-privacy's GaussianSumQuery.preprocess_record, record by record.
    from tensorflow_privacy.privacy.dp_query.gaussian_query import GaussianSumQuery

    query = GaussianSumQuery(clip, 0.0)
    params = query.derive_sample_params(query.initial_global_state())
    for i in range(64):
        expected = query.preprocess_record(params, [g[i] for g in grads])
        for c, e in zip(clipped, expected):
            np.testing.assert_allclose(c[i].numpy(), e.numpy(), rtol=1e-5, atol=1e-7)


def test_noise_free_dp_gradient_is_sum_of_clipped_over_expected_batch() -> None:
    rng = np.random.default_rng(2)
    grads = [tf.constant(rng.normal(size=(10, 3, 2)), tf.float32), tf.constant(rng.normal(size=(10, 2)), tf.float32)]
    out = dp_sgd_gradient(grads, l2_norm_clip=1.0, noise_multiplier=tf.constant(0.0), expected_batch_size=tf.constant(8.0),
                          noise_seed=tf.constant(noise_seeds(1)[0]))
    clipped = clip_per_example(grads, tf.constant(1.0))
    for o, c in zip(out, clipped):
        np.testing.assert_allclose(o.numpy(), c.numpy().sum(axis=0) / 8.0, rtol=1e-5, atol=1e-7)


def test_noise_has_the_stated_standard_deviation() -> None:
    """With zero gradients the output is pure noise / B: N(0, (sigma*C/B)^2) i.i.d. per
    coordinate. Chi-square test of the variance, t-test of the mean, KS test of normality,
    over 200 draws x 1,000 coordinates; each at ALPHA."""
    sigma, clip, expected_batch = 1.7, 0.8, 12.0
    zeros = [tf.zeros([5, 100, 10]), tf.zeros([5, 0])]
    draws = np.concatenate(
        [
            np.concatenate([t.numpy().ravel() for t in dp_sgd_gradient(
                zeros, l2_norm_clip=clip, noise_multiplier=tf.constant(sigma),
                expected_batch_size=tf.constant(expected_batch), noise_seed=tf.constant(seed),
            )])
            for seed in noise_seeds(200)
        ]
    )
    std = sigma * clip / expected_batch
    n = draws.size
    chi2 = (n - 1) * draws.var(ddof=1) / std**2
    p_var = 2 * min(stats.chi2.cdf(chi2, n - 1), stats.chi2.sf(chi2, n - 1))
    assert p_var > ALPHA, (draws.std(), std)
    assert stats.ttest_1samp(draws, 0.0).pvalue > ALPHA
    assert stats.kstest(draws / std, "norm").pvalue > ALPHA
    # And a wrong std (5% off) would have been caught at this sample size.
    chi2_wrong = (n - 1) * draws.var(ddof=1) / (1.05 * std) ** 2
    assert stats.chi2.cdf(chi2_wrong, n - 1) < ALPHA


def test_noise_is_keyed_by_the_os_entropy_seed_fed_as_data() -> None:
    """One graph, the same graph-level seed in every session (as TFF tracing or Keras may
    set): the noise is a function of the fed 128-bit seed alone -- the same seed repeats it,
    fresh `secrets` seeds change it -- so nothing in the graph or TF's process RNG decides it."""
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(1234)
        seed = tf.compat.v1.placeholder(tf.int64, [2])
        out = dp_sgd_gradient([tf.zeros([1, 50])], l2_norm_clip=1.0, noise_multiplier=tf.constant(1.0),
                              expected_batch_size=tf.constant(1.0), noise_seed=seed)
    first, second = noise_seeds(2)

    def run(value: np.ndarray) -> np.ndarray:
        with tf.compat.v1.Session(graph=graph) as session:
            return session.run(out, {seed: value})[0]

    np.testing.assert_array_equal(run(first), run(first))
    assert not np.allclose(run(first), run(second))
    assert np.std(run(first)) > 0.5  # it is noise (sigma*C/B = 1), not zeros


def test_noise_seeds_are_128_bits_from_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    seeds = noise_seeds(1000)
    assert seeds.shape == (1000, 2) and seeds.dtype == np.int64
    assert len({tuple(s) for s in seeds}) == 1000
    # The bits come from `secrets`: replacing it (only here) makes them predictable.
    monkeypatch.setattr(sampling.secrets, "token_bytes", lambda n: bytes(n))
    assert not noise_seeds(3).any()


def _round_inputs(dp_mrf: Any) -> tuple[Any, Any]:
    _, mrf, init = dp_mrf
    state = _serialize(init)()
    client_input = _serialize(mrf.prepare)(state)
    return _serialize(mrf.work), client_input


def test_work_graph_draws_new_noise_for_each_round(dp_mrf: Any) -> None:
    work, client_input = _round_inputs(dp_mrf)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, WIDTH)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    schedule = SamplingSchedule(40, 10, 1)
    # Two rounds' data over the same sample (a fixed sampling rng) and identical TF seeds:
    # only the OS-entropy noise seeds differ, and so does the noise.
    tf.random.set_seed(7)
    first = work(client_input, [poisson_dataset_factory(x, y, schedule=schedule, noise_multiplier=1.0,
                                                        rng=np.random.default_rng(5))])
    tf.random.set_seed(7)
    second_factory = poisson_dataset_factory(x, y, schedule=schedule, noise_multiplier=1.0,
                                             rng=np.random.default_rng(5))
    second = work(client_input, [second_factory])
    # outputs: dp_steps, expected_examples, non_finite, weighted update (kernel, bias), weight
    assert int(first[0]) == 4 and float(first[1]) == pytest.approx(40.0)
    assert not np.allclose(first[3], second[3], atol=1e-3)
    # A retry of the same round (the same factory) releases the same update: no second noise draw.
    again = work(client_input, [second_factory])
    np.testing.assert_allclose(second[3], again[3], rtol=1e-4, atol=1e-4)  # threaded float sums
    noiseless = poisson_dataset_factory(x, y, schedule=schedule, noise_multiplier=0.0)
    a, b = work(client_input, [noiseless]), work(client_input, [noiseless])
    np.testing.assert_allclose(a[3], b[3], rtol=1e-4, atol=1e-4)


_STATEFUL_RANDOM_OPS = {
    "RandomStandardNormal", "RandomUniform", "RandomUniformInt", "TruncatedNormal", "RandomShuffle",
    "NonDeterministicInts", "RandomGamma", "RandomPoisson", "RandomPoissonV2", "Multinomial",
    "StatefulStandardNormalV2", "StatefulUniform", "StatefulUniformInt", "StatefulUniformFullInt",
    "StatefulTruncatedNormal", "RngReadAndSkip", "RngSkip", "RandomShuffleQueueV2",
}


def _op_types(graph_def: Any) -> set[str]:
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types |= {node.op for node in function.node_def}
    return types


def test_work_graph_has_no_stateful_random_op_and_noise_is_stateless(dp_mrf: Any) -> None:
    """The DP path's only randomness is stateless ops keyed by the data-fed seed."""
    import tensorflow_federated as tff
    from tensorflow_federated.python.tensorflow_libs import serialization_utils

    _, mrf, _ = dp_mrf
    proto = tff.framework.serialize_computation(mrf.work)
    types = _op_types(serialization_utils.unpack_graph_def(proto.tensorflow.graph_def))
    assert not types & _STATEFUL_RANDOM_OPS, sorted(types & _STATEFUL_RANDOM_OPS)
    assert any(t.startswith("StatelessRandomNormal") for t in types), sorted(t for t in types if "Random" in t)


def test_work_handles_empty_poisson_batches(dp_mrf: Any) -> None:
    work, client_input = _round_inputs(dp_mrf)
    x = np.ones((5, WIDTH), np.float32)
    y = np.ones((5, 1), np.float32)
    # q = 0.2 over 25 steps: P(no empty batch) = (1 - 0.8**5)**25 ~ 1e-4, and a rng fixed
    # for the test (production sampling is never seeded).
    factory = poisson_dataset_factory(x, y, schedule=SamplingSchedule(5, 1, 5), noise_multiplier=0.0,
                                      rng=np.random.default_rng(0))
    out = work(client_input, [factory])
    assert int(out[0]) == 25 and int(out[2]) == 0
    assert np.all(np.isfinite(out[3])) and np.abs(out[3]).sum() > 0


def test_client_work_contract_matches_tff_model_delta(dp_mrf: Any) -> None:
    import tensorflow_federated as tff

    process, mrf, _ = dp_mrf
    assert isinstance(process, tff.learning.templates.LearningProcess)
    data_type = process.next.type_signature.parameter[1].member
    assert str(data_type) == (
        "<x=float32[?,13],y=float32[?,1],noise_multiplier=float32,expected_batch_size=float32,noise_seed=int64[2]>*"
    )


_FINGERPRINT_SCRIPT = """
import tensorflow_federated as tff
from tests.dp.conftest import keras_lr_model_fn
from healthfed_common.dp.process import build_dp_fed_avg
from healthfed_common.tf_graph import GraphComputation
process = build_dp_fed_avg(keras_lr_model_fn, client_optimizer=tff.learning.optimizers.build_sgdm(0.5),
                           server_optimizer=tff.learning.optimizers.build_sgdm(1.0), l2_norm_clip=1.0)
mrf = tff.backends.mapreduce.get_map_reduce_form_for_computation(process.next)
print("FINGERPRINT", GraphComputation(tff.framework.serialize_computation(mrf.work)).fingerprint)
"""


@pytest.mark.slow
def test_work_is_identical_on_every_silo() -> None:
    """Two fresh processes (as two silos) build byte-identical `work`: nothing about a
    silo's dataset size or sigma is in the graph. (Within ONE process TFF's tf.function
    name counters make a rebuild differ -- true of TFF's own FedAvg too -- so each node
    must build its MapReduceForm once per process.)"""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    runs = [
        subprocess.Popen([sys.executable, "-c", _FINGERPRINT_SCRIPT], cwd=root, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
        for _ in range(2)
    ]
    prints = []
    for run in runs:
        out, _ = run.communicate(timeout=300)
        prints.append([line.split()[1] for line in out.splitlines() if line.startswith("FINGERPRINT")])
    assert prints[0] and prints[0] == prints[1]
