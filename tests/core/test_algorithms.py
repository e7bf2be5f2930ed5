"""Algorithms a coordinator picks in the plan (issue 16 item 1): FedProx and per-hospital
personalisation by local fine-tuning.

What is checked, and against what attack or mistake:
- a plan that omits `algorithm`/`personalization` keeps the hash it had before the fields
  existed (approvals, ledger entries and cache entries stay bound to it);
- FedProx's proximal gradient is added after DP-SGD's per-example clipping and noise: the
  noise draw, the clipping (the sensitivity) and the privacy accounting are identical with and
  without mu, and the term is the same whatever the records are;
- mu = 0 gives exactly FedAvg's update, and a large mu pulls the update towards the global
  model (through the DP client work, and through the real plan-built computations the silo and
  aggregator run, with and without DP);
- personalisation: a real silo (tests.adversary.harness) fine-tunes and releases only
  metrics; nothing weight-shaped leaves (the egress record and the released payload are
  checked); DP plans cannot ask for it;
- personalisation with a local choice of epochs: the silo picks on a stratified holdout of
  its own training records (never its test records), 0 keeps the global model, the count it
  picked is released and every candidate's weights stay in the silo; a fixed-epochs plan keeps
  its hash.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from healthfed_common import __version__
from healthfed_common.canonical_json import canonical_json, sha256_hex
from healthfed_common.errors import PlanInvalid
from healthfed_common.plan import Plan, parse_plan

BASE_PLAN: dict[str, Any] = {
    "name": "algorithms",
    "dataset": "toy",
    "model": {"id": "logistic_regression"},
    "features": [{"name": f"f{i}", "transform": "identity"} for i in range(4)],
    "label": {"name": "outcome"},
    "client_optimizer": {"name": "sgd", "learning_rate": 0.5},
    "local_epochs": 3,
    "batch_size": 8,
    "rounds": 2,
    "min_silos_per_round": 1,
    "seeds": {"model_init": 3, "data_order": 4},
}
DP = {"target_epsilon": 3.0, "target_delta": 1e-5}


def _plan(**changes: Any) -> Plan:
    return parse_plan({**BASE_PLAN, **changes})


# -- the plan schema -------------------------------------------------------------------------
def test_plans_that_omit_the_new_fields_keep_their_hash() -> None:
    """The hash of a plan without `algorithm`/`personalization` is the hash of exactly the
    document it was before the fields existed (canonical JSON of the other fields)."""
    for changes in ({}, {"dp": DP}):
        plan = _plan(**changes)
        before = {k: v for k, v in plan.model_dump(mode="json").items()
                  if k not in ("algorithm", "personalization", "preprocessing")}
        assert plan.canonical_bytes() == canonical_json(before)
        assert plan.plan_hash == sha256_hex(canonical_json(before) + b"\n" + __version__.encode())
        # stating the default explicitly is the same plan
        assert _plan(**changes, algorithm={"name": "fedavg"}).plan_hash == plan.plan_hash


def test_public_bounds_preprocessing_is_bound_into_the_hash_and_the_default_is_not() -> None:
    """`preprocessing` left out keeps every existing plan's hash; asking for public_bounds
    changes the plan (and its hash); a DP plan cannot ask for the training statistics."""
    plain, dp = _plan(), _plan(dp=DP)
    assert "preprocessing" not in json.loads(plain.canonical_bytes())
    assert not plain.uses_public_bounds and dp.uses_public_bounds
    public = _plan(preprocessing="public_bounds")
    assert public.uses_public_bounds and public.dp is None
    assert public.plan_hash != plain.plan_hash and parse_plan(public.canonical_bytes()) == public
    assert json.loads(public.canonical_bytes())["preprocessing"] == "public_bounds"
    assert _plan(dp=DP, preprocessing="public_bounds").uses_public_bounds
    with pytest.raises(PlanInvalid, match="train_statistics is not allowed with dp"):
        _plan(dp=DP, preprocessing="train_statistics")


def test_fedprox_and_personalization_are_bound_into_the_hash_and_round_trip() -> None:
    fedavg = _plan()
    prox = _plan(algorithm={"name": "fedprox", "mu": 0.1})
    stronger = _plan(algorithm={"name": "fedprox", "mu": 0.2})
    personal = _plan(personalization={"local_epochs": 5})
    assert len({fedavg.plan_hash, prox.plan_hash, stronger.plan_hash, personal.plan_hash}) == 4
    for plan in (prox, personal):
        assert parse_plan(plan.canonical_bytes()) == plan
    assert json.loads(prox.canonical_bytes())["algorithm"] == {"name": "fedprox", "mu": 0.1}
    assert prox.algorithm.proximal_strength == 0.1 and fedavg.algorithm.proximal_strength is None


def test_a_local_choice_of_fine_tuning_epochs_is_bound_into_the_hash_and_fixed_epochs_keep_theirs() -> None:
    fixed = _plan(personalization={"local_epochs": 5})
    assert json.loads(fixed.canonical_bytes())["personalization"] == {"method": "local_fine_tuning", "local_epochs": 5}
    chosen = _plan(personalization={"local_epochs_choices": [0, 1, 3]})
    other = _plan(personalization={"local_epochs_choices": [0, 1, 3], "holdout_fraction": 0.3})
    assert json.loads(chosen.canonical_bytes())["personalization"] == {
        "method": "local_fine_tuning", "local_epochs_choices": [0, 1, 3], "holdout_fraction": 0.25}
    assert len({fixed.plan_hash, chosen.plan_hash, other.plan_hash}) == 3
    for plan in (fixed, chosen, other):
        assert parse_plan(plan.canonical_bytes()) == plan


def test_a_cross_validated_choice_is_bound_into_the_hash_and_one_holdout_keeps_its_hash() -> None:
    """`choice_folds` 1 (the default) leaves the canonical plan as it was before the key
    existed; k folds are hashed, replace the holdout share (which then means nothing), and
    round-trip."""
    single = _plan(personalization={"local_epochs_choices": [0, 1, 3]})
    assert _plan(personalization={"local_epochs_choices": [0, 1, 3], "choice_folds": 1}).plan_hash == single.plan_hash
    four = _plan(personalization={"local_epochs_choices": [0, 1, 3], "choice_folds": 4})
    five = _plan(personalization={"local_epochs_choices": [0, 1, 3], "choice_folds": 5})
    assert json.loads(four.canonical_bytes())["personalization"] == {
        "method": "local_fine_tuning", "local_epochs_choices": [0, 1, 3], "choice_folds": 4}
    assert len({single.plan_hash, four.plan_hash, five.plan_hash}) == 3
    for plan in (four, five):
        assert parse_plan(plan.canonical_bytes()) == plan
    assert four.personalization is not None and "4-fold cross-validation" in four.personalization.describe()


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"algorithm": {"name": "fedprox"}}, "fedprox needs mu"),
        ({"algorithm": {"name": "fedavg", "mu": 0.5}}, "mu is only for fedprox"),
        ({"algorithm": {"name": "fedprox", "mu": -1.0}}, "algorithm.mu"),
        ({"algorithm": {"name": "scaffold"}}, "algorithm.name"),
        ({"personalization": {"local_epochs": 0}}, "personalization.local_epochs"),
        ({"personalization": {"local_epochs": 2}, "dp": DP}, "personalization is only for plans without dp"),
        ({"personalization": {}}, "give exactly one of local_epochs"),
        ({"personalization": {"local_epochs": 2, "local_epochs_choices": [0, 2]}}, "give exactly one of local_epochs"),
        ({"personalization": {"local_epochs_choices": [0, 3, 3]}}, "lists an epoch count twice"),
        ({"personalization": {"local_epochs_choices": [3, 1, 0]}}, "in increasing order"),
        ({"personalization": {"local_epochs_choices": [3]}}, "personalization.local_epochs_choices"),
        ({"personalization": {"local_epochs_choices": [0, -1]}}, "personalization.local_epochs_choices"),
        ({"personalization": {"local_epochs_choices": [0, 3], "holdout_fraction": 0.9}}, "holdout_fraction"),
        ({"personalization": {"local_epochs": 2, "holdout_fraction": 0.3}}, "holdout_fraction is only for"),
        ({"personalization": {"local_epochs": 2, "choice_folds": 4}}, "choice_folds is only for"),
        ({"personalization": {"local_epochs_choices": [0, 2], "choice_folds": 4, "holdout_fraction": 0.3}},
         "not both"),
        ({"personalization": {"local_epochs_choices": [0, 2], "choice_folds": 0}}, "personalization.choice_folds"),
        ({"personalization": {"local_epochs_choices": [0, 2], "choice_folds": 11}}, "personalization.choice_folds"),
        ({"personalization": {"local_epochs_choices": [0, 2]}, "dp": DP}, "personalization is only for plans without dp"),
    ],
)
def test_bad_algorithm_or_personalization_is_refused_with_a_coded_error(changes: dict[str, Any], says: str) -> None:
    with pytest.raises(PlanInvalid) as refused:
        _plan(**changes)
    assert refused.value.code == "PLAN_INVALID"
    assert says in str(refused.value)


def test_fedprox_changes_nothing_in_the_privacy_accounting() -> None:
    """The silo's noise multiplier, sampling and the events the ledger charges come from the
    plan's dp section, batch size and epochs only: mu does not enter them."""
    from healthfed_common.dp.accounting import silo_dp_parameters

    for n in (37, 200, 1000):
        fedavg = silo_dp_parameters(_plan(dp=DP), n)
        for mu in (0.0, 0.5, 100.0):
            prox = silo_dp_parameters(_plan(dp=DP, algorithm={"name": "fedprox", "mu": mu}), n)
            assert prox == fedavg


