"""Privacy accounting for record-level DP-SGD in a silo, with `dp-accounting`.

What one round of a silo's training does, exactly (and nothing else touches the records):
`steps_per_round = local_epochs * ceil(n / batch_size)` steps; in each step every record is
included independently with probability `q = min(1, batch_size / n)` (Poisson sampling, done
by `healthfed_common.dp.sampling`), the included records' gradients are clipped to L2 norm C
and summed, and Gaussian noise N(0, (sigma*C)^2) is added. Its DpEvent is therefore

    SelfComposed(PoissonSampled(q, Gaussian(sigma)), steps_per_round)

and a plan of R rounds is that event self-composed R times. The noise multiplier sigma is
calibrated so that the whole plan meets the plan's (target_epsilon, target_delta) on this
silo's n. Each silo calibrates its own sigma (it depends on n); the computation in the
MapReduceForm does not, because sigma reaches it as data (see `sampling`).

Epsilon is always computed by composing events with an accountant -- never by adding
epsilons -- so the ledger, the calibration and a direct dp-accounting computation agree.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import attr
import dp_accounting
from dp_accounting import dp_event as dp_event_lib
from dp_accounting import mechanism_calibration

from healthfed_common.dp.errors import CalibrationFailed, InvalidDpEvent

AccountantName = Literal["rdp", "pld"]
ACCOUNTANTS: tuple[AccountantName, ...] = ("rdp", "pld")

# PLD discretisation: dp-accounting's default; the PLD accountant gives a pessimistic (upper)
# bound at this resolution, so reported epsilons stay valid upper bounds.
PLD_VALUE_DISCRETIZATION_INTERVAL = 1e-4


def make_accountant(name: AccountantName) -> dp_accounting.PrivacyAccountant:
    """A fresh accountant with HealthFed's fixed settings (default RDP orders; PLD at 1e-4).

    Fixed settings matter: the ledger re-composes stored events later and must get the same
    epsilon the calibration saw."""
    if name == "rdp":
        return dp_accounting.rdp.RdpAccountant()
    if name == "pld":
        return dp_accounting.pld.PLDAccountant(
            value_discretization_interval=PLD_VALUE_DISCRETIZATION_INTERVAL
        )
    raise ValueError(f"unknown accountant {name!r}; expected one of {ACCOUNTANTS}")


@dataclass(frozen=True)
class SamplingSchedule:
    """The public, data-size-derived shape of one silo's round of DP-SGD."""

    dataset_size: int
    batch_size: int
    local_epochs: int

    def __post_init__(self) -> None:
        if self.dataset_size < 1:
            raise ValueError("dataset_size must be >= 1")
        if self.batch_size < 1 or self.local_epochs < 1:
            raise ValueError("batch_size and local_epochs must be >= 1")

    @property
    def sampling_probability(self) -> float:
        """q: the probability that one record is in one step's batch."""
        return min(1.0, self.batch_size / self.dataset_size)

    @property
    def expected_batch_size(self) -> float:
        """q * n: the denominator of the DP-SGD gradient estimate (never the realised size,
        which would leak whether a record was sampled)."""
        return self.sampling_probability * self.dataset_size

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.dataset_size / self.batch_size))

    @property
    def steps_per_round(self) -> int:
        return self.local_epochs * self.steps_per_epoch


def step_event(sampling_probability: float, noise_multiplier: float) -> dp_accounting.DpEvent:
    """One DP-SGD step: the subsampled Gaussian mechanism."""
    if not 0.0 < sampling_probability <= 1.0:
        raise ValueError(f"sampling probability must be in (0, 1], got {sampling_probability}")
    if noise_multiplier < 0:
        raise ValueError(f"noise multiplier must be >= 0, got {noise_multiplier}")
    return dp_accounting.PoissonSampledDpEvent(
        sampling_probability, dp_accounting.GaussianDpEvent(noise_multiplier)
    )


def round_event(schedule: SamplingSchedule, noise_multiplier: float) -> dp_accounting.DpEvent:
    """The exact DpEvent of one round on one silo."""
    return dp_accounting.SelfComposedDpEvent(
        step_event(schedule.sampling_probability, noise_multiplier), schedule.steps_per_round
    )


def plan_event(
    schedule: SamplingSchedule, noise_multiplier: float, rounds: int
) -> dp_accounting.DpEvent:
    """The DpEvent of a whole plan: `rounds` rounds, each `round_event`."""
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    return dp_accounting.SelfComposedDpEvent(round_event(schedule, noise_multiplier), rounds)


