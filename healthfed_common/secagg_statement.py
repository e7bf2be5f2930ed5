"""What secure aggregation guarantees for one plan, in numbers and in words.

One source for every place that tells a person what a plan's secure aggregation protects: the
data steward's approval text, `silo-node plans show`, the run's summary.json and the README's
threat model (docs/threat-model.md) all state the same figures, computed here from the plan.

The figures (Bonawitz et al. 2017, active-security variant, with HealthFed's consistency round):
with a cohort of n and threshold t, an aggregator colluding with c silos can make two different
survivor splits each collect t consistency signatures only if 2t - n <= c (honest silos sign one
split), and can reconstruct a secret from colluders' shares alone only if c >= t. So it learns
nothing beyond sums of at least t silos while c <= 2t - n - 1; inside such a sum, the honest
updates number at least t - c (colluders know their own inputs).
"""

from __future__ import annotations

from typing import Any

from healthfed_common.plan import Plan


def secure_aggregation_statement(plan: Plan) -> dict[str, Any]:
    """The plan's secure-aggregation guarantee as data (JSON-ready)."""
    spec = plan.secure_aggregation
    if spec.protocol == "none":
        return {
            "protocol": "none",
            "guarantee": "none: the coordinator sums the integer updates in plain and sees each hospital's update",
        }
    n = len(plan.cohort)
    t = plan.secagg_threshold
    c = plan.secagg_colluders
    chosen = plan.secagg_graph
    assert chosen is not None
    masking = (
        "every hospital masks with every other" if chosen.complete else
        f"each hospital masks with {chosen.degree} of the {n - 1} others (SecAgg+; Shamir threshold "
        f"{chosen.neighbourhood_threshold} of {chosen.degree + 1} in each neighbourhood): removing any {c} colluding "
        f"and {n - t} dropped hospitals leaves that graph connected, so this holds whatever graph the nonces give "
        "and whoever the coordinator declares dropped"
    )
    return {
        "protocol": spec.protocol,
        "cohort": [{"silo_id": m.silo_id, "signing_key_fingerprint": m.fingerprint} for m in plan.cohort],
        "cohort_size": n,
        "threshold": t,
        "dropouts_tolerated": n - t,
        "colluding_silos_tolerated": c,
        "honest_updates_in_any_revealed_sum_at_least": t - c,
        "masking_graph": chosen.as_dict(),
        "guarantee": (
            f"the coordinator learns this hospital's update only inside a sum over at least {t} of the {n} cohort "
            f"hospitals, even if it deviates from the protocol and colludes with up to {c} of them; each update is "
            f"masked in at most one session; {masking}"
        ),
        "not_covered": [
            "a cohort listing keys the coordinator holds (fake hospitals): compare every fingerprint out of band",
            f"colluding hospitals know their own updates: with {c} colluders a revealed sum holds at least "
            f"{t - c} honest updates",
            "which answering hospitals form the sum, and whether a round completes (the coordinator decides)",
            "a malicious hospital poisoning the model",
            "metadata: who takes part, when, message and dataset sizes",
        ],
        "reference": "docs/threat-model.md",
    }


def approval_lines(plan: Plan) -> list[str]:
    """The statement as lines for the steward's approval text."""
    statement = secure_aggregation_statement(plan)
    if statement["protocol"] == "none":
        return [f"Secure aggregation: {statement['guarantee']}."]
    lines = [
        f"Secure aggregation ({statement['protocol']}): {statement['guarantee']}.",
        "Cohort (compare each fingerprint with the hospital itself, by phone or letter, before approving):",
    ]
    lines += [f"  - {m['silo_id']}: {m['signing_key_fingerprint']}" for m in statement["cohort"]]
    lines.append("Not covered: " + "; ".join(statement["not_covered"]) + ".")
    return lines