# -- the DP-SGD step: the proximal gradient is outside clipping and noise ----------------------
def _moved_model(offset: float) -> tuple[Any, list[Any], list[Any]]:
    """The tests' logistic regression with its weights moved `offset` away from a copy of its
    start (the round's global model), as after some local steps."""
    import tensorflow as tf

    from tests.dp.conftest import keras_lr_model_fn

    model = keras_lr_model_fn()
    trainable = list(model.trainable_variables)
    global_weights = [tf.constant(v.numpy()) for v in trainable]
    rng = np.random.default_rng(8)
    for variable in trainable:
        variable.assign(variable + rng.normal(scale=offset, size=variable.shape).astype(np.float32))
    return model, trainable, global_weights


def _batch(x: np.ndarray, y: np.ndarray, noise_multiplier: float, seed: np.ndarray) -> dict[str, Any]:
    import tensorflow as tf

    return {"x": tf.constant(x), "y": tf.constant(y), "noise_multiplier": tf.constant(noise_multiplier),
            "expected_batch_size": tf.constant(float(len(x))), "noise_seed": tf.constant(seed)}


def test_proximal_gradient_is_added_after_clipping_and_noise() -> None:
    """With the same noise seed, the DP step gradient with mu differs from FedAvg's by exactly
    mu * (w - w_global): the noise draw is the same, the term is not clipped (it is far larger
    than the clipping bound here) and not divided by the batch size, and it is the same for a
    neighbouring batch with an outlier record -- so the records' sensitivity is still C."""
    from healthfed_common.dp.client_work import binary_crossentropy_per_example, dp_sgd_step_gradient
    from healthfed_common.dp.sampling import noise_seeds
    from tests.dp.conftest import WIDTH

    model, trainable, global_weights = _moved_model(offset=0.5)
    rng = np.random.default_rng(9)
    x = rng.normal(size=(16, WIDTH)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    neighbour = x.copy()
    neighbour[3] = 1e4  # an outlier record in place of record 3
    clip, seed = 0.01, noise_seeds(1)[0]
    proximal = [(w.numpy() - g.numpy()) for w, g in zip(trainable, global_weights)]
    assert np.sqrt(sum((p**2).sum() for p in proximal)) > 100 * clip

    def step(features: np.ndarray, mu: float | None, sigma: float) -> list[np.ndarray]:
        out = dp_sgd_step_gradient(model, trainable, global_weights, _batch(features, y, sigma, seed),
                                   per_example_loss=binary_crossentropy_per_example, l2_norm_clip=clip,
                                   proximal_strength=mu)
        return [o.numpy() for o in out]

    for features in (x, neighbour):
        for sigma in (0.0, 1.0):
            fedavg = step(features, None, sigma)
            for strength in (0.0, 0.3, 50.0):
                prox = step(features, strength, sigma)
                for p, f, term in zip(prox, fedavg, proximal):
                    np.testing.assert_allclose(p - f, np.float32(strength) * term, rtol=1e-5, atol=1e-6)
    # Noise-free, the neighbouring batches' gradients differ by at most 2C / batch (one record
    # replaced), with or without mu: the proximal term adds no sensitivity.
    for maybe_mu in (None, 50.0):
        a, b = step(x, maybe_mu, 0.0), step(neighbour, maybe_mu, 0.0)
        gap = np.sqrt(sum(((p - q) ** 2).sum() for p, q in zip(a, b)))
        assert gap <= 2 * clip / len(x) * (1 + 1e-4)


# -- the DP client work: mu = 0 is FedAvg, large mu pulls towards the global model ---------------
@pytest.fixture(scope="module")
def dp_works() -> dict[float | None, tuple[Any, Any]]:
    """(work, client_input) of the DP FedAvg/FedProx MapReduceForm for mu in None, 0, 1.5,
    executed through GraphComputation as a silo does. (Client learning rate 0.5: with plain
    SGD, learning_rate * mu must stay below 2 or the proximal pull overshoots and diverges.)"""
    import tensorflow_federated as tff

    from healthfed_common.dp.process import build_dp_fed_avg
    from healthfed_common.tf_graph import GraphComputation
    from tests.dp.conftest import keras_lr_model_fn

    works: dict[float | None, tuple[Any, Any]] = {}
    for mu in (None, 0.0, 1.5):
        process = build_dp_fed_avg(
            keras_lr_model_fn, client_optimizer=tff.learning.optimizers.build_sgdm(0.5),
            server_optimizer=tff.learning.optimizers.build_sgdm(1.0), l2_norm_clip=1.0, proximal_strength=mu,
        )
        mrf = tff.backends.mapreduce.get_map_reduce_form_for_computation(process.next)
        init = tff.backends.mapreduce.get_state_initialization_computation(process.initialize)

        def graph(c: Any) -> Any:
            return GraphComputation(tff.framework.serialize_computation(c))

        works[mu] = (graph(mrf.work), graph(mrf.prepare)(graph(init)()))
    return works


def _update_norm(out: list[Any]) -> float:
    # outputs: dp_steps, expected_examples, non_finite, weighted update (kernel, bias), weight
    return float(np.sqrt((np.asarray(out[3]) ** 2).sum() + (np.asarray(out[4]) ** 2).sum()) / float(out[5]))


def test_dp_fedprox_with_mu_zero_is_fedavg_and_large_mu_shrinks_the_update(dp_works: Any) -> None:
    from healthfed_common.dp.accounting import SamplingSchedule
    from healthfed_common.dp.sampling import poisson_dataset_factory
    from tests.dp.conftest import WIDTH

    rng = np.random.default_rng(10)
    x = rng.normal(size=(60, WIDTH)).astype(np.float32)
    y = (x[:, :1] + x[:, 1:2] > 0).astype(np.float32)
    schedule = SamplingSchedule(60, 10, 4)  # about 24 local steps
    for sigma in (0.0, 1.0):
        # one factory: the same Poisson sample and the same noise seeds for every mu
        factory = poisson_dataset_factory(x, y, schedule=schedule, noise_multiplier=sigma,
                                          rng=np.random.default_rng(11))
        outputs = {mu: work(client_input, [factory]) for mu, (work, client_input) in dp_works.items()}
        for fedavg, zero in zip(outputs[None], outputs[0.0]):
            np.testing.assert_array_equal(np.asarray(zero), np.asarray(fedavg))
        assert int(outputs[1.5][0]) == int(outputs[None][0]) > 10  # the same steps were taken
        assert _update_norm(outputs[1.5]) < 0.5 * _update_norm(outputs[None])


@pytest.fixture(scope="module")
def plain_works() -> dict[Any, tuple[Any, Any]]:
    """(work, client_input) of the non-DP FedProx MapReduceForm (healthfed_common.fedprox)
    for mu in None, 0, 1.5, and of TFF's own weighted FedAvg ("tff")."""
    import tensorflow_federated as tff

    from healthfed_common.fedprox import build_weighted_fed_prox
    from healthfed_common.tf_graph import GraphComputation
    from tests.dp.conftest import keras_lr_model_fn

    def graph(c: Any) -> Any:
        return GraphComputation(tff.framework.serialize_computation(c))

    processes: dict[Any, Any] = {
        mu: build_weighted_fed_prox(keras_lr_model_fn, proximal_strength=mu,
                                    client_optimizer=tff.learning.optimizers.build_sgdm(0.5),
                                    server_optimizer=tff.learning.optimizers.build_sgdm(1.0))
        for mu in (None, 0.0, 1.5)
    }
    processes["tff"] = tff.learning.algorithms.build_weighted_fed_avg(
        keras_lr_model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.5),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0))
    works = {}
    for key, process in processes.items():
        mrf = tff.backends.mapreduce.get_map_reduce_form_for_computation(process.next)
        init = tff.backends.mapreduce.get_state_initialization_computation(process.initialize)
        works[key] = (graph(mrf.work), graph(mrf.prepare)(graph(init)()))
    return works