def epsilon_for_events(
    events: Iterable[dp_accounting.DpEvent], delta: float, accountant: AccountantName = "rdp"
) -> float:
    """Epsilon at `delta` of the composition of `events` under `accountant`: the same as
    composing `ComposedDpEvent(events)` with a fresh dp-accounting accountant."""
    acct = make_accountant(accountant)
    # Composition is commutative, so identical events are composed as one event with a
    # count: dp-accounting then self-composes them (RDP: multiplies; PLD: fast
    # exponentiation) instead of one convolution per round -- seconds instead of minutes.
    groups: dict[str, tuple[dp_accounting.DpEvent, int]] = {}
    for event in events:
        if not acct.supports(event):
            raise InvalidDpEvent(f"the {accountant} accountant cannot account {type(event).__name__}")
        key = event_to_json(event)
        first, count = groups.get(key, (event, 0))
        groups[key] = (first, count + 1)
    if not groups:
        return 0.0
    for key in sorted(groups):
        event, count = groups[key]
        acct.compose(event, count)
    return float(acct.get_epsilon(delta))


def _brent(
    accountant: AccountantName,
    event_for: Callable[[float], dp_accounting.DpEvent],
    target_epsilon: float,
    target_delta: float,
    bracket: Any,
    tolerance: float,
) -> float:
    try:
        return float(
            dp_accounting.calibrate_dp_mechanism(
                lambda: make_accountant(accountant),
                event_for,
                target_epsilon,
                target_delta,
                bracket_interval=bracket,
                tol=tolerance,
            )
        )
    except (
        mechanism_calibration.NoBracketIntervalFoundError,
        mechanism_calibration.NoOptimumFoundError,
    ) as error:
        raise CalibrationFailed(
            f"no noise multiplier meets epsilon={target_epsilon} ({accountant}): {error}"
        ) from None


def _sigma_guess(schedule: SamplingSchedule, rounds: int, target_epsilon: float, target_delta: float) -> float:
    """Where the bracket search starts: the moments-accountant asymptote
    q*sqrt(2 T ln(1/delta))/epsilon. Only a starting point (the search still brackets and
    verifies), but near the answer it saves most of the doubling steps, each an RDP
    evaluation that takes a second at the large sigmas small epsilons need."""
    steps = schedule.steps_per_round * rounds
    guess = schedule.sampling_probability * math.sqrt(2 * steps * math.log(1 / target_delta)) / target_epsilon
    return min(max(guess, 0.5), 1e4)


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    target_delta: float,
    schedule: SamplingSchedule,
    rounds: int,
    accountant: AccountantName = "rdp",
    tolerance: float = 1e-4,
) -> float:
    """The smallest noise multiplier (within `tolerance`) whose whole-plan epsilon at
    `target_delta` is <= `target_epsilon` under `accountant`.

    The result is verified after the search and nudged upwards if Brent's method landed on
    the wrong side of the optimum, so the plan never overspends its target."""
    if target_epsilon <= 0 or not 0 < target_delta < 1:
        raise CalibrationFailed("target epsilon must be > 0 and target delta in (0, 1)")

    def event_for(sigma: float) -> dp_accounting.DpEvent:
        return plan_event(schedule, sigma, rounds)

    # RDP first (cheap at any sigma). RDP's bound is never tighter than PLD's, so the PLD
    # optimum lies below the RDP sigma: bracket it there. (A PLD evaluated near sigma = 0
    # needs tens of GiB, which is why the search never starts PLD from 0.)
    rdp_sigma = _brent(
        "rdp", event_for, target_epsilon, target_delta,
        dp_accounting.LowerEndpointAndGuess(1e-3, _sigma_guess(schedule, rounds, target_epsilon, target_delta)),
        tolerance,
    )
    sigma = rdp_sigma
    if accountant == "pld":
        lower = max(0.25, 0.5 * rdp_sigma)
        pld_at_rdp = epsilon_for_events([event_for(rdp_sigma)], target_delta, "pld")
        pld_at_lower = epsilon_for_events([event_for(lower)], target_delta, "pld")
        if pld_at_rdp > target_epsilon:
            # PLD's discretised upper bound above RDP's here (possible only at the margin):
            # keep the RDP sigma and let the check below raise it.
            sigma = rdp_sigma
        elif lower < rdp_sigma and pld_at_lower > target_epsilon:
            sigma = _brent(
                "pld", event_for, target_epsilon, target_delta,
                dp_accounting.ExplicitBracketInterval(lower, rdp_sigma), tolerance,
            )
        else:
            sigma = lower
    for _ in range(64):
        if epsilon_for_events([event_for(sigma)], target_delta, accountant) <= target_epsilon:
            return sigma
        sigma += tolerance
    raise CalibrationFailed("calibrated noise multiplier does not meet the target")


@dataclass(frozen=True)
class SiloDpParameters:
    """What a silo derives from a plan's DP spec and its own dataset size."""

    noise_multiplier: float
    sampling_probability: float
    expected_batch_size: float
    steps_per_round: int
    l2_norm_clip: float
    accountant: AccountantName
    round_event: dp_accounting.DpEvent
    plan_epsilon: float
    plan_delta: float


