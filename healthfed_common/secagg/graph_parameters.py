"""The SecAgg+ degree k and per-neighbourhood threshold, derived so the guarantee needs no luck.

Bell et al. 2020 replace SecAgg's complete graph by a sparse k-regular one. Sparse is only safe
when (1) the silos that are honest and still answering stay *connected* (otherwise the
coordinator unmasks each component's sum on its own -- a smaller sum than promised), (2) no
silo's colluding neighbours hold enough Shamir shares to rebuild its secrets, and (3) enough
neighbours survive to rebuild the secrets of every dropped silo (otherwise the round cannot
finish). Bell et al. bound (1) and (2) *in probability* over a random graph with randomly
placed dropouts. HealthFed's adversary is a coordinator that decides which silos "dropped"
after it has seen the graph, allied with silos that may re-roll their graph nonce, so a bound
over random placement would not hold. Instead k and the neighbourhood threshold are chosen
so that (1) and (2) hold for *every* graph and every choice of dropouts:

  (1) The graph (graph.py) is a Harary graph H(k, n), which is k-connected: removing fewer
      than k nodes never disconnects it. With c colluders and up to D = n - t dropped silos
      (the plan's threshold t: the protocol goes on with as few as t), k >= c + D + 1 keeps
      the honest survivors connected, whoever is removed.
  (2) Each secret is Shamir-shared among its silo and the k neighbours (m = k + 1 holders),
      of whom at most c collude: the neighbourhood threshold t_loc > c, and 2·t_loc > m + c,
      so even a coordinator that showed two halves of the honest holders two different
      survivor splits could not collect t_loc shares of *both* of a silo's secrets (the signed
      consistency round already stops that split; this margin does not rely on it).
  (3) Completing the round is probabilistic, as in Bell et al.: with D silos crashing at
      random, a silo's surviving neighbours follow the hypergeometric law H(n, n - D, k), and
      fewer than t_loc of them must have probability at most 2^-CORRECTNESS_BITS / n (union
      bound over the n silos). A coordinator that "drops" silos on purpose can only make the
      round fail, which it can always do.

The smallest even k meeting all three is used; when none below n - 1 does, the complete graph
(classic SecAgg, guarantee c <= 2t - n - 1) runs. For hospital-sized cohorts with the default
threshold that is always the case; sparse graphs pay off for large cohorts with few assumed
colluders and dropouts (e.g. 50 silos, t = 48, c = 2: degree 8).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

from healthfed_common.secagg import graph
from healthfed_common.secagg.errors import InvalidParameters

CORRECTNESS_BITS: int = 20


class GraphTooSparse(InvalidParameters):
    """An explicitly chosen degree that a coordinator could split, or that would rarely finish."""


@dataclass(frozen=True)
class GraphRequirement:
    """What the graph must withstand: a cohort of `cohort` silos of which up to
    `cohort - threshold` drop out and `colluders` collude with the coordinator."""

    cohort: int
    threshold: int
    colluders: int
    correctness_bits: int = CORRECTNESS_BITS

    def __post_init__(self) -> None:
        n, t, c = self.cohort, self.threshold, self.colluders
        if n < 2 or not (0 < t <= n) or not (0 <= c < n):
            raise ValueError(f"need 2 <= cohort, 0 < threshold <= cohort, 0 <= colluders < cohort; got {n}, {t}, {c}")

    @property
    def dropouts(self) -> int:
        return self.cohort - self.threshold


@dataclass(frozen=True)
class GraphChoice:
    """The degree to use and, for a sparse graph, the Shamir threshold inside each
    neighbourhood, with log2 of the probability that random crashes stop the round."""

    requirement: GraphRequirement
    degree: int
    neighbourhood_threshold: int | None
    log2_round_failure: float

    @property
    def complete(self) -> bool:
        return self.degree >= self.requirement.cohort - 1

    def as_dict(self) -> dict[str, object]:
        r = self.requirement
        return {
            "degree": self.degree,
            "complete_graph": self.complete,
            "neighbourhood_threshold": self.neighbourhood_threshold,
            "colluders_assumed": r.colluders,
            "dropouts_assumed": r.dropouts,
            "security": "holds for every graph and every choice of dropped silos (no probability)",
            "correctness_bits": r.correctness_bits,
            "log2_round_failure_under_random_crashes": self.log2_round_failure,
        }


def _log2(numerator: int, denominator: int) -> float:
    return -math.inf if numerator == 0 else math.log2(numerator) - math.log2(denominator)


def _hypergeometric_counts(population: int, marked: int, draws: int) -> list[int]:
    """The hypergeometric law as exact integer counts over C(population, draws) (integers,
    not fractions: no gcd on big numbers, so even n = 10^4 takes milliseconds)."""
    unmarked = population - marked
    counts = []
    inside, outside = 1, math.comb(unmarked, draws)  # C(marked, x), C(unmarked, draws - x) at x = 0
    for x in range(draws + 1):
        counts.append(inside * outside)
        if x == draws:
            break
        inside = inside * (marked - x) // (x + 1)  # C(marked, x + 1), exact
        rest = draws - x  # C(unmarked, rest - 1) = C(unmarked, rest) * rest / (unmarked - rest + 1)
        outside = outside * rest // (unmarked - rest + 1) if unmarked - rest + 1 > 0 else math.comb(unmarked, rest - 1)
    return counts


def neighbourhood_threshold(k: int, colluders: int) -> int:
    """t_loc for m = k + 1 holders of whom `colluders` may collude: (2) above."""
    return max(colluders + 1, (k + 1 + colluders) // 2 + 1, 2)


@functools.lru_cache(maxsize=256)
def assess(requirement: GraphRequirement, k: int) -> GraphChoice | str:
    """The neighbourhood threshold and round-failure bound for degree k, or why k does not
    qualify."""
    r = requirement
    n, c, d = r.cohort, r.colluders, r.dropouts
    if k >= n - 1:
        return GraphChoice(r, n - 1, None, -math.inf)
    degree = graph.effective_degree(n, k)
    if degree <= c + d:
        return (f"a degree-{degree} graph is split by removing {degree} silos, and {c} colluding plus {d} "
                f"dropped silos may be removed (needs at least {c + d + 1})")
    t_loc = neighbourhood_threshold(degree, c)
    if t_loc > degree:
        return f"the neighbourhood threshold {t_loc} exceeds the {degree} neighbours"
    surviving = _hypergeometric_counts(n, n - d, degree)
    short = sum(surviving[:t_loc])
    total = math.comb(n, degree)
    if short * 2 ** r.correctness_bits * n > total:
        return (f"with {d} silos crashing at random, some silo keeps fewer than {t_loc} of its {degree} neighbours "
                f"with probability up to 2^{min(0.0, _log2(short * n, total)):.1f} (allowed 2^-{r.correctness_bits})")
    return GraphChoice(r, degree, t_loc, _log2(n * short, total))


def choose_graph(requirement: GraphRequirement) -> GraphChoice:
    """The smallest even degree meeting the requirement, else the complete graph.

    Shortcut: (2) and (3) together need more surviving than half the holders plus the
    colluding ones, i.e. n > 2·dropouts + colluders (Bell et al.'s γ + 2δ < 1); without it no
    degree qualifies, and the search would only confirm that, slowly, at large n."""
    r = requirement
    if 2 * r.dropouts + r.colluders < r.cohort:
        first = r.colluders + r.dropouts + 1
        for k in range(first + first % 2, r.cohort - 1, 2):
            choice = assess(r, k)
            if isinstance(choice, GraphChoice):
                return choice
    complete = assess(r, r.cohort - 1)
    assert isinstance(complete, GraphChoice)
    return complete


def check_degree(requirement: GraphRequirement, k: int) -> GraphChoice:
    """An explicitly chosen degree, refused (`GraphTooSparse`) when it misses (1)-(3)."""
    choice = assess(requirement, k)
    if isinstance(choice, GraphChoice):
        return choice
    smallest = choose_graph(requirement)
    instead = "the complete graph (classic SecAgg)" if smallest.complete else f"degree {smallest.degree}"
    raise GraphTooSparse(
        f"SecAgg+ degree {k} is unsafe for a cohort of {requirement.cohort} with threshold "
        f"{requirement.threshold} and {requirement.colluders} colluders: {choice}; the smallest degree "
        f"that qualifies is {instead}"
    )