def test_fedprox_with_mu_zero_is_fedavg_and_large_mu_shrinks_the_update(plain_works: Any) -> None:
    """Without DP: mu = 0 gives exactly the no-term update, which is TFF's own FedAvg update;
    mu = 1.5 pulls the silo's update towards the global model. (TFF 0.87's own FedProx fails
    the last check: its proximal term has the wrong sign, see healthfed_common.fedprox.)"""
    import tensorflow as tf

    from tests.dp.conftest import WIDTH

    rng = np.random.default_rng(14)
    x = rng.normal(size=(64, WIDTH)).astype(np.float32)
    y = (x[:, :1] + x[:, 1:2] > 0).astype(np.float32)

    def data() -> Any:
        return tf.data.Dataset.from_tensor_slices((x, y)).repeat(3).batch(8)

    outputs = {key: work(client_input, [data]) for key, (work, client_input) in plain_works.items()}
    for fedavg, zero in zip(outputs[None], outputs[0.0]):
        np.testing.assert_array_equal(np.asarray(zero), np.asarray(fedavg))
    assert len(outputs[None]) == len(outputs["tff"])
    for ours, theirs in zip(outputs[None], outputs["tff"]):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-5)

    def kernel_update(out: list[Any]) -> float:  # example-weighted; the same 192 examples for all
        (kernel,) = [o for o in out if np.shape(o) == (WIDTH, 1)]
        return float(np.linalg.norm(kernel))

    assert kernel_update(outputs[1.5]) < 0.5 * kernel_update(outputs[None])


