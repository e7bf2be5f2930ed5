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

Neighbouring relation: REPLACE-ONE, with n public. Everything a silo releases about a plan
(expected_examples, dp_steps, sigma, q and T) reveals its dataset size, so the honest
neighbours are two datasets of the same size differing in one record's value (one record
replaced), not one record added or removed. dp-accounting refuses REPLACE_ONE for
PoissonSampledDpEvent, so `ReplaceOneAccountant` derives it soundly from the add/remove
accountant by the chain D -> D'' -> D', where D'' is D without the replaced record x:

* D = S + {x} and D'' = S are add/remove neighbours, and so are D'' and D' = S + {x'}. With
  Poisson sampling (each record in each step independently with probability q, which stays
  the same public q = B/n on D and D') the whole composed mechanism M on (D, D'') and on
  (D'', D') is dominated by the add/remove privacy profile delta_AR(eps) (dp-accounting's
  PLD takes the max over the add and the remove direction, RDP is symmetric by construction).
  The chain uses the same D'' for every step and every plan, so it holds for any
  composition, adaptive included.
* For any split eps = eps1 + eps2 and any output set E:
  P_D(E) <= e^eps1 P_D''(E) + delta_AR(eps1) <= e^eps P_D'(E) + e^eps1 delta_AR(eps2) + delta_AR(eps1)
  (group privacy for k = 2: Dwork & Roth 2014, The Algorithmic Foundations of DP, Thm 2.2
  and its (eps, delta) form; Vadhan 2017, The Complexity of DP, Lemma 2.2). So
  delta_replace(eps) <= min over eps1 of delta_AR(eps1) + e^eps1 delta_AR(eps - eps1), and
  the reported epsilon is the smallest eps on a bisection whose bound is <= delta.

This is an upper bound, never below the true replace-one epsilon; for the Gaussian mechanism
without sampling (q = 1), whose exact replace-one curve is the Gaussian with sensitivity 2C
(Balle & Wang 2018, Thm 8), tests check it lies above that exact value and within a few
percent of it. `NeighborRel.REPLACE_SPECIAL` (dp-accounting) is not used: it replaces a
record by a special null record, which under Poisson sampling equals add/remove and would
under-state replace-one by about a factor of two.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import attr
import dp_accounting
import numpy as np
from numpy.typing import NDArray
from dp_accounting import dp_event as dp_event_lib
from dp_accounting import mechanism_calibration

from healthfed_common.dp.errors import CalibrationFailed, InvalidDpEvent

AccountantName = Literal["rdp", "pld"]
ACCOUNTANTS: tuple[AccountantName, ...] = ("rdp", "pld")

NeighbouringRelation = Literal["replace_one", "add_remove"]
# The relation every epsilon HealthFed charges, calibrates or reports is stated in. See the
# module docstring for why (n is public) and how (the add/remove chain).
NEIGHBOURING_RELATION: NeighbouringRelation = "replace_one"
RELATION_DESCRIPTIONS: dict[NeighbouringRelation, str] = {
    "replace_one": "replace-one: two datasets of the same (public) size differing in one record",
    "add_remove": "add/remove-one: two datasets differing by the presence of one record",
}

# PLD discretisation: dp-accounting's default; the PLD accountant gives a pessimistic (upper)
# bound at this resolution, so reported epsilons stay valid upper bounds.
PLD_VALUE_DISCRETIZATION_INTERVAL = 1e-4


RDP_ORDERS: tuple[float, ...] = tuple(dp_accounting.rdp.rdp_privacy_accountant.DEFAULT_RDP_ORDERS)

# Split points eps1/eps tried in the replace-one chain (any split is sound; the grid only
# decides how tight the bound is -- the optimum sits a little below eps/2).
_SPLIT_GRID = np.linspace(0.0, 1.0, 129)


def _add_remove_accountant(name: AccountantName) -> dp_accounting.PrivacyAccountant:
    if name == "rdp":
        return dp_accounting.rdp.RdpAccountant(orders=list(RDP_ORDERS))
    if name == "pld":
        return dp_accounting.pld.PLDAccountant(
            value_discretization_interval=PLD_VALUE_DISCRETIZATION_INTERVAL
        )
    raise ValueError(f"unknown accountant {name!r}; expected one of {ACCOUNTANTS}")


def make_accountant(
    name: AccountantName, relation: NeighbouringRelation = NEIGHBOURING_RELATION
) -> dp_accounting.PrivacyAccountant:
    """A fresh accountant with HealthFed's fixed settings (default RDP orders; PLD at 1e-4),
    reporting epsilon under `relation` (replace-one unless a caller asks for add/remove).

    Fixed settings matter: the ledger re-composes stored events later and must get the same
    epsilon the calibration saw."""
    inner = _add_remove_accountant(name)
    if relation == "add_remove":
        return inner
    if relation == "replace_one":
        return ReplaceOneAccountant(inner)
    raise ValueError(f"unknown neighbouring relation {relation!r}")


def _rdp_deltas(orders: NDArray[Any], rdp: NDArray[Any], epsilons: NDArray[Any]) -> NDArray[Any]:
    """dp-accounting's `rdp_privacy_accountant.compute_delta` (KL bound and Canonne, Kamath,
    Steinke 2020 Prop. 12), vectorised over epsilons; a test pins it to the original."""
    orders = orders[:, None]
    rdp = rdp[:, None]
    eps = epsilons[None, :]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        kl = np.where(rdp > 0, 0.5 * np.log1p(-np.exp(-rdp)), -np.inf)
        bound = (orders - 1) * (rdp - eps + np.log1p(-1 / orders)) - np.log(orders)
        log_delta = np.where(orders > 1.01, np.minimum(kl, bound), kl)
    deltas: NDArray[Any] = np.minimum(np.exp(np.min(log_delta, axis=0)), 1.0)
    return deltas


@dataclass(frozen=True)
class _HockeyStickTable:
    """delta(eps) = inf_mass + sum_{L_j > eps} p_j (1 - e^(eps - L_j)) of one discretised PLD
    PMF, from suffix sums: O(log size) per epsilon instead of a pass over the PMF (the
    replace-one search asks for thousands of epsilons)."""

    losses: NDArray[Any]
    tail_mass: NDArray[Any]
    tail_scaled: NDArray[Any]
    infinity_mass: float

    @classmethod
    def of(cls, losses: NDArray[Any], probs: NDArray[Any], infinity_mass: float) -> "_HockeyStickTable":
        keep = losses > 0  # only positive losses ever exceed an epsilon >= 0
        losses, probs = losses[keep], probs[keep]
        tail_mass = np.append(np.cumsum(probs[::-1])[::-1], 0.0)
        tail_scaled = np.append(np.cumsum((probs * np.exp(-losses))[::-1])[::-1], 0.0)
        return cls(losses, tail_mass, tail_scaled, float(infinity_mass))

    def deltas(self, epsilons: NDArray[Any]) -> NDArray[Any]:
        first = np.searchsorted(self.losses, epsilons, side="right")
        raw = self.tail_mass[first] - np.exp(epsilons) * self.tail_scaled[first]
        clipped: NDArray[Any] = np.clip(self.infinity_mass + np.maximum(raw, 0.0), 0.0, 1.0)
        return clipped


def _pld_tables(accountant: dp_accounting.PrivacyAccountant) -> list[_HockeyStickTable]:
    """The add and remove PMFs of a PLD accountant as hockey-stick tables; empty when the
    accountant holds a non-DP event or the PMFs are not the dense layout we read (then the
    caller falls back to the accountant's own get_delta)."""
    if getattr(accountant, "_contains_non_dp_event", False):
        return []
    pld = getattr(accountant, "_pld", None)
    tables = []
    for name in ("_pmf_remove", "_pmf_add"):
        pmf = getattr(pld, name, None)
        if pmf is None or not hasattr(pmf, "to_dense_pmf"):
            return []
        dense = pmf.to_dense_pmf()
        try:
            losses = (np.arange(dense.size) + dense._lower_loss) * dense._discretization
            tables.append(_HockeyStickTable.of(losses, np.asarray(dense._probs, np.float64), dense._infinity_mass))
        except AttributeError:
            return []
    return tables


class ReplaceOneAccountant(dp_accounting.PrivacyAccountant):
    """Replace-one epsilon/delta from an add/remove accountant by the two-step chain of the
    module docstring: delta_replace(eps) <= min_eps1 delta_AR(eps1) + e^eps1 delta_AR(eps - eps1).

    Composition is delegated to the wrapped add/remove accountant (its supported events are
    ours); only the conversion to (epsilon, delta) differs."""

    def __init__(self, inner: dp_accounting.PrivacyAccountant) -> None:
        super().__init__(dp_accounting.NeighboringRelation.REPLACE_ONE)
        self._inner = inner
        self._pld_tables: list[_HockeyStickTable] | None = None

    def _maybe_compose(self, event: dp_accounting.DpEvent, count: int, do_compose: bool) -> Any:
        if do_compose:
            self._pld_tables = None
        return self._inner._maybe_compose(event, count, do_compose)

    def add_remove_deltas(self, epsilons: NDArray[Any]) -> NDArray[Any]:
        """delta_AR at each of `epsilons` (vectorised; the same numbers as the wrapped
        accountant's get_delta, which tests check)."""
        if isinstance(self._inner, dp_accounting.rdp.RdpAccountant):
            return _rdp_deltas(np.asarray(RDP_ORDERS, dtype=np.float64), np.asarray(self._inner.rdp), epsilons)
        if self._pld_tables is None:
            self._pld_tables = _pld_tables(self._inner)
        if not self._pld_tables:  # a non-DP event was composed (or an unknown PMF layout)
            if getattr(self._inner, "_contains_non_dp_event", False):
                return np.ones_like(epsilons, dtype=np.float64)
            return np.array([float(self._inner.get_delta(float(e))) for e in epsilons])
        worst: NDArray[Any] = np.max([table.deltas(epsilons) for table in self._pld_tables], axis=0)
        return worst

    def add_remove_epsilon(self, target_delta: float) -> float:
        return float(self._inner.get_epsilon(target_delta))

    def get_delta(self, target_epsilon: float) -> float:
        if target_epsilon < 0:
            raise ValueError(f"epsilon cannot be negative, got {target_epsilon}")
        splits = _SPLIT_GRID * target_epsilon
        deltas = self.add_remove_deltas(splits)
        # splits is symmetric: target_epsilon - splits[i] == splits[-1 - i].
        with np.errstate(over="ignore", invalid="ignore"):
            chained = deltas + np.where(deltas[::-1] > 0, np.exp(splits) * deltas[::-1], 0.0)
        chained = np.where(np.isnan(chained), np.inf, chained)
        return float(min(1.0, float(np.min(chained))))

    def get_epsilon(self, target_delta: float) -> float:
        """The smallest epsilon (to 1e-6 relative, rounded up) whose chained delta is <=
        target_delta. Never below the add/remove epsilon (the chain's delta is at least
        delta_AR(eps) at any split)."""
        if not 0 < target_delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {target_delta}")
        low = self.add_remove_epsilon(target_delta)
        if math.isinf(low):
            return math.inf
        if self.get_delta(low) <= target_delta:
            return low
        high = max(2.0 * low, 1e-6)
        while self.get_delta(high) > target_delta:
            low, high = high, 2.0 * high
            if high > 1e6:
                return math.inf
        while high - low > 1e-6 * max(1.0, high):
            middle = 0.5 * (low + high)
            if self.get_delta(middle) <= target_delta:
                high = middle
            else:
                low = middle
        return high


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
    events: Iterable[dp_accounting.DpEvent],
    delta: float,
    accountant: AccountantName = "rdp",
    relation: NeighbouringRelation = NEIGHBOURING_RELATION,
) -> float:
    """Epsilon at `delta` of the composition of `events` under `accountant` and `relation`:
    the same as composing `ComposedDpEvent(events)` with `make_accountant(accountant,
    relation)` (for add/remove, a fresh dp-accounting accountant)."""
    acct = make_accountant(accountant, relation)
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
    relation: NeighbouringRelation,
) -> float:
    try:
        return float(
            dp_accounting.calibrate_dp_mechanism(
                lambda: make_accountant(accountant, relation),
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


def _sigma_guess(
    schedule: SamplingSchedule, rounds: int, target_epsilon: float, target_delta: float,
    relation: NeighbouringRelation,
) -> float:
    """Where the bracket search starts: the moments-accountant asymptote
    q*sqrt(2 T ln(1/delta))/epsilon (doubled for replace-one, whose sensitivity is 2C). Only a
    starting point (the search still brackets and verifies), but near the answer it saves
    most of the doubling steps, each an RDP evaluation that takes a second at the large
    sigmas small epsilons need."""
    steps = schedule.steps_per_round * rounds
    guess = schedule.sampling_probability * math.sqrt(2 * steps * math.log(1 / target_delta)) / target_epsilon
    if relation == "replace_one":
        guess *= 2.0
    return min(max(guess, 0.5), 1e4)


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    target_delta: float,
    schedule: SamplingSchedule,
    rounds: int,
    accountant: AccountantName = "rdp",
    tolerance: float = 1e-4,
    relation: NeighbouringRelation = NEIGHBOURING_RELATION,
) -> float:
    """The smallest noise multiplier (within `tolerance`) whose whole-plan epsilon at
    `target_delta` is <= `target_epsilon` under `accountant` and `relation` (replace-one
    by default: see the module docstring).

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
        dp_accounting.LowerEndpointAndGuess(
            1e-3, _sigma_guess(schedule, rounds, target_epsilon, target_delta, relation)),
        tolerance, relation,
    )
    sigma = rdp_sigma
    if accountant == "pld":
        lower = max(0.25, 0.5 * rdp_sigma)
        pld_at_rdp = epsilon_for_events([event_for(rdp_sigma)], target_delta, "pld", relation)
        pld_at_lower = epsilon_for_events([event_for(lower)], target_delta, "pld", relation)
        if pld_at_rdp > target_epsilon:
            # PLD's discretised upper bound above RDP's here (possible only at the margin):
            # keep the RDP sigma and let the check below raise it.
            sigma = rdp_sigma
        elif lower < rdp_sigma and pld_at_lower > target_epsilon:
            sigma = _brent(
                "pld", event_for, target_epsilon, target_delta,
                dp_accounting.ExplicitBracketInterval(lower, rdp_sigma), tolerance, relation,
            )
        else:
            sigma = lower
    for _ in range(64):
        if epsilon_for_events([event_for(sigma)], target_delta, accountant, relation) <= target_epsilon:
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