def silo_dp_parameters(plan: Any, dataset_size: int) -> SiloDpParameters:
    """Calibrates a silo's DP-SGD parameters from a `healthfed_common.plan.Plan` with `dp` set.

    Called by the silo before training (and by the aggregator only to display what a silo of
    size n would spend; the aggregator never needs it to build the computation)."""
    if plan.dp is None:
        raise CalibrationFailed("plan has no dp section")
    schedule = SamplingSchedule(dataset_size, plan.batch_size, plan.local_epochs)
    sigma = calibrate_noise_multiplier(
        target_epsilon=plan.dp.target_epsilon,
        target_delta=plan.dp.target_delta,
        schedule=schedule,
        rounds=plan.rounds,
        accountant=plan.dp.accountant,
    )
    plan_eps = epsilon_for_events(
        [plan_event(schedule, sigma, plan.rounds)], plan.dp.target_delta, plan.dp.accountant
    )
    return SiloDpParameters(
        noise_multiplier=sigma,
        sampling_probability=schedule.sampling_probability,
        expected_batch_size=schedule.expected_batch_size,
        steps_per_round=schedule.steps_per_round,
        l2_norm_clip=plan.dp.l2_norm_clip,
        accountant=plan.dp.accountant,
        round_event=round_event(schedule, sigma),
        plan_epsilon=plan_eps,
        plan_delta=plan.dp.target_delta,
    )


# --- serialisation --------------------------------------------------------------------------
# A closed decoder: stored JSON may name only the event classes below. (dp-accounting's own
# `DpEvent.from_named_tuple` imports whatever module a record names -- not for a ledger.)
_EVENT_CLASSES: dict[str, type[dp_accounting.DpEvent]] = {
    cls.__name__: cls
    for cls in (
        dp_event_lib.NoOpDpEvent,
        dp_event_lib.NonPrivateDpEvent,
        dp_event_lib.GaussianDpEvent,
        dp_event_lib.LaplaceDpEvent,
        dp_event_lib.SelfComposedDpEvent,
        dp_event_lib.ComposedDpEvent,
        dp_event_lib.PoissonSampledDpEvent,
        dp_event_lib.SampledWithReplacementDpEvent,
        dp_event_lib.SampledWithoutReplacementDpEvent,
    )
}


def event_to_jsonable(event: dp_accounting.DpEvent) -> dict[str, Any]:
    """A JSON-ready dict: {"kind": ClassName, field: value, ...}, nested for sub-events."""
    name = type(event).__name__
    if name not in _EVENT_CLASSES or type(event) is not _EVENT_CLASSES[name]:
        raise InvalidDpEvent(f"unsupported DP event type {name}")
    out: dict[str, Any] = {"kind": name}
    for field in attr.fields(type(event)):
        value = getattr(event, field.name)
        if isinstance(value, dp_accounting.DpEvent):
            out[field.name] = event_to_jsonable(value)
        elif isinstance(value, (list, tuple)):
            out[field.name] = [event_to_jsonable(v) for v in value]
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidDpEvent(f"{name}.{field.name}: unsupported value {value!r}")
        else:
            out[field.name] = value
    return out


def event_from_jsonable(data: Any) -> dp_accounting.DpEvent:
    """Inverse of `event_to_jsonable`; rejects unknown classes and fields."""
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        raise InvalidDpEvent("a DP event must be an object with a 'kind' name")
    cls = _EVENT_CLASSES.get(data["kind"])
    if cls is None:
        raise InvalidDpEvent(f"unsupported DP event type {data['kind']!r}")
    names = {f.name for f in attr.fields(cls)}
    extra = set(data) - names - {"kind"}
    if extra:
        raise InvalidDpEvent(f"{cls.__name__}: unknown fields {sorted(extra)}")
    kwargs: dict[str, Any] = {}
    for name in names:
        if name not in data:
            raise InvalidDpEvent(f"{cls.__name__}: missing field {name!r}")
        value = data[name]
        if isinstance(value, dict):
            kwargs[name] = event_from_jsonable(value)
        elif isinstance(value, list):
            kwargs[name] = [event_from_jsonable(v) for v in value]
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidDpEvent(f"{cls.__name__}.{name}: not a number")
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise InvalidDpEvent(f"{cls.__name__}: {error}") from None


def event_to_json(event: dp_accounting.DpEvent) -> str:
    """Canonical JSON (sorted keys, no spaces): equal events give equal strings."""
    return json.dumps(event_to_jsonable(event), sort_keys=True, separators=(",", ":"))


def event_from_json(text: str | bytes) -> dp_accounting.DpEvent:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidDpEvent(f"DP event is not JSON: {error.msg if hasattr(error, 'msg') else error}") from None
    return event_from_jsonable(data)


def coerce_event(event: dp_accounting.DpEvent | str | bytes | dict[str, Any]) -> dp_accounting.DpEvent:
    """Accepts a DpEvent, its JSON text, or its JSON-ready dict."""
    if isinstance(event, dp_accounting.DpEvent):
        event_to_jsonable(event)  # validates it is a type we can store
        return event
    if isinstance(event, dict):
        return event_from_jsonable(event)
    return event_from_json(event)


def compose(events: Sequence[dp_accounting.DpEvent]) -> dp_accounting.DpEvent:
    """One ComposedDpEvent for a list (what the ledger's spending is, as a single event)."""
    return dp_accounting.ComposedDpEvent(list(events))