# -- the real plan-built computations (what silo and aggregator run) ----------------------------
def _round_step(plan: Plan, silos: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The global model's movement (all weights, flattened) in one round where each of
    `silos` runs the plan's `work` on its records (under DP, noise-free Poisson batches drawn
    from a generator keyed by the silo's size, so a silo samples alike alone and with others)
    and the aggregator's `aggregate_round` combines them (the real quantized integer sums and
    the plan's server step)."""
    from aggregator.aggregation import aggregate_round
    from healthfed_common.client_data import training_dataset_factory
    from healthfed_common.dp.accounting import SamplingSchedule
    from healthfed_common.dp.sampling import poisson_dataset_factory
    from healthfed_common.learning_process import build_federated_computations
    from healthfed_common.wire.messages import TrainResult

    computations = build_federated_computations(plan)
    state = computations.initialize()
    client_input = list(computations.prepare(state))
    metrics_count, secure_count = computations.work_parts[:2]
    results = []
    for index, (x, y) in enumerate(silos):
        if plan.dp is not None:
            factory = poisson_dataset_factory(
                x, y, schedule=SamplingSchedule(len(x), plan.batch_size, plan.local_epochs),
                noise_multiplier=0.0, rng=np.random.default_rng(len(x)))  # one draw per silo, alone or not
        else:
            factory = training_dataset_factory(x, y, plan, 1)
        outputs = computations.work(client_input, [factory])
        results.append(TrainResult(f"silo-{index}", f"t-{index}", plan.plan_hash, 1, tuple(outputs[:metrics_count]),
                                   tuple(outputs[metrics_count: metrics_count + secure_count])))
    new_state = aggregate_round(computations, state, results).state
    before, after = computations.model_weights(state), computations.model_weights(new_state)
    return np.concatenate([(np.asarray(b) - np.asarray(a)).ravel() for a, b in zip(before, after)])


def _round_movement(plan: Plan, x: np.ndarray, y: np.ndarray) -> float:
    """How far one round moves the global model with one silo holding (x, y) (`_round_step`)."""
    return float(np.linalg.norm(_round_step(plan, [(x, y)])))


@pytest.mark.parametrize("dp", [False, True], ids=["no-dp", "dp"])
def test_plan_built_fedprox_keeps_the_round_nearer_the_global_model(dp: bool) -> None:
    """`build_learning_process` wires `plan.algorithm` into the computations every node builds:
    with mu = 1.5 one round (24 local steps) moves the global model far less than FedAvg's."""
    rng = np.random.default_rng(13)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x @ np.array([1.5, -1.0, 0.5, 0.0]) > 0).astype(np.float32).reshape(-1, 1)
    extra: dict[str, Any] = {"dp": DP} if dp else {}
    fedavg = _round_movement(_plan(**extra), x, y)
    fedprox = _round_movement(_plan(**extra, algorithm={"name": "fedprox", "mu": 1.5}), x, y)
    assert fedavg > 0.1
    assert fedprox < 0.5 * fedavg


@pytest.mark.parametrize(("dp", "weighting"), [(False, "examples"), (False, "sqrt_examples"), (False, "uniform"),
                                               (True, "sqrt_examples")])
def test_plan_built_client_weighting_weighs_each_silos_update_as_specified(dp: bool, weighting: str) -> None:
    """Two silos of 16 and 144 records whose labels pull the model in opposite directions.
    With server SGD at rate 1, the round's movement with both is the weighted mean of each
    one's movement alone, with weights n, sqrt(n) or 1 (under DP-SGD: the expected examples,
    their root, or 1). The weightings' predictions differ by far more than the secure sum's
    quantization error, so a plan whose `client_weighting` were ignored (or mapped to another)
    fails here; it runs through the computations silo and aggregator build from the plan. Under
    DP one weighting is enough: the DP client work takes the same weight function of its
    expected examples. (With `uniform` the weight's secure-sum bound of 1 also clips any larger
    weight to 1, so that case holds even if the weight function were ignored; the other two
    do not.)"""
    rng = np.random.default_rng(21)
    small_x = rng.normal(size=(16, 4)).astype(np.float32)
    large_x = rng.normal(size=(144, 4)).astype(np.float32)
    direction = np.array([1.5, -1.0, 0.5, 0.0])
    small = (small_x, (small_x @ direction > 0).astype(np.float32).reshape(-1, 1))
    large = (large_x, (large_x @ -direction > 0).astype(np.float32).reshape(-1, 1))
    extra: dict[str, Any] = {"dp": DP} if dp else {}
    plan = _plan(**extra, server_optimizer={"name": "sgd", "learning_rate": 1.0}, local_epochs=1,
                 algorithm={"name": "fedavg", "client_weighting": weighting})
    if weighting == "examples":
        assert plan.plan_hash == _plan(**extra, server_optimizer={"name": "sgd", "learning_rate": 1.0},
                                       local_epochs=1).plan_hash  # the default, left out of the hash
    alone = [_round_step(plan, [silo]) for silo in (small, large)]
    both = _round_step(plan, [small, large])

    def predicted(w_small: float, w_large: float) -> np.ndarray:
        return (w_small * alone[0] + w_large * alone[1]) / (w_small + w_large)

    predictions = {"examples": predicted(16, 144), "sqrt_examples": predicted(4, 12), "uniform": predicted(1, 1)}
    errors = {name: float(np.abs(both - p).max()) for name, p in predictions.items()}
    assert errors[weighting] < 2e-3, errors
    for other, error in errors.items():
        if other != weighting:
            assert error > 20 * max(errors[weighting], 1e-4), errors


def test_client_weighting_is_bound_into_the_hash_and_refused_when_unknown() -> None:
    default = _plan()
    root = _plan(algorithm={"name": "fedavg", "client_weighting": "sqrt_examples"})
    prox_root = _plan(algorithm={"name": "fedprox", "mu": 0.1, "client_weighting": "sqrt_examples"})
    prox = _plan(algorithm={"name": "fedprox", "mu": 0.1})
    assert len({default.plan_hash, root.plan_hash, prox_root.plan_hash, prox.plan_hash}) == 4
    assert json.loads(prox.canonical_bytes())["algorithm"] == {"name": "fedprox", "mu": 0.1}  # hash kept
    assert json.loads(root.canonical_bytes())["algorithm"]["client_weighting"] == "sqrt_examples"
    for plan in (root, prox_root):
        assert parse_plan(plan.canonical_bytes()) == plan
    with pytest.raises(PlanInvalid) as refused:
        _plan(algorithm={"name": "fedavg", "client_weighting": "by_accuracy"})
    assert refused.value.code == "PLAN_INVALID" and "algorithm.client_weighting" in str(refused.value)


