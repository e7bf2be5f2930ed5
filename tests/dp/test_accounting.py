"""The ledger's and calibration's epsilons are dp-accounting's, for the exact DP-SGD event."""

from __future__ import annotations

import math

import dp_accounting
import pytest

from healthfed_common.dp import CalibrationFailed, InvalidDpEvent
from healthfed_common.dp.accounting import (
    SamplingSchedule,
    calibrate_noise_multiplier,
    compose,
    epsilon_for_events,
    event_from_json,
    event_to_json,
    plan_event,
    round_event,
    silo_dp_parameters,
)

SCHEDULE = SamplingSchedule(dataset_size=199, batch_size=16, local_epochs=2)


def _direct(event: dp_accounting.DpEvent, delta: float, accountant: str) -> float:
    if accountant == "rdp":
        acct: dp_accounting.PrivacyAccountant = dp_accounting.rdp.RdpAccountant()
    else:
        acct = dp_accounting.pld.PLDAccountant()
    return acct.compose(event).get_epsilon(delta)


def test_schedule_is_poisson_dp_sgd_shape() -> None:
    assert SCHEDULE.sampling_probability == pytest.approx(16 / 199)
    assert SCHEDULE.expected_batch_size == pytest.approx(16.0)
    assert SCHEDULE.steps_per_round == 2 * math.ceil(199 / 16)
    assert SamplingSchedule(10, 32, 1).sampling_probability == 1.0


def test_round_event_is_the_subsampled_gaussian_self_composed() -> None:
    event = round_event(SCHEDULE, 1.3)
    assert event == dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(16 / 199, dp_accounting.GaussianDpEvent(1.3)),
        SCHEDULE.steps_per_round,
    )


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_one_round_epsilon_equals_direct_dp_accounting(accountant: str) -> None:
    event = round_event(SCHEDULE, 1.1)
    # The direct computation composes the step event by hand, `steps` times.
    acct = dp_accounting.rdp.RdpAccountant() if accountant == "rdp" else dp_accounting.pld.PLDAccountant()
    step = dp_accounting.PoissonSampledDpEvent(16 / 199, dp_accounting.GaussianDpEvent(1.1))
    direct = acct.compose(step, SCHEDULE.steps_per_round).get_epsilon(1e-5)
    ours = epsilon_for_events([event], 1e-5, accountant)  # type: ignore[arg-type]
    assert ours == pytest.approx(direct, rel=1e-6)


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_whole_plan_epsilon_equals_direct_dp_accounting(accountant: str) -> None:
    rounds = 15
    plan = plan_event(SCHEDULE, 1.1, rounds)
    direct = _direct(plan, 1e-3, accountant)
    assert epsilon_for_events([plan], 1e-3, accountant) == pytest.approx(direct, rel=1e-6)  # type: ignore[arg-type]
    # The ledger's view: one event per round, composed.
    per_round = [round_event(SCHEDULE, 1.1)] * rounds
    assert epsilon_for_events(per_round, 1e-3, accountant) == pytest.approx(direct, rel=1e-6)  # type: ignore[arg-type]


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_events_of_several_plans_compose_like_a_composed_event(accountant: str) -> None:
    small = SamplingSchedule(60, 20, 1)
    mixed = [round_event(small, 1.1)] * 2 + [round_event(SamplingSchedule(60, 30, 1), 2.0)]
    ours = epsilon_for_events(mixed, 1e-3, accountant)  # type: ignore[arg-type]
    assert ours == pytest.approx(_direct(dp_accounting.ComposedDpEvent(mixed), 1e-3, accountant), rel=1e-6)
    # ... which is not the sum of the rounds' epsilons.
    assert ours < 2 * epsilon_for_events(mixed[:1], 1e-3, accountant) + epsilon_for_events(  # type: ignore[arg-type]
        mixed[2:], 1e-3, accountant  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
@pytest.mark.parametrize("target", [pytest.param(1.0, marks=pytest.mark.slow), 0.1])
def test_calibration_meets_target_tightly(accountant: str, target: float) -> None:
    schedule = SamplingSchedule(30, 10, 1)
    sigma = calibrate_noise_multiplier(
        target_epsilon=target, target_delta=1e-3, schedule=schedule, rounds=5, accountant=accountant  # type: ignore[arg-type]
    )
    eps = _direct(plan_event(schedule, sigma, 5), 1e-3, accountant)
    assert eps <= target
    assert eps > target * 0.99  # not wastefully noisy
    looser = _direct(plan_event(schedule, sigma * 0.98, 5), 1e-3, accountant)
    assert looser > target


@pytest.mark.slow
def test_pld_needs_less_noise_than_rdp() -> None:
    kwargs = dict(target_epsilon=1.0, target_delta=1e-3, schedule=SamplingSchedule(60, 20, 1), rounds=5)
    assert calibrate_noise_multiplier(accountant="pld", **kwargs) < calibrate_noise_multiplier(  # type: ignore[arg-type]
        accountant="rdp", **kwargs  # type: ignore[arg-type]
    )


def test_invalid_targets_are_refused() -> None:
    with pytest.raises(CalibrationFailed):
        calibrate_noise_multiplier(target_epsilon=0, target_delta=1e-3, schedule=SCHEDULE, rounds=1)


def test_silo_parameters_from_plan() -> None:
    from healthfed_common.plan import parse_plan

    plan = parse_plan(
        {
            "name": "p", "dataset": "heart", "model": {"id": "logistic_regression"},
            "features": [{"name": "age"}], "label": {"name": "num"},
            "client_optimizer": {"name": "sgd", "learning_rate": 0.1},
            "local_epochs": 1, "batch_size": 16, "rounds": 5, "min_silos_per_round": 2,
            "dp": {"target_epsilon": 1.0, "target_delta": 1e-3, "l2_norm_clip": 0.5, "accountant": "rdp"},
        }
    )
    params = silo_dp_parameters(plan, 199)
    assert params.l2_norm_clip == 0.5
    assert params.plan_epsilon <= 1.0
    assert params.round_event == round_event(SamplingSchedule(199, 16, 1), params.noise_multiplier)
    assert epsilon_for_events([params.round_event] * 5, 1e-3, "rdp") == pytest.approx(params.plan_epsilon, rel=1e-9)


def test_event_json_round_trip_and_closed_decoder() -> None:
    event = compose([round_event(SCHEDULE, 1.5), plan_event(SCHEDULE, 2.0, 3)])
    text = event_to_json(event)
    assert event_from_json(text) == event
    assert event_to_json(event_from_json(text)) == text
    with pytest.raises(InvalidDpEvent):
        event_from_json('{"kind": "os.system", "noise_multiplier": 1}')
    with pytest.raises(InvalidDpEvent):
        event_from_json('{"kind": "GaussianDpEvent", "noise_multiplier": 1, "extra": 2}')
    with pytest.raises(InvalidDpEvent):
        event_from_json('{"kind": "GaussianDpEvent"}')
    with pytest.raises(InvalidDpEvent):
        event_from_json("not json")