# -- personalisation: a real silo fine-tunes, and only metrics leave ----------------------------
PERSONALIZATION_POLICY = """\
auto_approve: true
require_dp: false
require_secure_aggregation: false
non_private_plans_on_budgeted_datasets: charge_infinity
"""


@pytest.mark.parametrize("spec", [{"local_epochs": 5}, {"local_epochs_choices": [0, 2, 5]},
                                  {"local_epochs_choices": [0, 2, 5], "choice_folds": 3}],
                         ids=["fixed_epochs", "epochs_chosen_by_the_silo", "epochs_chosen_by_cross_validation"])
def test_personalised_metrics_leave_and_the_fine_tuned_weights_never_do(tmp_path: Any, spec: dict[str, Any]) -> None:
    """A real SiloRunner trains one round of a non-DP plan with personalization, then is asked
    to evaluate the resulting global model. Its answer carries the global model's metrics and
    the metrics of its own fine-tuned copy (the same numbers the test gets by fine-tuning the
    silo's training view itself, for the epochs the test's own replay of the silo's choice
    gives), recorded in the ledger's evaluation disclosure; the egress record shows exactly
    one train result and one evaluation, the evaluation's recorded bytes are this answer, and
    no released number is a fine-tuned weight -- of the released model or of any candidate
    the silo tried while choosing."""
    import hashlib

    from aggregator.aggregation import aggregate_round
    from healthfed_common.learning_process import build_federated_computations
    from healthfed_common.wire import codec
    from healthfed_common.wire.messages import EvaluateResult, EvaluateTask, TrainResult, TrainTask
    from silo_node.personalization import choose_epochs, cross_validation_folds, fine_tune, holdout_split
    from silo_node.runner import evaluate_weights
    from tests.adversary.harness import VICTIM, VictimSilo, adversary_plan

    base = adversary_plan([VICTIM, "peer"], protocol="none", dp=False, min_silos=1, rounds=1)
    plan = Plan.model_validate({**base.model_dump(mode="json"), "personalization": spec})
    victim = VictimSilo.open(tmp_path, rows=80, approval_policy=PERSONALIZATION_POLICY)
    try:
        computations = build_federated_computations(plan, victim.services.plan_cache_dir)
        state = computations.initialize()
        client_input = tuple(np.asarray(a) for a in computations.prepare(state))
        trained = victim.ask(TrainTask(victim.task_id("train"), plan.canonical_bytes(), plan.plan_hash, 1, 1,
                                       computations.fingerprint, client_input))
        assert isinstance(trained, TrainResult), trained
        global_weights = computations.model_weights(aggregate_round(computations, state, [trained]).state)
        answer = victim.ask(EvaluateTask(victim.task_id("eval"), plan.canonical_bytes(), plan.plan_hash,
                                         tuple(np.asarray(w) for w in global_weights)))
        assert isinstance(answer, EvaluateResult), answer

        # the global model's metrics and the fine-tuned model's, side by side
        chosen_locally = "local_epochs_choices" in spec
        assert set(answer.metrics) == {"loss", "accuracy", "auc",
                                       "personalized_loss", "personalized_accuracy", "personalized_auc",
                                       *(["personalized_fine_tuning_epochs"] if chosen_locally else [])}
        train = victim.services.registry.training_view(plan.dataset, plan, "train")
        test = victim.services.registry.training_view(plan.dataset, plan, "test")
        candidates: list[list[np.ndarray]] = []
        epochs = spec.get("local_epochs")
        if chosen_locally:
            epochs, scores = choose_epochs(plan, list(global_weights), train.features, train.labels, evaluate_weights)
            assert answer.metrics["personalized_fine_tuning_epochs"] == epochs
            assert set(scores) == {0, 2, 5}
            fits = ([fit for fit, _ in cross_validation_folds(train.labels, 3, plan.seeds.data_order)]
                    if "choice_folds" in spec else [holdout_split(train.labels, 0.25, plan.seeds.data_order)[0]])
            assert len(fits) == (3 if "choice_folds" in spec else 1)
            candidates = [[np.asarray(w) for w in fine_tune(plan, list(global_weights), train.features[fit],
                                                            train.labels[fit], e).get_weights()]
                          for fit in fits for e in (2, 5)]
        tuned = [np.asarray(w) for w in
                 fine_tune(plan, list(global_weights), train.features, train.labels, epochs).get_weights()]
        expected = evaluate_weights(plan, tuned, test.features, test.labels)
        for name, value in expected.items():
            assert answer.metrics["personalized_" + name] == pytest.approx(value, rel=1e-4, abs=1e-5)
        if epochs:
            assert answer.metrics["personalized_loss"] != pytest.approx(answer.metrics["loss"], abs=1e-4)
        assert answer.num_examples == len(test.labels)
        disclosures = victim.services.ledger.disclosures(plan.dataset)
        assert any("personalized_accuracy" in json.dumps(d.released) for d in disclosures)

        # what left: the egress record is exactly these two payloads, and none holds a tuned weight
        egress = victim.services.egress.list(plan.plan_hash)
        assert [e.kind for e in egress] == ["TrainResult", "EvaluateResult"]
        payload = codec.encode(answer)
        assert (egress[1].bytes, egress[1].sha256) == (len(payload), hashlib.sha256(payload).hexdigest())
        released = [float(answer.num_examples), *answer.metrics.values()]
        for model in ([tuned] if epochs else []) + candidates:
            weights = np.concatenate([w.reshape(-1) for w in model])
            assert weights.size == plan.input_width + 1  # the whole logistic regression
            assert not np.isclose(np.asarray(released)[:, None], weights[None, :], rtol=1e-6, atol=0).any()
            for weight in weights:  # nor any tuned weight's bytes, in either float width
                assert np.float32(weight).tobytes() not in payload and np.float64(weight).tobytes() not in payload
        victim.assert_alive()
    finally:
        victim.close()


def test_the_holdout_a_silo_chooses_on_is_stratified_disjoint_and_repeatable() -> None:
    """The local choice is made on part of the TRAINING records only (the caller passes the
    training view); every class with two or more records is on both sides, a lone record of a
    class stays in the fit part, and the same seed gives the same split (a retried
    evaluation makes the same choice)."""
    from silo_node.personalization import holdout_split

    labels = np.array([1.0] * 29 + [0.0])  # Switzerland's shape: one negative
    fit, holdout = holdout_split(labels, 0.25, seed=4)
    assert sorted([*fit, *holdout]) == list(range(30)) and not set(fit) & set(holdout)
    assert len(holdout) == 7 and labels[holdout].min() == 1.0 and 29 in fit
    balanced = np.array([0.0, 1.0] * 40)
    fit, holdout = holdout_split(balanced, 0.25, seed=4)
    assert (balanced[holdout] == 1).sum() == (balanced[holdout] == 0).sum() == 10
    again, _ = holdout_split(balanced, 0.25, seed=4)
    other, _ = holdout_split(balanced, 0.25, seed=5)
    assert list(again) == list(fit) and list(other) != list(fit)
    two = np.array([0.0, 0.0, 1.0, 1.0, 1.0])
    _, holdout = holdout_split(two, 0.25, seed=1)
    assert set(two[holdout]) == {0.0, 1.0}


def test_a_silo_keeps_the_global_model_when_fine_tuning_does_not_help_on_its_holdout() -> None:
    """The choice is the argmax of the held-out accuracy, ties to the lower held-out loss then
    fewer epochs; 0 epochs is the global model itself. Fine-tuning that can only hurt -- the
    fit part's inputs negated, so every step moves away from the relation the holdout keeps --
    leaves this hospital with the global model, and the replayed scores show why."""
    from silo_node.personalization import choose_epochs, fine_tune, holdout_split
    from silo_node.runner import evaluate_weights

    plan = _plan(personalization={"local_epochs_choices": [0, 1, 10]},
                 client_optimizer={"name": "sgd", "learning_rate": 1.0})
    rng = np.random.default_rng(0)
    features = rng.normal(size=(120, 4)).astype(np.float32)
    truth = (features @ np.array([2.0, -1.0, 1.0, 0.5]) > 0).astype(np.float32)
    good = [np.array([[2.0], [-1.0], [1.0], [0.5]], dtype=np.float32), np.zeros(1, dtype=np.float32)]
    assert [w.shape for w in good] == [w.shape for w in fine_tune(plan, good, features, truth, 0).get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(fine_tune(plan, good, features, truth, 0).get_weights(), good))

    assert plan.personalization is not None
    fit, _ = holdout_split(truth, plan.personalization.holdout_fraction, plan.seeds.data_order)
    poisoned = features.copy()
    poisoned[fit] = -poisoned[fit]  # what the fit part teaches is the opposite of the holdout's relation
    epochs, scores = choose_epochs(plan, good, poisoned, truth, evaluate_weights)
    assert epochs == 0, scores
    assert scores[0]["accuracy"] == 1.0 and scores[10]["accuracy"] < 0.5

    # and with clean records the silo does fine-tune a model that starts from nothing
    blank = [np.zeros((4, 1), dtype=np.float32), np.zeros(1, dtype=np.float32)]
    epochs, scores = choose_epochs(plan, blank, features, truth, evaluate_weights)
    assert epochs > 0 and scores[epochs]["accuracy"] > scores[0]["accuracy"]


def test_the_choice_rule_breaks_ties_by_loss_then_fewer_epochs_and_ranks_a_diverged_candidate_last() -> None:
    from silo_node.personalization import best_epochs

    assert best_epochs({0: {"accuracy": 0.8, "loss": 0.5}, 3: {"accuracy": 0.9, "loss": 0.9}}) == 3
    # Switzerland's case: a one-class holdout ties every count on accuracy, the loss decides
    assert best_epochs({0: {"accuracy": 1.0, "loss": 0.4}, 3: {"accuracy": 1.0, "loss": 0.2},
                        10: {"accuracy": 1.0, "loss": 0.3}}) == 3
    assert best_epochs({0: {"accuracy": 0.7, "loss": 0.5}, 1: {"accuracy": 0.7, "loss": 0.5}}) == 0
    nan = float("nan")
    assert best_epochs({1: {"accuracy": 0.7, "loss": nan}, 3: {"accuracy": 0.7, "loss": 0.6}}) == 3


def test_the_cross_validation_folds_hold_every_training_record_out_once_stratified_and_repeatably() -> None:
    from silo_node.personalization import cross_validation_folds

    balanced = np.array([0.0, 1.0] * 40)
    folds = cross_validation_folds(balanced, 4, seed=3)
    assert len(folds) == 4
    held = np.concatenate([holdout for _, holdout in folds])
    assert sorted(held) == list(range(80))  # each record held out exactly once
    for fit, holdout in folds:
        assert not set(fit) & set(holdout) and len(fit) + len(holdout) == 80
        assert (balanced[holdout] == 1).sum() == (balanced[holdout] == 0).sum() == 10
    again = cross_validation_folds(balanced, 4, seed=3)
    other = cross_validation_folds(balanced, 4, seed=4)
    assert [list(h) for _, h in again] == [list(h) for _, h in folds]
    assert [list(h) for _, h in other] != [list(h) for _, h in folds]
    swiss = np.array([1.0] * 29 + [0.0])  # one negative: it is held out in exactly one fold
    folds = cross_validation_folds(swiss, 4, seed=1)
    assert sum(29 in holdout for _, holdout in folds) == 1 and sorted(np.concatenate([h for _, h in folds])) == list(range(30))
    assert cross_validation_folds(np.ones(3), 4, seed=1) == []
    # enough records but no class as large as the folds: scikit-learn cannot stratify, and the
    # silo keeps the fewest listed epochs instead of failing its evaluation
    assert cross_validation_folds(np.array([0.0, 0.0, 1.0, 1.0]), 4, seed=1) == []
    assert cross_validation_folds(np.array([0.0] * 5 + [1.0] * 5), 10, seed=1) == []
    assert len(cross_validation_folds(np.array([0.0] * 4 + [1.0] * 3), 4, seed=1)) == 4


def test_the_one_standard_error_rule_keeps_the_shared_model_unless_fine_tuning_beats_the_folds_noise() -> None:
    """The rule a cross-validated choice applies: the best mean accuracy sets the bar, one
    standard error of its folds below it, and the fewest epochs over the bar win. A count that
    leads by less than the folds disagree loses to the shared model (0); a lead larger than
    that wins."""
    from silo_node.personalization import fewest_within_one_standard_error

    def folds(*accuracies: float) -> list[dict[str, float]]:
        return [{"accuracy": a, "loss": 0.5} for a in accuracies]

    # 10 epochs lead by 0.025 on the mean, but their folds spread 0.70..0.90 (SE 0.041)
    noisy = {0: folds(0.75, 0.80, 0.80, 0.75), 3: folds(0.75, 0.75, 0.80, 0.80), 10: folds(0.70, 0.90, 0.80, 0.80)}
    epochs, scores = fewest_within_one_standard_error(noisy)
    assert epochs == 0 and scores[10]["accuracy"] > scores[0]["accuracy"], scores
    assert scores[10]["accuracy_standard_error"] == pytest.approx(np.std([0.7, 0.9, 0.8, 0.8], ddof=1) / 2)
    # the same lead on folds that agree: fine-tuning wins, and the fewest epochs over the bar
    steady = {0: folds(0.75, 0.75, 0.75, 0.75), 3: folds(0.80, 0.80, 0.80, 0.85), 10: folds(0.85, 0.80, 0.80, 0.80)}
    assert fewest_within_one_standard_error(steady)[0] == 3
    clear = {0: folds(0.60, 0.62, 0.58, 0.60), 3: folds(0.70, 0.72, 0.69, 0.71), 10: folds(0.80, 0.82, 0.79, 0.81)}
    assert fewest_within_one_standard_error(clear)[0] == 10
    # one standard error, not two: best 0.80 with SE 0.0163; 0 at 0.7755 trails by 1.5 SE and
    # loses, 0 at 0.79 trails by 0.6 SE and wins
    best = folds(0.76, 0.84, 0.80, 0.80)
    beyond = {0: folds(0.7755, 0.7755, 0.7755, 0.7755), 10: best}
    epochs, scores = fewest_within_one_standard_error(beyond)
    assert scores[10]["accuracy_standard_error"] == pytest.approx(0.01633, abs=1e-5)
    assert epochs == 10
    assert fewest_within_one_standard_error({0: folds(0.79, 0.79, 0.79, 0.79), 10: best})[0] == 0


def test_a_cross_validated_choice_keeps_the_global_model_where_fine_tuning_hurts_and_tunes_where_it_helps() -> None:
    """Through choose_epochs with real fine-tuning (lr 1.0): a hospital whose labels are the
    global model's relation with 30% flipped at random gains nothing real from fine-tuning (it
    can only chase the flips), and keeps the global model -- where, on one of these draws, a
    single holdout picks 1 epoch (a tie on accuracy that the loss breaks). A blank model on
    clean records is fine-tuned, by more than the folds' noise."""
    from silo_node.personalization import choose_epochs
    from silo_node.runner import evaluate_weights

    plan = _plan(personalization={"local_epochs_choices": [0, 1, 10], "choice_folds": 4},
                 client_optimizer={"name": "sgd", "learning_rate": 1.0})
    one_holdout = _plan(personalization={"local_epochs_choices": [0, 1, 10]},
                        client_optimizer={"name": "sgd", "learning_rate": 1.0})
    good = [np.array([[2.0], [-1.0], [1.0], [0.5]], dtype=np.float32), np.zeros(1, dtype=np.float32)]
    for draw in (0, 2):
        rng = np.random.default_rng(draw)
        features = rng.normal(size=(120, 4)).astype(np.float32)
        truth = (features @ np.array([2.0, -1.0, 1.0, 0.5]) > 0).astype(np.float32)
        noisy = np.where(rng.random(120) < 0.3, 1 - truth, truth).astype(np.float32)
        epochs, scores = choose_epochs(plan, good, features, noisy, evaluate_weights)
        assert epochs == 0, (draw, scores)
        if draw == 2:
            assert choose_epochs(one_holdout, good, features, noisy, evaluate_weights)[0] == 1
    blank = [np.zeros((4, 1), dtype=np.float32), np.zeros(1, dtype=np.float32)]
    epochs, scores = choose_epochs(plan, blank, features, truth, evaluate_weights)
    assert epochs > 0 and scores[epochs]["accuracy"] > scores[0]["accuracy"] + scores[epochs]["accuracy_standard_error"]
    assert set(scores) == {0, 1, 10} and all("accuracy_standard_error" in s for s in scores.values())


def test_a_silo_with_too_few_records_to_hold_out_keeps_the_fewest_listed_epochs() -> None:
    from silo_node.personalization import choose_epochs
    from silo_node.runner import evaluate_weights

    plan = _plan(personalization={"local_epochs_choices": [0, 5]})
    blank = [np.zeros((4, 1), dtype=np.float32), np.zeros(1, dtype=np.float32)]
    one = np.ones((1, 4), dtype=np.float32)
    assert choose_epochs(plan, blank, one, np.ones(1, dtype=np.float32), evaluate_weights) == (0, {})


def test_the_choice_never_reads_the_test_records() -> None:
    """Every evaluation before the last one scores part of the training records the silo
    passed; only the released copy's final evaluation sees the test records."""
    from silo_node.personalization import personalized_metrics
    from silo_node.runner import evaluate_weights

    plan = _plan(personalization={"local_epochs_choices": [0, 1, 3]})
    rng = np.random.default_rng(3)
    train_x = rng.normal(size=(60, 4)).astype(np.float32)
    train_y = (train_x[:, 0] > 0).astype(np.float32)
    test_x = rng.normal(loc=10.0, size=(20, 4)).astype(np.float32)  # no test row equals a training row
    test_y = (test_x[:, 1] > 10).astype(np.float32)
    seen: list[np.ndarray] = []

    def recording(plan: Plan, weights: list[Any], features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        seen.append(np.asarray(features))
        return evaluate_weights(plan, weights, features, labels)

    blank = [np.zeros((4, 1), dtype=np.float32), np.zeros(1, dtype=np.float32)]
    released = personalized_metrics(plan, blank, (train_x, train_y), (test_x, test_y), recording)
    assert len(seen) == 4 and np.array_equal(seen[-1], test_x)
    training_rows = {row.tobytes() for row in train_x}
    for features in seen[:-1]:
        assert 0 < len(features) < len(train_x) and all(row.tobytes() in training_rows for row in features)
    assert released["personalized_fine_tuning_epochs"] in (0.0, 1.0, 3.0)


def test_the_federations_aggregate_does_not_average_the_epochs_each_silo_chose() -> None:
    from aggregator.coordinator import evaluation_aggregate

    per_silo = {"a": {"accuracy": 0.8, "personalized_accuracy": 0.9, "personalized_fine_tuning_epochs": 30.0,
                      "num_examples": 10},
                "b": {"accuracy": 0.6, "personalized_accuracy": 0.6, "personalized_fine_tuning_epochs": 0.0,
                      "num_examples": 30}}
    aggregate = evaluation_aggregate(per_silo)
    assert "personalized_fine_tuning_epochs" not in aggregate
    assert aggregate["accuracy"] == pytest.approx(0.65) and aggregate["num_examples"] == 40
    assert aggregate["mean_per_silo_personalized_accuracy"] == pytest.approx(0.75)


def test_the_steward_reads_the_algorithm_and_the_personalisation_before_approving() -> None:
    from silo_node.approvals import explain

    text = explain(_plan(algorithm={"name": "fedprox", "mu": 0.05}, personalization={"local_epochs": 4}),
                   "pending", None, None, None, None)
    assert "FedProx" in text and "mu = 0.05" in text
    assert "fine-tunes the shared model on its own training records (4 pass(es))" in text
    assert "the fine-tuned weights never leave" in text
    plain = explain(_plan(), "pending", None, None, None, None)
    assert "FedProx" not in plain and "fine-tunes" not in plain
    assert "square root" not in plain and "alike" not in plain
    root = explain(_plan(algorithm={"name": "fedavg", "client_weighting": "sqrt_examples"}),
                   "pending", None, None, None, None)
    assert "by the square root of the number of records it trained on" in root
    uniform = explain(_plan(algorithm={"name": "fedavg", "client_weighting": "uniform"}),
                      "pending", None, None, None, None)
    assert "counts every silo's update alike" in uniform
    chosen = explain(_plan(personalization={"local_epochs_choices": [0, 1, 10]}), "pending", None, None, None, None)
    assert ("as many passes as it chooses from [0, 1, 10] (0 = keep the shared model) on a held-out 25% of its "
            "training records; the count it chose is released with the metrics") in chosen


def test_the_steward_reads_which_scaling_a_non_dp_plan_uses_before_approving() -> None:
    from silo_node.approvals import explain

    scaled = [{"name": "f0", "transform": "standardize"}]
    public = explain(_plan(features=scaled, preprocessing="public_bounds"), "pending", None, None, None, None)
    assert "f0: clamped to the public range this hospital's dataset policy declares" in public
    assert "the plan asks for public bounds" in public and "NO differential privacy" in public
    plain = explain(_plan(features=scaled), "pending", None, None, None, None)
    assert "clamped to the public range" not in plain


def test_evaluation_summary_and_model_card_show_global_and_personalised_metrics_side_by_side() -> None:
    from aggregator.coordinator import personalization_summary
    from aggregator.model_card import build_card, card_markdown, evaluation_section

    per_silo = {
        "riverside": {"loss": 0.6, "accuracy": 0.70, "auc": 0.75, "personalized_loss": 0.5,
                      "personalized_accuracy": 0.80, "personalized_auc": 0.85, "num_examples": 40},
        "st-marys": {"loss": 0.7, "accuracy": 0.60, "auc": 0.65, "personalized_loss": 0.65,
                     "personalized_accuracy": 0.62, "personalized_auc": 0.66, "num_examples": 30},
    }
    summary = personalization_summary({"method": "local_fine_tuning", "local_epochs": 3}, per_silo)
    assert summary["local_epochs"] == 3
    assert summary["per_silo"]["riverside"] == {
        "global": {"loss": 0.6, "accuracy": 0.70, "auc": 0.75},
        "personalized": {"loss": 0.5, "accuracy": 0.80, "auc": 0.85}, "num_examples": 40}
    evaluation = {"per_silo": per_silo, "aggregate": {"accuracy": 0.657}, "personalization": summary}
    assert evaluation_section(evaluation)["personalization"] == summary
    plan = _plan(personalization={"local_epochs": 3})
    markdown = card_markdown(build_card(plan, rounds_completed=2, evaluation=evaluation, dp_declarations={}))
    assert "| riverside | 40 | 0.7000 | 0.8000 | 0.7500 | 0.8500 |" in markdown
    assert "| st-marys | 30 | 0.6000 | 0.6200 | 0.6500 | 0.6600 |" in markdown


def test_the_model_card_shows_the_epochs_each_hospital_chose() -> None:
    from aggregator.coordinator import personalization_summary
    from aggregator.model_card import build_card, card_markdown

    plan = _plan(personalization={"local_epochs_choices": [0, 3, 10]})
    assert plan.personalization is not None
    per_silo = {
        "riverside": {"loss": 0.6, "accuracy": 0.70, "auc": 0.75, "personalized_loss": 0.6,
                      "personalized_accuracy": 0.70, "personalized_auc": 0.75, "personalized_fine_tuning_epochs": 0.0,
                      "num_examples": 40},
        "st-marys": {"loss": 0.7, "accuracy": 0.60, "auc": 0.65, "personalized_loss": 0.65,
                     "personalized_accuracy": 0.62, "personalized_auc": 0.66, "personalized_fine_tuning_epochs": 10.0,
                     "num_examples": 30},
    }
    summary = personalization_summary(plan.personalization.canonical(), per_silo)
    evaluation = {"per_silo": per_silo, "aggregate": {"accuracy": 0.657}, "personalization": summary}
    markdown = card_markdown(build_card(plan, rounds_completed=2, evaluation=evaluation, dp_declarations={}))
    assert "for the number of epochs it chose from [0, 3, 10] on a held-out part of its own training records" in markdown
    assert "| riverside | 40 | 0.7000 | 0.7000 | 0.7500 | 0.7500 | 0 |" in markdown
    assert "| st-marys | 30 | 0.6000 | 0.6200 | 0.6500 | 0.6600 | 10 |" in markdown
