"""Fed-Heart-Disease (FLamby protocol) as a REAL four-hospital HealthFed federation, with and
without record-level DP-SGD, on three train/test split seeds: writes
bench-results/fed_heart_disease.json (one entry per split seed).

What runs. Four `silo-node run` processes (cleveland, hungarian, switzerland, va) and one
`aggregator run` process per plan, on loopback with mutual TLS, through
`pipelines.local_federation.LocalFederation`: provisioning, an approval policy per silo,
`silo-node data add` with a dataset policy, `silo-node ledger set-budget`, then the plans. The
silos are started once (without --exit-when-finished) and serve every plan; the aggregator is
restarted with each plan (it runs one plan per process). A silo that exits between plans is
started again on the same kit and state and the restart is reported in the JSON. Each plan is
traced once by this process and its verified plan-cache entry copied to the five nodes
(`pipelines.local_federation.seed_plan_caches`, as the federation tests do; each node still
checks the fingerprint), which saves four traces per plan on two shared cores. Per split seed,
three settings x 5 seeds = 15 plans: no DP (with per-hospital personalisation at evaluation);
target (epsilon=1, delta=1e-3); target (epsilon=0.1, delta=1e-3). Seed s sets
`seeds.model_init = seeds.data_order = s` (DP noise and Poisson sampling use OS entropy
anyway). Each silo evaluates the final model on its own `test` subset (EvaluateTask); the
figure is the plain mean of the four per-silo accuracies of the run report, then the mean over
seeds. The no-DP plan's `personalization` makes each silo also fine-tune
the final global model on its own training records, for the number of epochs among
PERSONALIZATION_CHOICES (0 keeps the global model) that its own choice picks on those records
(grid version 5: PERSONALIZATION_FOLDS-fold cross-validation and the one-standard-error rule;
versions 3 and 4: the best on a held-out quarter of them), and release the fine-tuned copy's metrics and that count beside the global
ones (the weights never leave the silo): the "personalised" figure comes from the same runs.

Split seeds. `--split-seed N` is the protocol's train_test_split random_state (FLamby's is 43,
the default). The report uses SPLIT_SEEDS = 43, 44, 45, fixed in code before any result on
them was seen (46 is excluded: an earlier review saw test figures on it), and FRESH_SPLIT_SEEDS
= 47, 48, fixed with grid version 3 before any run on them (49, 50 added 2026-12-06, before any
run on them, grid unchanged; 51, 52 added 2026-12-06 with grid version 4, before any run on
them; 53, 54 added 2026-12-07 with grid version 5, before any run on them): grid versions 2 and 3 were fixed after test figures of 43-45 had been seen, so 47 to 50
are the splits nothing was tuned on under version 3, and version 4 was fixed after test figures
of 43-50 had been seen, so 51 and 52 are the splits nothing was tuned on under version 4, and
version 5 after those of 43-52, so 53 and 54 test it. The split alone moves
what is reachable (Switzerland has 16 test records), so each split's entry also holds, computed
in the same run OUTSIDE the federation (pipelines.fed_heart_disease_reference; a real
coordinator never pools records): the POOLED REFERENCE -- one logistic regression trained
centrally on the union of the four training views, under both preprocessings (train-set
standardisation and public clinical ranges), with the non-private plan's optimizer, batch size
and passes, scored as the federation is (plus a converged scikit-learn fit as a check); each
setting is held to the reference under ITS preprocessing (the no-DP plan's chosen one, public
ranges for DP) and the other is reported beside it -- and each hospital's LOCAL-ONLY model
(its own train-standardised training view, its own test view).

Data protocol (../shared/data/fed_heart_disease/README.md). The four files are read in place,
never copied into the repository. Per hospital: drop slope, ca, thal (they stay in the export
and the silo's minimisation drops them: not in the allow-list); drop rows with a missing value
in the other columns; label num > 0; `train_test_split(arange(n), train_size=0.66,
test_size=0.34, random_state=<split seed>, shuffle=True, stratify=label)` -> 199/104, 172/89,
30/16, 85/45 (the sizes do not depend on the seed). Switzerland keeps 45 positives and ONE
negative: scikit-learn refuses to stratify a class of one, so that hospital alone is split
unstratified (same call, stratify=None; same sizes). The kept rows, with a header and a
`split` column (train/test), are written to the work folder (runs/..., git-ignored) as each
hospital's export. Features: the silo's training view (silo_node.datasets.view) one-hot
encodes cp (categories 2,3,4) and restecg (1,2) -- the first level dropped by listing only the
others, 13 inputs in all. Without DP the numeric inputs are by default standardised with the
hospital's own TRAIN mean and sample std (ddof=1, torch's default, as FLamby divides by), and
the five indicators either too (FLamby's protocol, plan option `standardize_indicators`) or
left 0/1 -- a searched hyper-parameter, reported per split. The one remaining difference from
FLamby's code: FLamby divides by std + 1e-9, the silo leaves a column that is constant in
training only centred (Switzerland's chol is all 0 in both subsets, so both give 0 there). DP
plans (issue 12) may use no statistic of the records: their numeric inputs are clamped to
public clinical ranges (`PUBLIC_BOUNDS`) and scaled to [-1, 1], and their indicators stay 0/1
(a DP plan with `standardize_indicators` is refused, NON_PRIVATE_PREPROCESSING); epsilon is
replace-one record-level (n public), PLD accountant, delta = 1e-3, charged by each silo's
ledger. A non-DP plan may ask for that same transform (plan field `preprocessing:
public_bounds`, `Hyper.public_ranges`; indicators 0/1 then, `standardize_indicators` is refused
as under DP): every hospital then scales its inputs alike, which per-hospital standardisation
does not -- also a searched hyper-parameter (grid version 2, below). Plans that do not ask for
it carry no `preprocessing` key, so their hashes are those of the earlier runs.

Hyper-parameters, chosen per split seed ONLY on that split's training records and NOT charged
to any ledger (the epsilons reported cover the final plans only): each train set split 75/25
(stratified where possible), the federation simulated in-process with the very MapReduceForm
the processes run (`build_federated_computations`, the silo's dataset factories and DP
calibration, the aggregator's `aggregate_round`), scored by mean per-hospital validation
accuracy; the test sets are never read for this. The first version of `grid()` (12 non-DP
candidates, the DP grids, and a searched personalisation epoch count) was fixed in code before
any test figure under it was computed. grid() version 2 (GRID_HISTORY) was fixed on 2026-11-26 AFTER the test
figures of splits 43/44/45 under version 1 had been seen: it adds twelve non-DP candidates with
the public ranges (client rate 0.1 and 1.0), which version 1 could not try because the plan schema tied them to DP (the
reason is that structural change, and the choice among candidates still reads validation
records only); its figures are therefore not free of having seen those test sets, and the
report says so (the JSON head's "hyper_parameter_selection"). grid() version 3 was fixed later
that day, AFTER the version-2 test figures of 43/44/45 (per hospital) had been seen: the
benchmark no longer searches one fine-tuning epoch count for all hospitals; each silo chooses
its own on its training records (the global candidates are unchanged, so version 2's global
choices stand). grid() version 4 was fixed on 2026-12-06 AFTER the version-3 test figures of
43-50 had been seen: square-root client weighting added, version 1's candidates dropped, a third
no-DP validation split (GRID_HISTORY). `--select-only --split-seed N`
runs the search (VALIDATION_SPLITS: 3 validation splits without DP, 2 with DP_NOISE_DRAWS = 8 noise draws each under DP) and writes that
split's entry of bench-results/fed_heart_disease_selection.json; a benchmark run reads its
split's entry (`--select` searches and then runs the winners). With `--settings no_dp` (any
subset) both keep the other settings of the split's entry: the search replaces only the
no-DP scores (each setting's scores carry `produced_by`: date, command, grid version), the
benchmark only the no-DP results, chosen hyper-parameters and personalised figures, then
recomputes the per-hospital table and the acceptance from the merged results against the
run's own pooled references; the entry then names the run of each setting
(`settings_measured_by`, `earlier_runs` with each earlier run's machine, wall times and ledger,
`mixes_runs`).

Results (bench-results/fed_heart_disease.json, 5 seeds per setting, real processes, 2 shared
cores). Splits 43-45: the DP settings were measured 2026-11-26 00:47-01:30 UTC under grid
version 1; the global no-DP model under version 2 (08:19-09:04 UTC) and again, with identical
figures (no DP noise, fixed seeds), under version 3 with the personalised figures (15:10-15:48
UTC, `--settings no_dp`, 3.5-6 min per split). Splits 47 and 48 wholly under version 3
(`--select`, 15:16-16:07 UTC, 19-23 min per split including the search), 49 and 50 likewise
(2026-12-06 19:18-20:02 UTC, 21-22 min per split). Under version 4 (2026-12-06): 43's no-DP
setting again (22:01-22:32 UTC, `--select --settings no_dp`), 51 and 52 wholly (21:48-23:04
UTC, 39 and 36 min). Under version 5 (2026-12-07): 43's no-DP setting again (00:53-01:02 UTC,
`--settings no_dp`, version 4's search standing), 53 and 54 wholly (00:53-01:34 UTC, `--select`,
36 and 32 min, side by side). Under version 6 (2026-12-07): 43's DP settings searched and run
again (03:53-04:24 UTC), 55 and 56 wholly (03:53-04:41 UTC, `--select`, 48 and 44 min, side by
side with 43's). Each entry names
which run measured what; pooled and local-only figures come from its latest run. Mean
per-hospital test accuracy, mean +- std over seeds:

    split       no DP          personalised   eps=1          eps=0.1        pooled (std. / public)  local-only
    43 (v4-v6)  0.808 +-0.004  0.822 +-0.009  0.758 +-0.019  0.667 +-0.150  0.758 / 0.805           0.774
    44          0.791 +-0.015  0.829 +-0.013  0.754 +-0.035  0.743 +-0.039  0.748 / 0.787           0.840
    45          0.796 +-0.002  0.815 +-0.005  0.788 +-0.005  0.712 +-0.039  0.783 / 0.793           0.859
    47 (fresh)  0.782 +-0.006  0.834 +-0.005  0.736 +-0.041  0.637 +-0.085  0.755 / 0.782           0.798
    48 (fresh)  0.814 +-0.003  0.859 +-0.013  0.810 +-0.016  0.719 +-0.045  0.764 / 0.816           0.822
    49 (fresh)  0.806 +-0.003  0.845 +-0.015  0.762 +-0.042  0.529 +-0.166  0.767 / 0.811           0.844
    50 (fresh)  0.727 +-0.011  0.815 +-0.004  0.733 +-0.018  0.626 +-0.121  0.690 / 0.752           0.799
    51 (v4)     0.764 +-0.002  0.840 +-0.002  0.759 +-0.012  0.607 +-0.159  0.740 / 0.776           0.848
    52 (v4)     0.752 +-0.011  0.831 +-0.015  0.775 +-0.014  0.597 +-0.091  0.702 / 0.756           0.825
    53 (v5)     0.816 +-0.009  0.829 +-0.005  0.735 +-0.023  0.655 +-0.113  0.730 / 0.815           0.843
    54 (v5)     0.804 +-0.004  0.841 +-0.006  0.782 +-0.011  0.664 +-0.071  0.755 / 0.803           0.834
    55 (v6)     0.850 +-0.002  0.852 +-0.002  0.833 +-0.013  0.732 +-0.068  0.826 / 0.849           0.859
    56 (v6)     0.820 +-0.006  0.819 +-0.006  0.772 +-0.032  0.573 +-0.164  0.776 / 0.826           0.825

Grid version 1 had given no DP 0.732 / 0.741 / 0.718 and personalised 0.810 / 0.802 / 0.835
(train-set standardisation chosen on every split); version 2 (public ranges chosen on every
split's validation records) lifted the global model by 0.05-0.08 and gave personalised 0.796 /
0.821 / 0.798 with 10, 1 and 1 epochs for every hospital; version 3 (each silo's own choice)
gave 43 no DP 0.793 +-0.009 and personalised 0.810 +-0.010; version 4 chose square-root
weighting on 43 (validation 0.811 vs 0.792 by examples) and weighting by examples on 51 and 52
(it lost there by 0.004 and 0.006 on validation); the same search chose square-root weighting
on 53 and 54. Version 5 (each silo's cross-validated choice, one-standard-error rule) gave 43
personalised 0.822 +-0.009 (0.807 under version 4). Version 6 (16 noise draws per DP candidate,
ranked by mean minus std) re-chose 43's eps=1 plan (5 rounds of batch-256 steps, 0.758; version
1's 3 rounds had scored 0.775 +-0.016) and chose again version 1's eps=0.1 plan, which scored
0.667 +-0.150 (one run 0.374) where it had scored 0.713 +-0.054 (version-1 figures: the JSON at
commit 13d73bc): one observation of how far a DP setting's 5-seed mean can move between runs of
one plan.

Split 43 targets: no DP >= 0.75 met (0.808; FLamby FedAvg 0.691, its best federated
0.724-0.731, pooled 0.735-0.739); personalised >= 0.80 met (0.822 under version 5, 0.807 under
version 4); eps=1 >= 0.72 met (0.758); eps=0.1 >= 0.68 MISSED as last measured (0.667 under
version 6; the same plan's version-1 run met it, 0.713). Every split: personalised >= global met
on twelve of thirteen as last measured, MISSED on 56 (0.8188 vs 0.8198), in 63 of 65 seeds (43
had missed it under version 4, 0.807 vs 0.808); global no DP >= the pooled
reference under the same (public-range) preprocessing met on 43 (0.808 vs 0.805, version 4), 44,
45, 53 (0.8165 vs 0.8154), 54 (0.8041 vs 0.8025) and 55 (0.8504 vs 0.8492), MISSED on 47 (0.7816
vs 0.7823), 48 (0.8141 vs 0.8162), 49 (0.806 vs 0.811), 50 (0.727 vs 0.752), 51 (0.764 vs
0.776), 52 (0.752 vs 0.756) and 56 (0.820 vs 0.826) (above the train-standardised pooled
reference on all thirteen); eps=1 within 0.03 of the
pooled reference under its own (public-range) preprocessing MISSED on 43 (by 0.016, version 6),
44 (by 0.003), 47 (by 0.017), 49 (by 0.019), 53 (by 0.050) and 56 (by 0.024), met on 45, 48,
50, 51, 52, 54 and 55. Beside each such
bar the acceptance reports the difference with its 95% interval over the seeds (seed_spread;
reported only): every global-vs-pooled interval holds 0 except split 50's, -0.025 [-0.044,
-0.005], and 51's, -0.013 [-0.024, -0.001], real shortfalls (the search chose FedYogi 0.03 /
client rate 0.1 / 20 and 30 rounds); every eps=1 miss is inside its interval except 53's,
-0.050 [-0.081, -0.019], a real shortfall (45's and 52's eps=1 intervals lie above 0).
pipelines.fed_heart_disease_ceiling asks, on validation records only, whether any single global model beats a converged pooled logistic regression: of
its candidates only weighting hospitals' records by 1/sqrt(n) leads (+0.009 [+0.0005, +0.018]
over the seven split seeds, which re-divide the same records: a spread, not a test). Each silo's
ledger charged each DP plan its target epsilon (PLD, replace-one, delta = 1e-3) and each
non-private plan epsilon = infinity. The mean of the hospitals' local-only models beats every
federated mean on 44, 45, 51, 53, 55 and 56, and the global one on every split but 43 (Switzerland's
local model answers "disease" for everyone, and 15 or 16 of its 16 test records are positive).
Neither version 4 nor version 5 (which changed only how each silo chooses its fine-tuning) made
"every split >= pooled" hold, nor did version 6 make the eps bars hold; the grid was not
revisited after the version-6 figures.

Usage (the report: each split seed of SPLIT_SEEDS, selection first):
    .venv/bin/python -m pipelines.fed_heart_disease --select-only --split-seed 43  # search, no processes
    .venv/bin/python -m pipelines.fed_heart_disease --split-seed 43                # 15 plans + references
    .venv/bin/python -m pipelines.fed_heart_disease --select --split-seed 44       # search, then run
    .venv/bin/python -m pipelines.fed_heart_disease --recompute-acceptance         # stored figures only
Re-running the no-DP setting alone (keeps the split's DP scores and results):
    .venv/bin/python -m pipelines.fed_heart_disease --select-only --settings no_dp --split-seed 43
    .venv/bin/python -m pipelines.fed_heart_disease --settings no_dp --split-seed 43   # 5 plans + references
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from healthfed_common.atomic_files import exclusive_lock, write_atomically  # noqa: E402
from healthfed_common.client_weighting import DEFAULT_CLIENT_WEIGHTING  # noqa: E402

HOSPITALS = ("cleveland", "hungarian", "switzerland", "va")
COLUMNS = ("age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang",
           "oldpeak", "slope", "ca", "thal", "num")
DROPPED = ("slope", "ca", "thal")
NUMERIC = ("age", "sex", "trestbps", "chol", "fbs", "thalach", "exang", "oldpeak")
CATEGORIES = {"cp": ("2", "3", "4"), "restecg": ("1", "2")}  # first level (cp 1, restecg 0) dropped
FEATURE_ORDER = ("age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak")
EXPECTED_SIZES = {"cleveland": (199, 104), "hungarian": (172, 89), "switzerland": (30, 16), "va": (85, 45)}
WIDTH = 13
# The FLamby protocol's train_test_split random_state.
DEFAULT_SPLIT_SEED = 43
# The split seeds the benchmark reports, FIXED on 2026-11-26 BEFORE any result on them was seen
# (issue 16 item 2): 43 (FLamby's own) and the next two. Seed 46 is deliberately absent: an
# earlier review already saw test figures on it. Never change these after seeing results.
SPLIT_SEEDS = (43, 44, 45)
# Two more, FIXED on 2026-11-26 BEFORE any run on them, when grid version 3 was fixed: versions 2
# and 3 were designed after test figures of SPLIT_SEEDS had been seen, so these are the splits
# on which nothing about the pipeline has been tuned. 46 stays excluded. 49 and 50 were added on
# 2026-12-06, BEFORE any run on them, with grid version 3 unchanged: two more splits nothing was
# tuned on, to see whether the misses of the pooled-reference bars on 47/48 were ties.
# 51 and 52 were added on 2026-12-06 with grid version 4, BEFORE any run on them: version 4 was
# fixed after the test figures of 43-50 had been seen, so these two test it.
# 53 and 54 were added on 2026-12-07 with grid version 5, BEFORE any run on them: version 5 was
# fixed after the test figures of 43-52 had been seen, so these two test it.
# 55 and 56 were added on 2026-12-07 with grid version 6, BEFORE any run on them: version 6 was
# fixed after the test figures of 43-54 had been seen, so these two test it.
FRESH_SPLIT_SEEDS = (47, 48, 49, 50, 51, 52, 53, 54, 55, 56)
REPORTED_SPLIT_SEEDS = SPLIT_SEEDS + FRESH_SPLIT_SEEDS
DATASET = "fed_heart_disease"
DELTA = 1e-3
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fed_heart_disease"
SETTINGS: dict[str, float | None] = {"no_dp": None, "eps_1": 1.0, "eps_0.1": 0.1}
TARGETS = {"no_dp": 0.75, "eps_1": 0.72, "eps_0.1": 0.68}
PERSONALIZED_TARGET = 0.80
FLAMBY = {
    "no_dp": {"fedavg": 0.691, "pooled": 0.739, "best_federated_fedyogi_fedadagrad": 0.724,
              "fedavg_no_dp_in_dp_study": 0.712},
    "eps_1": {"fedavg_dp_sgd_delta_1e-3": 0.702},
    "eps_0.1": {"fedavg_dp_sgd_delta_1e-3": 0.629},
}

# Public value ranges for DP plans (clamp, then scale to [-1, 1]): clinical/physiological
# limits of each measurement and the 0/1 coding of the binary ones, chosen from the UCI
# attribute documentation and clinical references -- NOT from the hospitals' records (a
# data-derived range would be a private statistic again). age in years; trestbps resting
# systolic blood pressure, mmHg; chol serum cholesterol, mg/dL (Switzerland's 0 = not
# measured clamps to 100); thalach maximum heart rate, bpm; oldpeak exercise ST depression, mm
# (negative = ST elevation).
PUBLIC_BOUNDS: dict[str, tuple[float, float]] = {
    "age": (0, 100), "sex": (0, 1), "trestbps": (80, 220), "chol": (100, 600), "fbs": (0, 1),
    "thalach": (60, 220), "exang": (0, 1), "oldpeak": (-3, 7),
}
DATASET_POLICY: dict[str, Any] = {
    "features": {
        **{name: {"transforms": ["standardize"], "bounds": list(PUBLIC_BOUNDS[name])} for name in NUMERIC},
        "cp": {"transforms": ["one_hot"], "categories": ["1", "2", "3", "4"]},
        "restecg": {"transforms": ["one_hot"], "categories": ["0", "1", "2"]},
    },
    "label": "num",
    "split": {"column": "split"},
}

APPROVAL_POLICY: dict[str, Any] = {
    "auto_approve": True,
    "allowed_models": ["logistic_regression"],
    "require_dp": False,  # the no-DP baseline must run too
    "max_epsilon": 1.0,
    "max_delta": DELTA,
    "require_secure_aggregation": False,
    "approval_lifetime_days": 1,
    # the no-DP baseline runs on the same budgeted dataset: it is charged epsilon = infinity (so it
    # runs after every DP plan; afterwards the dataset's budget is spent for good)
    "non_private_plans_on_budgeted_datasets": "charge_infinity",
}
# The ledger composes every DP charge on the dataset (all 10 DP plans of a benchmark run).
PRIVACY_BUDGET = {"epsilon": 50.0, "delta": DELTA}


# -- hyper-parameters -------------------------------------------------------------------------
@dataclass(frozen=True)
class Hyper:
    """One candidate plan. `standardize_indicators` (non-DP only; a DP plan may not use it):
    the protocol's per-hospital standardisation of the cp/restecg indicators, or 0/1
    indicators. `fedprox_mu`: None is FedAvg, a number FedProx with that proximal strength.
    `public_ranges` (non-DP only): the plan asks for `preprocessing: public_bounds`, i.e. the
    DP plans' transform (numeric inputs clamped to PUBLIC_BOUNDS and scaled to [-1, 1], every
    hospital alike) instead of each hospital's own train mean/std; indicators must stay 0/1
    then. A DP plan always uses the public ranges, so the field is ignored there.
    `client_weighting` (grid version 4): the plan's `algorithm.client_weighting`, how the
    server's mean weighs each silo's update (examples, or their square root)."""

    rounds: int
    local_epochs: int
    batch_size: int
    client_lr: float
    server_lr: float = 1.0
    server_optimizer: str = "sgd"
    l2_norm_clip: float = 1.0
    kernel_initializer: str = "glorot_uniform"
    standardize_indicators: bool = False
    fedprox_mu: float | None = None
    public_ranges: bool = False
    client_weighting: str = DEFAULT_CLIENT_WEIGHTING

    def label(self) -> str:
        return (f"R={self.rounds} E={self.local_epochs} B={self.batch_size} lr={self.client_lr} "
                f"server={self.server_optimizer}:{self.server_lr} C={self.l2_norm_clip} init={self.kernel_initializer}"
                f" std_ind={self.standardize_indicators} mu={self.fedprox_mu}"
                f" public_ranges={self.public_ranges}"
                + ("" if self.client_weighting == DEFAULT_CLIENT_WEIGHTING else f" weighting={self.client_weighting}"))


SELECTION_FILE = Path("bench-results/fed_heart_disease_selection.json")
# The personalisation every no-DP plan asks for (grid version 3): each silo fine-tunes the final
# global model for the number of epochs among these that its own choice picks on ITS OWN
# training records (silo_node.personalization.choose_epochs; 0 keeps the global model), so the
# benchmark does not search the epochs. The counts are version 2's searched ones plus 0.
# Versions 3 and 4 chose on one held-out quarter; version 5 by PERSONALIZATION_FOLDS-fold
# cross-validation, keeping the fewest epochs within one standard error of the best (plan
# `personalization.choice_folds`).
PERSONALIZATION_CHOICES = (0, 1, 3, 10, 30)
PERSONALIZATION_FOLDS = 4
# How grid() came to be, in order; a selection record names the version its scores were
# searched under ("grid_version" in each setting's "produced_by"; a record without one predates
# the list and was searched under version 1).
GRID_HISTORY: tuple[dict[str, Any], ...] = (
    {"version": 1, "fixed": "2026-11-26",
     "what": "12 no-DP candidates (standardised vs 0/1 indicators x server SGD 1.0 vs FedYogi 0.03 x rounds 10/20/30; "
             "zero start, client lr 0.1, B 16, E 1; numeric inputs standardised with each hospital's own train "
             "statistics) and 4 candidates per DP setting",
     "seen_before_fixing": "no test figure of split seeds 43/44/45"},
    {"version": 2, "fixed": "2026-11-26 (the session after the first three-split results)",
     "what": "the no-DP grid gains 12 public-range candidates (public_ranges=True, i.e. plan preprocessing "
             "public_bounds, 0/1 indicators x client lr 0.1 and 1.0 x the same two server optimizers x rounds "
             "10/20/30, same zero start, B 16, E 1; lr 1.0 because the public ranges shrink the inputs' spread to "
             "a std near 0.2, and the DP plans use 1.0 on the same inputs); the first 12 candidates and the DP "
             "grids are unchanged",
     "seen_before_fixing": "the TEST figures of split seeds 43, 44 and 45 under version 1 (global no-DP 0.732 / "
                           "0.741 / 0.718, below the pooled reference with public ranges on every split)",
     "why": "structural: the plan schema now lets a non-DP plan use the public clinical ranges the DP plans "
            "already used (`preprocessing: public_bounds`); version 1 could not try them. The selection among the "
            "candidates still reads training/validation records only, never a test set"},
    {"version": 3, "fixed": "2026-11-26 (the session after the version-2 results)",
     "what": "personalisation is no longer one epoch count searched by the benchmark for all hospitals "
             "(version 2: the best mean personalised validation accuracy among 1/3/10/30 epochs, chosen after the "
             "global model) but each silo's own choice among 0/1/3/10/30 epochs on a held-out quarter of its own "
             "training records (plan `personalization.local_epochs_choices`, PERSONALIZATION_CHOICES; 0 keeps the "
             "global model). The global candidates, their order and the DP grids are version 2's, so version 2's "
             "global choices stand",
     "seen_before_fixing": "the TEST figures of split seeds 43, 44 and 45 under version 2, per hospital: with 10 "
                           "epochs for every hospital (split 43) the personalised copy scored below the global model "
                           "at Cleveland, Hungary and VA and above it at Switzerland, mean 0.796 against the 0.80 "
                           "target",
     "why": "structural: one count cannot suit hospitals of 30 and 199 training records, and whether fine-tuning "
            "helps at all is a question only a hospital's own records can answer; the plan schema now lets each "
            "silo answer it. The choice reads each hospital's training records only; new split seeds "
            "(FRESH_SPLIT_SEEDS, fixed in code before any run under version 3) test it on splits never seen"},
    {"version": 4, "fixed": "2026-12-06",
     "what": "the no-DP grid is version 3's 12 public-range candidates, in their order, then the same 12 with each "
             "silo's update weighted by the square root of its examples (plan `algorithm.client_weighting: "
             "sqrt_examples`); version 1's 12 candidates with per-hospital standardised inputs are dropped; the "
             "no-DP search scores each candidate on 3 validation splits instead of 2 (VALIDATION_SPLITS). The DP "
             "grids and their 2 validation splits x 3 noise draws are unchanged, so version 3's DP choices stand",
     "seen_before_fixing": "the TEST figures of split seeds 43-50 under version 3: the global no-DP model below the "
                           "pooled reference on 43, 47, 48, 49 and 50 (split 50: -0.025, 95% interval over seeds "
                           "[-0.044, -0.005], where the search's winner led the runner-up by 0.001 on 2 validation "
                           "splits)",
     "why": "structural: the plan schema gained `algorithm.client_weighting`; the ceiling benchmark "
            "(pipelines.fed_heart_disease_ceiling, validation records only) found weighting each hospital's records "
            "by 1/sqrt(n) the one global lever, +0.009 over the converged pooled LR. Version 1's candidates lost to "
            "the public-range ones by 0.03 to 0.09 on the VALIDATION records of all seven splits, so their search "
            "time goes to a third validation split. New split seeds 51 and 52 (FRESH_SPLIT_SEEDS, fixed in code "
            "before any run under version 4) test it"},
    {"version": 5, "fixed": "2026-12-07",
     "what": "each silo chooses its fine-tuning epochs among PERSONALIZATION_CHOICES by 4-fold stratified "
             "cross-validation over its training records, keeping the FEWEST epochs whose mean held-out accuracy "
             "is within one standard error of the best (plan `personalization.choice_folds: 4`, "
             "PERSONALIZATION_FOLDS) instead of the best on one held-out quarter. The no-DP candidates, their order, "
             "the validation splits and the DP grids are version 4's, so version 4's choices of the global "
             "hyper-parameters stand (the no-DP search is deterministic: the same grid on the same records scores "
             "the same)",
     "seen_before_fixing": "the TEST figures of split seeds 43-52 under versions 3 and 4, per hospital: on 43 under "
                           "version 4 the personalised copies scored below the global model at Cleveland, Hungary "
                           "and VA (0.771 / 0.751 / 0.769 against 0.781 / 0.778 / 0.800), mean 0.807 against the "
                           "global 0.808, the one split where personalised >= global was missed",
     "why": "prompted by the miss on 43's test records, so version 5's figures on 43 (and on 44-52, were they "
            "re-run) are no test of it; the change itself is a plan option that did not exist before: one quarter "
            "of 30 to 200 records scores each count on 8 to 50 records, so a count can win by noise and leave a "
            "hospital with a fine-tuned copy worse than the shared model; with 0 listed, the one-standard-error "
            "rule keeps fine-tuning only where its mean fold accuracy leads the shared model's by more than the "
            "best count's standard error. The choice still reads each hospital's training records only. New split "
            "seeds 53 and 54 (FRESH_SPLIT_SEEDS, fixed in code before any run under version 5) test it"},
    {"version": 6, "fixed": "2026-12-07 (the session after the version-5 results)",
     "what": "the DP search scores each candidate on DP_NOISE_DRAWS = 8 noise draws per validation split instead of "
             "3 (16 runs instead of 6) and ranks the DP candidates by mean minus standard deviation over those runs "
             "(ranking_score) instead of by their mean; ties still go to fewer rounds. The candidates, the no-DP "
             "search and the personalisation are version 5's, so version 5's no-DP choices stand",
     "seen_before_fixing": "the TEST figures of split seeds 43-54 under versions 3-5: eps=1 more than 0.03 below the "
                           "pooled reference on 44, 47, 49 and 53 (53: 0.735 against a bar of 0.785, 95% interval "
                           "over seeds entirely below it; its search's winner led by 0.003 on 6 noisy runs with a "
                           "spread of 0.032, the runner-up's 0.009), and eps=0.1 single runs as low as 0.32",
     "why": "a federation delivers ONE noisy model per plan, not the average of many, so the search should prefer "
            "the candidate whose single run is reliably good; and 6 runs of a spread of 0.03-0.2 estimate a mean "
            "only to 0.01-0.08, wider than most gaps between candidates, so the ranking read noise. Prompted by the "
            "misses on test records, so its figures on 43-54 are no test of it. It re-chooses the DP plans of 43 "
            "(whose DP settings are re-run under it). The search still reads training/validation records only. New "
            "split seeds 55 and 56 (FRESH_SPLIT_SEEDS, fixed in code before any run under version 6) test it"},
)
# How many validation splits of the training records the search scores each candidate on, per
# setting (grid version 4: 3 without DP, where the choice between candidates came down to 0.001
# on 2 splits; under DP each split also takes DP_NOISE_DRAWS noise draws, 3 before version 6).
VALIDATION_SPLITS = {"no_dp": 3, "eps_1": 2, "eps_0.1": 2}
# Grid version 6: fresh DP noise draws per validation split in the DP search (one noisy run's
# accuracy spreads by 0.03 at eps=1 and up to 0.2 at eps=0.1, so 3 draws ranked noise).
DP_NOISE_DRAWS = 8
GRID_NOTE = ("grid() version " + str(GRID_HISTORY[-1]["version"]) + "; versions 2 to 6 were fixed AFTER test "
             "figures had been seen (version 2 after split seeds 43/44/45 under version 1: the no-DP public-range "
             "candidates; version 3 after those splits under version 2: each silo chooses its own fine-tuning "
             "epochs on a holdout of its training records; version 4 after 43-50 under version 3: square-root "
             "client weighting, version 1's candidates dropped, a third validation split; version 5 after 43-52 "
             "under versions 3 and 4: each silo chooses its fine-tuning epochs by cross-validation with the "
             "one-standard-error rule; version 6 after 43-54: the DP search takes 8 noise draws per validation split "
             "and ranks by mean minus standard deviation over its runs); the changes of versions 2 to 5 are "
             "structural (plan options that did not exist before), version 6 changes only how the DP search scores "
             "and ranks its candidates; every choice still reads "
             "training/validation records only; FRESH_SPLIT_SEEDS 47-50 were fixed before any run under version 3, "
             "51 and 52 before any run under version 4, 53 and 54 before any run under version 5, 55 and 56 "
             "before any run under version 6 (GRID_HISTORY)")


def grid(setting: str) -> list[Hyper]:
    """The search space per setting (GRID_HISTORY). Version 1 -- the first 12 non-DP
    candidates and both DP grids -- was FIXED IN CODE on 2026-11-26 before any test figure of
    the split seeds 43/44/45 under it was computed (rounds are cheap to vary: one simulation to
    the largest value scores every smaller one). Sized for two shared cores (a 30-round simulation
    costs about a minute per validation split there): about 10 minutes per split seed for all
    three settings. Without DP: the protocol's standardised indicators vs 0/1 indicators, plain
    server SGD vs FedYogi (FLamby's best strategy on this dataset), from a zero start (the
    textbook start for a convex model; the random start's lead in the search of 2026-11-23 was
    0.014, inside the spread of its validation splits). Not searched, for time: a random start,
    FedProx (with one local epoch of ~10 steps at lr 0.1 its pull to the global model is
    negligible), a second client rate (0.05 lost to 0.1 at every rounds value in that search).
    Under DP: a zero start only (it beat the random one for every shape in that search, on
    validation records only).

    Version 2 -- FIXED IN CODE on 2026-11-26, in the session after the first three-split
    results, i.e. AFTER the test figures of splits 43/44/45 under version 1 had been seen --
    appends twelve non-DP candidates: public_ranges=True (plan `preprocessing: public_bounds`, the
    DP plans' clamp-and-scale to PUBLIC_BOUNDS) x 0/1 indicators (standardised ones would be a
    statistic of the records, refused with public bounds) x client rate 0.1 and 1.0 x the same
    two server optimizers x rounds 10/20/30, same zero start, B 16, E 1. The second rate because
    the public ranges shrink the inputs' spread (age 30-77 becomes about -0.4..0.5, a std near
    0.2 rather than 1), so the rate tuned for standardised inputs takes far smaller steps; the DP
    plans use 1.0 for the same inputs. The reason is structural, not a test
    figure to chase: version 1 could not try the public ranges for a non-DP plan because the
    plan schema tied them to DP; the schema now has the option. The choice among the 24
    candidates still reads training/validation records only (select()). The first 12
    candidates keep their order (ties in the ranking go to the earlier candidate).

    Version 4 -- FIXED IN CODE on 2026-12-06, AFTER the test figures of splits 43-50 under
    version 3 had been seen (GRID_HISTORY) -- keeps version 2's 12 public-range candidates in
    their order, appends the same 12 with `client_weighting="sqrt_examples"` (each silo's update
    weighted by the square root of its examples, a plan option that did not exist before; the
    ceiling benchmark's one global lever, found on validation records) and drops version 1's 12
    (they lost by 0.03-0.09 on the validation records of every split). Without DP each
    candidate is now scored on VALIDATION_SPLITS["no_dp"] = 3 validation splits.

    Version 5 -- FIXED IN CODE on 2026-12-07, AFTER the test figures of splits 43-52 had been
    seen -- leaves every candidate as version 4 had it; what changed is how each silo picks its
    fine-tuning epochs in the no-DP plans (PERSONALIZATION_FOLDS, plan_document).

    Version 6 -- FIXED IN CODE on 2026-12-07, AFTER the test figures of splits 43-54 had been
    seen -- leaves every candidate as version 5 had it; what changed is how the DP candidates are
    scored (DP_NOISE_DRAWS) and ranked (ranking_score) in select()."""
    epsilon = SETTINGS[setting]
    if epsilon is None:
        return [Hyper(rounds=r, local_epochs=1, batch_size=16, client_lr=lr, server_optimizer=server,
                      server_lr=server_lr, kernel_initializer="zeros", standardize_indicators=False,
                      public_ranges=True, client_weighting=weighting)
                for weighting in (DEFAULT_CLIENT_WEIGHTING, "sqrt_examples")
                for lr in (0.1, 1.0) for server, server_lr in (("sgd", 1.0), ("yogi", 0.03)) for r in (10, 20, 30)]
    # Under DP each extra round or epoch costs noise: few rounds. From a zero start a single
    # full-batch step's predictions do not depend on the learning rate (the sign of
    # -lr * gradient), so the rate is not searched under DP.
    shapes = ((32, 1), (32, 2), (256, 1), (256, 2)) if epsilon < 0.5 else ((64, 3), (64, 5), (256, 3), (256, 5))
    return [Hyper(rounds=r, local_epochs=1, batch_size=b, client_lr=1.0, l2_norm_clip=1.0, kernel_initializer="zeros")
            for b, r in shapes]


# -- data protocol ----------------------------------------------------------------------------
def protocol_frame(data_dir: Path, name: str, split_seed: int = DEFAULT_SPLIT_SEED) -> pd.DataFrame:
    """The hospital's kept rows exactly as published (text cells), with a `split` column.
    `split_seed` is the protocol's train_test_split random_state (FLamby's is 43); the sizes
    do not depend on it, which records land in which subset does."""
    from sklearn.model_selection import train_test_split

    raw = pd.read_csv(data_dir / f"processed.{name}.data", header=None, names=list(COLUMNS),
                      dtype=str, keep_default_na=False)
    raw = raw.apply(lambda column: column.str.strip())
    kept_columns = [c for c in COLUMNS if c not in DROPPED]
    frame = raw[~raw[kept_columns].isin(["?", ""]).any(axis=1)].reset_index(drop=True)
    label = (frame["num"].astype(float) > 0).astype(int).to_numpy()
    stratify = label if np.bincount(label, minlength=2).min() >= 2 else None  # Switzerland: 1 negative
    train_idx, _ = train_test_split(np.arange(len(frame)), train_size=0.66, test_size=0.34,
                                    random_state=split_seed, shuffle=True, stratify=stratify)
    split = np.full(len(frame), "test", dtype=object)
    split[train_idx] = "train"
    return frame.assign(split=split)


def write_exports(data_dir: Path, out_dir: Path, split_seed: int = DEFAULT_SPLIT_SEED) -> dict[str, Path]:
    """Each hospital's export (header + split) in `out_dir` (a runs/ folder, never the repo)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in HOSPITALS:
        path = out_dir / f"{name}.csv"
        protocol_frame(data_dir, name, split_seed).to_csv(path, index=False)
        paths[name] = path
    return paths


def plan_document(setting: str, hyper: Hyper, seed: int) -> dict[str, Any]:
    """The plan of one (setting, candidate, seed). A non-DP candidate with `public_ranges` gets
    `"preprocessing": "public_bounds"` (the DP plans' transform); every other plan leaves the key
    out (the schema's default: train statistics without DP, public bounds under DP), so plans
    written before the option existed keep their hashes."""
    epsilon = SETTINGS[setting]
    public_ranges = epsilon is None and hyper.public_ranges
    if public_ranges and hyper.standardize_indicators:
        raise ValueError("public_ranges with standardize_indicators: standardised indicators need each hospital's "
                         "own mean and spread, which public-bounds preprocessing refuses (NON_PRIVATE_PREPROCESSING)")
    features: list[dict[str, Any]] = []
    for name in FEATURE_ORDER:
        if name in CATEGORIES:
            # Standardised indicators need each hospital's own mean/std: non-DP plans only
            # (a DP plan is refused with NON_PRIVATE_PREPROCESSING otherwise).
            features.append({"name": name, "transform": "one_hot", "categories": list(CATEGORIES[name]),
                             "standardize_indicators": epsilon is None and hyper.standardize_indicators})
        else:
            features.append({"name": name, "transform": "standardize"})
    algorithm: dict[str, Any] = ({"name": "fedavg"} if hyper.fedprox_mu is None
                                 else {"name": "fedprox", "mu": hyper.fedprox_mu})
    if hyper.client_weighting != DEFAULT_CLIENT_WEIGHTING:  # the default stays out of the plan, so older plans keep their hashes
        algorithm["client_weighting"] = hyper.client_weighting
    document: dict[str, Any] = {
        "name": f"fhd-{setting.replace('_', '-')}-seed{seed}",
        "description": "Fed-Heart-Disease benchmark (FLamby protocol): heart disease (num > 0) from 13 inputs.",
        "purpose": "Benchmark of federated logistic regression with and without record-level DP.",
        "dataset": DATASET,
        "model": {"id": "logistic_regression", "kernel_initializer": hyper.kernel_initializer},
        "features": features,
        "label": {"name": "num", "positive_values": ["1", "2", "3", "4"]},
        "client_optimizer": {"name": "sgd", "learning_rate": hyper.client_lr},
        "server_optimizer": {"name": hyper.server_optimizer, "learning_rate": hyper.server_lr},
        "local_epochs": hyper.local_epochs,
        "batch_size": hyper.batch_size,
        "rounds": hyper.rounds,
        "min_silos_per_round": len(HOSPITALS),
        "round_deadline_s": 300,
        "dp": None if epsilon is None else {"target_epsilon": epsilon, "target_delta": DELTA,
                                             "l2_norm_clip": hyper.l2_norm_clip, "accountant": "pld"},
        "seeds": {"model_init": seed, "data_order": seed},
        "algorithm": algorithm,
        # each silo picks its own fine-tuning epochs (grid version 3), by cross-validation (version 5);
        # DP plans cannot personalise
        "personalization": None if epsilon is not None else {
            "method": "local_fine_tuning", "local_epochs_choices": list(PERSONALIZATION_CHOICES),
            "choice_folds": PERSONALIZATION_FOLDS},
    }
    if public_ranges:
        document["preprocessing"] = "public_bounds"
    return document


def stored_table(export: Path) -> pd.DataFrame:
    """What `silo-node data add` stores for this export under DATASET_POLICY (the same
    reader and minimisation code, in this process)."""
    from silo_node.datasets.minimisation import minimise_table
    from silo_node.datasets.policy import DatasetPolicy
    from silo_node.datasets.tabular_reader import read_table

    policy = DatasetPolicy.from_document(DATASET_POLICY)
    data = export.read_bytes()
    raw = read_table(export, data, encoding=policy.encoding, missing_values=policy.missing_values)
    table, _, _ = minimise_table(raw, policy, file=export, secret=b"\0" * 32,
                                 content_sha256=hashlib.sha256(data).hexdigest())
    return table


def silo_arrays(table: pd.DataFrame, plan: Any, subset: str) -> tuple[np.ndarray, np.ndarray]:
    """The silo's training view (silo_node.datasets.view.tabular_view) of a stored table."""
    from silo_node.datasets.view import tabular_view

    from silo_node.datasets.policy import DatasetPolicy

    view = tabular_view(DATASET, table, plan, subset, DatasetPolicy.from_document(DATASET_POLICY))
    return view.features, view.labels


def validation_table(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The stored table with its test rows removed and its train rows split 75/25 into
    train / 'test' (= validation): standardisation then uses the sub-train only."""
    from sklearn.model_selection import train_test_split

    from silo_node.datasets.minimisation import SPLIT_COLUMN

    train = table[table[SPLIT_COLUMN] == "train"].reset_index(drop=True)
    label = (train["num"].astype(str) != "0").astype(int).to_numpy()
    stratify = label if np.bincount(label, minlength=2).min() >= 2 else None
    _, val_idx = train_test_split(np.arange(len(train)), test_size=0.25, random_state=seed,
                                  shuffle=True, stratify=stratify)
    split = np.full(len(train), "train", dtype=object)
    split[val_idx] = "test"
    return train.assign(**{SPLIT_COLUMN: split})


# -- in-process simulation (hyper-parameter selection only) -----------------------------------
_COMPUTATIONS: dict[str, Any] = {}


def _computations(plan: Any) -> Any:
    """The plan's MapReduceForm. Rounds, data_order, the DP target and the preprocessing (the
    silo's view, computed before the graphs see the arrays) never enter the graphs (sigma
    reaches them as data), so plans differing only there share one build."""
    from healthfed_common.learning_process import build_federated_computations
    from healthfed_common.plan import DPSpec, Seeds

    dp = None if plan.dp is None else DPSpec(target_epsilon=1.0, target_delta=DELTA,
                                             l2_norm_clip=plan.dp.l2_norm_clip, accountant="pld")
    update: dict[str, Any] = {"rounds": 1, "dp": dp, "name": "graph",
                              "seeds": Seeds(model_init=plan.seeds.model_init, data_order=0)}
    if "preprocessing" in type(plan).model_fields:  # the silo's view, not the graphs
        update["preprocessing"] = None
    key_plan = plan.model_copy(update=update)
    key = key_plan.plan_hash
    if key not in _COMPUTATIONS:
        _COMPUTATIONS[key] = build_federated_computations(key_plan)
    return _COMPUTATIONS[key]


@functools.lru_cache(maxsize=None)
def _sigma(epsilon: float, batch_size: int, local_epochs: int, rounds: int, n: int) -> float:
    """What `silo_dp_parameters` calibrates for a silo of n records (PLD, delta=DELTA)."""
    from healthfed_common.dp.accounting import SamplingSchedule, calibrate_noise_multiplier

    return calibrate_noise_multiplier(target_epsilon=epsilon, target_delta=DELTA, rounds=rounds,
                                      schedule=SamplingSchedule(n, batch_size, local_epochs), accountant="pld")


def simulate(plan: Any, train: dict[str, tuple[np.ndarray, np.ndarray]],
             evaluation: dict[str, tuple[np.ndarray, np.ndarray]],
             eval_rounds: tuple[int, ...] = ()) -> dict[int, dict[str, float]]:
    """Runs the plan's rounds in this process exactly as the silos and the aggregator do
    (same graphs, dataset factories, DP calibration, aggregation); returns per-hospital
    accuracy on `evaluation` after each round in `eval_rounds` (and after the last)."""
    from aggregator.aggregation import aggregate_round
    from healthfed_common.client_data import training_dataset_factory
    from healthfed_common.dp.accounting import SamplingSchedule
    from healthfed_common.dp.sampling import poisson_dataset_factory
    from healthfed_common.wire.messages import TrainResult

    comps = _computations(plan)
    metrics_count, secure_count = comps.work_parts[:2]
    sigmas = {name: (_sigma(plan.dp.target_epsilon, plan.batch_size, plan.local_epochs, plan.rounds, len(y))
                     if plan.dp else None) for name, (_, y) in train.items()}
    state = comps.initialize()
    scores: dict[int, dict[str, float]] = {}
    for round_number in range(1, plan.rounds + 1):
        client_input = list(comps.prepare(state))
        results = []
        for name in sorted(train):
            x, y = train[name]
            if plan.dp is None:
                factory = training_dataset_factory(x, y, plan, round_number)
            else:
                sigma = sigmas[name]
                assert sigma is not None  # computed for every silo when plan.dp is set
                factory = poisson_dataset_factory(
                    x, y, schedule=SamplingSchedule(len(y), plan.batch_size, plan.local_epochs),
                    noise_multiplier=float(sigma))
            out = comps.work(client_input, [factory])
            results.append(TrainResult(name, "simulated", plan.plan_hash, round_number,
                                       tuple(out[:metrics_count]),
                                       tuple(out[metrics_count:metrics_count + secure_count])))
        state = aggregate_round(comps, state, results).state
        if round_number in eval_rounds or round_number == plan.rounds:
            weights = [np.asarray(w) for w in comps.model_weights(state)]
            kernel, bias = weights[:2]
            scores[round_number] = {
                name: float(np.mean(((x @ kernel + bias) > 0) == (y > 0.5)))
                for name, (x, y) in evaluation.items()
            }
    return scores


def ranking_score(setting: str, runs: list[float]) -> float:
    """What select() ranks a candidate by (higher is better). Without DP, the mean validation
    accuracy over its runs (the runs differ only in the validation split). Under DP (grid
    version 6), the mean MINUS the standard deviation over its runs: the federation delivers one
    noisy model per plan, so a candidate whose runs spread widely is worse for a hospital than a
    slightly lower but steady one (about one single run in six falls below this score, were the
    runs normal). It is a preference for steadiness, not a confidence bound on the mean."""
    mean = float(np.mean(runs))
    return mean if SETTINGS[setting] is None else mean - float(np.std(runs))


RANKED_BY = {"no_dp": "mean validation accuracy over the runs",
             "dp": "mean minus standard deviation of the validation accuracy over the runs (grid version 6)"}


def select(exports: dict[str, Path], settings: list[str] | None = None, repeats: int | None = None,
           noise_draws: int = DP_NOISE_DRAWS, printer: Any = print) -> dict[str, Any]:
    """Grid search per setting on validation splits of the TRAIN sets (test rows dropped
    before anything is computed). Runs: `repeats` validation splits (split seed r, data_order r;
    default VALIDATION_SPLITS of the setting) and, under DP, `noise_draws` runs per split (fresh
    DP noise each; model_init stays 0, as the initial weights are part of the traced graph and
    each would need a build). Score of a run: mean per-hospital validation accuracy. Ranking
    (ranking_score): without DP the mean over the runs; under DP, grid version 6, the mean minus
    the standard deviation over all of a candidate's runs (DP_NOISE_DRAWS draws on each split,
    pooled), because one noisy run's accuracy
    spreads by 0.03 at epsilon=1 and up to 0.2 at epsilon=0.1 and the federation delivers one
    run. The personalisation's fine-tuning epochs are not searched here (grid version 3): each
    silo chooses them on its own training records when the plan is evaluated."""
    from healthfed_common.plan import parse_plan

    tables = {name: stored_table(path) for name, path in exports.items()}
    out: dict[str, Any] = {}
    for setting in settings or list(SETTINGS):
        started = time.time()
        splits = [{name: validation_table(t, r) for name, t in tables.items()}
                  for r in range(repeats or VALIDATION_SPLITS[setting])]
        candidates = grid(setting)
        scores: dict[Hyper, list[float]] = {h: [] for h in candidates}
        # Non-private: one run to the largest rounds value scores every rounds value.
        groups: dict[Hyper, list[Hyper]] = {}
        for h in candidates:
            key = replace(h, rounds=0) if SETTINGS[setting] is None else h
            groups.setdefault(key, []).append(h)
        for members in groups.values():
            longest = max(members, key=lambda h: h.rounds)
            draws = 1 if SETTINGS[setting] is None else noise_draws
            for r, split in enumerate(splits):
                plan = parse_plan(plan_document(setting, longest, 0) | {"seeds": {"model_init": 0, "data_order": r}})
                train = {n: silo_arrays(t, plan, "train") for n, t in split.items()}
                val = {n: silo_arrays(t, plan, "test") for n, t in split.items()}
                for _ in range(draws):  # the same plan and data; simulate draws fresh DP noise
                    result = simulate(plan, train, val, tuple(h.rounds for h in members))
                    for h in members:
                        scores[h].append(float(np.mean(list(result[h.rounds].values()))))
            for h in members:
                printer(f"[select {setting}] val {np.mean(scores[h]):.3f} +- {np.std(scores[h]):.3f} "
                        f"({len(scores[h])} runs) {h.label()}")
        ranked = sorted(candidates, key=lambda h: (-ranking_score(setting, scores[h]), h.rounds))
        best = ranked[0]
        entry: dict[str, Any] = {
            "selected": best.__dict__, "validation_accuracy": float(np.mean(scores[best])),
            "ranked_by": RANKED_BY["no_dp" if SETTINGS[setting] is None else "dp"],
            "grid": [{"hyper": h.__dict__, "validation_accuracy": round(float(np.mean(scores[h])), 4),
                      "std_over_runs": round(float(np.std(scores[h])), 4), "runs": len(scores[h]),
                      "ranking_score": round(ranking_score(setting, scores[h]), 4)} for h in candidates],
        }
        entry["seconds"] = round(time.time() - started, 1)
        out[setting] = entry
        printer(f"[select {setting}] chose {best.label()} (validation {np.mean(scores[best]):.3f}, "
                f"ranking score {ranking_score(setting, scores[best]):.3f})")
    return out


# -- the real federation ----------------------------------------------------------------------
def _parallel(jobs: list[Any]) -> None:
    errors: list[BaseException] = []

    def run(job: Any) -> None:
        try:
            job()
        except BaseException as error:  # noqa: BLE001 - re-raised below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def run_federation(work: Path, exports: dict[str, Path], chosen: dict[str, Hyper], seeds: list[int],
                   settings: list[str], printer: Any = print) -> dict[str, Any]:
    """Provisions the four-hospital federation, registers the exports through
    `silo-node data add`, sets the ledger budgets, starts the four silo processes once and
    runs every (setting, seed) plan with its own aggregator process."""
    import yaml

    from healthfed_common.plan import parse_plan
    from pipelines.local_federation import local_federation, seed_plan_caches

    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in settings}
    registration: dict[str, str] = {}
    with local_federation(work / "federation-run", list(HOSPITALS), federation="fed-heart-disease",
                          printer=None) as federation:
        for silo_id in HOSPITALS:
            federation.set_approval_policy(silo_id, APPROVAL_POLICY)
            config_path = federation.kit(silo_id) / "silo.yaml"
            config = yaml.safe_load(config_path.read_text())
            config.update(poll_interval_s=0.5, max_backoff_s=2.0)  # quick pick-up between plans
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))

        def register(silo_id: str) -> None:
            registration[silo_id] = federation.register_dataset(silo_id, DATASET, exports[silo_id], DATASET_POLICY)
            federation.silo_cli(silo_id, "ledger", "set-budget", DATASET, "--epsilon",
                                str(PRIVACY_BUDGET["epsilon"]), "--delta", str(PRIVACY_BUDGET["delta"]))

        began = time.time()
        _parallel([lambda s=s: register(s) for s in HOSPITALS])
        printer(f"registered {DATASET} on 4 silos through `silo-node data add` in {time.time() - began:.0f}s")
        for silo_id in HOSPITALS:
            federation.start_silo(silo_id, exit_when_finished=False)
        restarts: list[dict[str, Any]] = []
        for setting in settings:
            for seed in seeds:
                document = plan_document(setting, chosen[setting], seed)
                plan = parse_plan(document)
                plan_path = work / "plans" / f"{document['name']}.json"
                plan_path.parent.mkdir(parents=True, exist_ok=True)
                plan_path.write_text(json.dumps(document, indent=2))
                out_dir = work / "aggregator" / document["name"]
                began = time.time()
                traced = seed_plan_caches(federation, plan_path, work / "traced-plans") is not None
                aggregator = federation.start_aggregator(plan_path, out_dir, linger_s=1.0)
                while aggregator.process.poll() is None and time.time() - began < 900:
                    restarts += _restart_dead_silos(federation, document["name"], printer)
                    time.sleep(2.0)
                status = federation.wait("aggregator", timeout_s=60)
                if status != 0:
                    dead = {s: federation.members[s].process.poll() for s in HOSPITALS}
                    raise RuntimeError(f"plan {document['name']}: aggregator exited {status} (silo exit codes {dead}):\n"
                                       + "\n".join(aggregator.lines[-30:]))
                report = federation.run_report(out_dir)
                per_silo = report["evaluation"]["per_silo"]
                accuracy = {s: float(per_silo[s]["accuracy"]) for s in HOSPITALS}
                run = {
                    "seed": seed, "plan_hash": plan.plan_hash, "status": report.get("status"),
                    "rounds_completed": report["rounds_completed"],
                    "per_hospital_accuracy": accuracy,
                    "mean_per_hospital_accuracy": float(np.mean(list(accuracy.values()))),
                    "test_examples": {s: int(per_silo[s]["num_examples"]) for s in HOSPITALS},
                    "plan_caches_seeded": traced,
                    "refusals": report.get("refusals", []),
                    "dp_declarations_cumulative": report.get("dp_declarations", {}),
                    "seconds": round(time.time() - began, 1),
                }
                if all("personalized_accuracy" in per_silo[s] for s in HOSPITALS):
                    personal = {s: float(per_silo[s]["personalized_accuracy"]) for s in HOSPITALS}
                    run["personalized_per_hospital_accuracy"] = personal
                    run["personalized_mean_per_hospital_accuracy"] = float(np.mean(list(personal.values())))
                    if all("personalized_fine_tuning_epochs" in per_silo[s] for s in HOSPITALS):
                        run["fine_tuning_epochs_chosen_by_each_silo"] = {
                            s: int(per_silo[s]["personalized_fine_tuning_epochs"]) for s in HOSPITALS}
                runs[setting].append(run)
                printer(f"[{setting} seed {seed}] mean per-hospital test accuracy "
                        f"{run['mean_per_hospital_accuracy']:.3f} "
                        + " ".join(f"{s} {a:.3f}" for s, a in accuracy.items()) + f" ({run['seconds']:.0f}s)"
                        + (f"; personalised {run['personalized_mean_per_hospital_accuracy']:.3f}"
                           if "personalized_mean_per_hospital_accuracy" in run else ""))
        ledgers = _ledger_per_plan(federation, runs)
    return {"runs": runs, "ledger": ledgers, "registration_reports": registration, "silo_restarts": restarts}


def _restart_dead_silos(federation: Any, plan_name: str, printer: Any) -> list[dict[str, Any]]:
    """A `silo-node run` that exited between plans (seen here: exit 1 when the previous
    plan's aggregator process shut down under its poll) is started again on the same kit
    and state -- what hospital IT's service manager would do. Each restart is reported."""
    restarted = []
    for silo_id in HOSPITALS:
        member = federation.members[silo_id]
        code = member.process.poll()
        if code is None:
            continue
        tail = [line for line in member.lines if line.strip()][-12:]
        restarted.append({"before_plan": plan_name, "silo": silo_id, "exit_code": code, "last_lines": tail})
        printer(f"silo {silo_id} had exited ({code}); restarting it. Its last lines:\n  " + "\n  ".join(tail))
        federation.start_silo(silo_id, exit_when_finished=False)
    return restarted


def _ledger_per_plan(federation: Any, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Each silo's own ledger (its SQLite database): the epsilon each plan charged, composed
    from that plan's recorded DP events by the charges' accountant at the budget's delta,
    and the total spent on the dataset."""
    from healthfed_common.dp.accounting import epsilon_for_events
    from silo_node.privacy_ledger import PrivacyLedger
    from silo_node.storage import open_silo_db

    out: dict[str, Any] = {}
    for silo_id in HOSPITALS:
        conn = open_silo_db(federation.state_dir(silo_id) / "silo.sqlite3")
        try:
            ledger = PrivacyLedger(conn, actor="benchmark-readout")
            spent, delta = ledger.spent(DATASET)
            per_plan = {}
            for setting_runs in runs.values():
                for run in setting_runs:
                    charges = ledger.charges(DATASET, run["plan_hash"])
                    if charges:
                        per_plan[run["plan_hash"]] = {
                            "rounds_charged": len(charges),
                            "epsilon": epsilon_for_events([c.event for c in charges], delta, charges[0].accountant),
                        }
            out[silo_id] = {"dataset_epsilon_spent": spent, "delta": delta, "per_plan": per_plan}
        finally:
            conn.close()
    for setting_runs in runs.values():
        for run in setting_runs:
            declared = {s: out[s]["per_plan"][run["plan_hash"]]["epsilon"]
                        for s in HOSPITALS if run["plan_hash"] in out[s]["per_plan"]}
            run["epsilon_charged_by_this_plan"] = declared
    return out


# -- report -----------------------------------------------------------------------------------
def _machine() -> dict[str, Any]:
    from pipelines.machine_info import cpu_model

    cpu = cpu_model(platform.processor() or platform.machine())
    return {"cpu": cpu, "cores_visible": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
            "python": platform.python_version(), "platform": platform.platform(),
            "note": "2 cores shared with other sessions' work; timings are indicative"}


def summarise(settings: list[str], federation: dict[str, Any], chosen: dict[str, Hyper]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for setting in settings:
        runs = federation["runs"][setting]
        means = [r["mean_per_hospital_accuracy"] for r in runs]
        per_hospital = {s: float(np.mean([r["per_hospital_accuracy"][s] for r in runs])) for s in HOSPITALS}
        indicators = "standardised per hospital" if chosen[setting].standardize_indicators else "0/1"
        if SETTINGS[setting] is not None:
            preprocessing = "public clinical ranges (see dp.preprocessing)"
        elif chosen[setting].public_ranges:
            preprocessing = ("public clinical ranges (plan preprocessing public_bounds: each numeric input clamped to "
                             "PUBLIC_BOUNDS and scaled to [-1, 1], as the DP plans do; no statistic of the records), "
                             "cp/restecg indicators 0/1 (non-private plan: charged epsilon = infinity)")
        else:
            preprocessing = (f"train-set standardisation per hospital of the numeric inputs, cp/restecg indicators "
                             f"{indicators} (non-private plan: charged epsilon = infinity)")
        entry: dict[str, Any] = {
            "preprocessing": preprocessing,
            "mean_per_hospital_accuracy": float(np.mean(means)),
            "std_over_seeds": float(np.std(means)),
            "per_hospital_mean_over_seeds": per_hospital,
            "hyper_parameters": chosen[setting].__dict__,
            # the plans' own options (the personalisation's choice rule) follow the code's grid
            # version, which may be newer than the search's (hyper_parameter_selection.searched_by);
            # kept with the setting's results, so an entry that mixes runs keeps each one's
            "plans_built_under_grid_version": GRID_HISTORY[-1]["version"],
            "runs": runs,
        }
        personal_runs = [r for r in runs if "personalized_mean_per_hospital_accuracy" in r]
        if personal_runs:
            personal = [r["personalized_mean_per_hospital_accuracy"] for r in personal_runs]
            chosen_epochs = [r["fine_tuning_epochs_chosen_by_each_silo"] for r in personal_runs
                             if "fine_tuning_epochs_chosen_by_each_silo" in r]
            entry["personalized"] = {
                "what": "each silo fine-tunes the final global model of the same plan on its own training records "
                        f"for the epochs it chose from {list(PERSONALIZATION_CHOICES)} by {PERSONALIZATION_FOLDS}-fold "
                        "cross-validation on those records, the fewest within one standard error of the best "
                        "(0 keeps the global model; the plan's client "
                        "optimizer) and releases the fine-tuned copy's test metrics and the count beside the global "
                        "model's; the fine-tuned weights never leave the silo (silo_node.personalization)",
                "fine_tuning_epochs_chosen_per_hospital": {s: [c[s] for c in chosen_epochs] for s in HOSPITALS},
                "mean_per_hospital_accuracy": float(np.mean(personal)),
                "std_over_seeds": float(np.std(personal)),
                "per_hospital_mean_over_seeds": {
                    s: float(np.mean([r["personalized_per_hospital_accuracy"][s] for r in personal_runs]))
                    for s in HOSPITALS},
                "seeds_where_personalized_ge_global": sum(
                    r["personalized_mean_per_hospital_accuracy"] >= r["mean_per_hospital_accuracy"] for r in personal_runs),
            }
        if SETTINGS[setting] is not None:
            entry["dp"] = {"target_epsilon": SETTINGS[setting], "target_delta": DELTA, "accountant": "pld",
                           "neighbouring_relation": "replace-one record (dataset size n is public); derived from "
                                                    "add/remove-one by two-step group privacy",
                           "preprocessing": "each numeric input clamped to a public clinical range from the dataset "
                                            "policy and scaled to [-1, 1]; no statistic of the records (no train-set "
                                            "standardisation, no standardize_indicators)",
                           "hyper_parameters_note": "chosen by this split's grid search on validation splits of the "
                                                    "training records, simulated under this same mechanism (public "
                                                    "ranges, replace-one PLD calibration); the search is not charged "
                                                    "to any ledger",
                           "max_epsilon_charged_by_a_plan": max(
                               (e for r in runs for e in r.get("epsilon_charged_by_this_plan", {}).values()),
                               default=None)}
        results[setting] = entry
    return results


POOLED_KINDS = {False: "train_set_standardisation", True: "public_clinical_ranges"}


def no_dp_pooled_kind(results: dict[str, Any]) -> str:
    """The pooled reference with the same preprocessing as the chosen no-DP plan: public ranges
    when its hyper-parameters have public_ranges, else train-set standardisation (entries written
    before the option existed have no public_ranges: train-standardised)."""
    hyper = results.get("no_dp", {}).get("hyper_parameters", {})
    return POOLED_KINDS[bool(hyper.get("public_ranges", False))]


def acceptance(split_seed: int, results: dict[str, Any], pooled: dict[str, Any]) -> dict[str, Any]:
    """Issue 16's acceptance for one split, from the figures of the entry's results (one run's,
    or a run's merged with the kept settings of an earlier one; see merge_entry) against the
    pooled references computed with them. The global no-DP model is held to the pooled
    reference under ITS preprocessing (no_dp_pooled_kind; named in the check); the other
    preprocessing's reference is reported beside it, not held as a criterion."""
    checks: dict[str, Any] = {}

    def check(name: str, value: float | None, bound: float, **about: str) -> None:
        if value is not None:
            checks[name] = {"value": round(value, 4), "bound": round(bound, 4), "met": bool(value >= bound), **about}

    def mean(setting: str, key: str | None = None) -> float | None:
        entry = results.get(setting)
        if entry is None or (key is not None and key not in entry):
            return None
        return float((entry[key] if key else entry)["mean_per_hospital_accuracy"])

    standardised = pooled["train_set_standardisation"]["mean_per_hospital_accuracy"]
    public = pooled["public_clinical_ranges"]["mean_per_hospital_accuracy"]
    if split_seed == DEFAULT_SPLIT_SEED:
        for setting, target in TARGETS.items():
            check(f"split_43_{setting}_ge_{target}", mean(setting), target)
        check(f"split_43_personalized_ge_{PERSONALIZED_TARGET}", mean("no_dp", "personalized"), PERSONALIZED_TARGET)
    same = no_dp_pooled_kind(results)
    other = next(kind for kind in POOLED_KINDS.values() if kind != same)
    check("no_dp_ge_pooled_reference", mean("no_dp"), pooled[same]["mean_per_hospital_accuracy"],
          pooled_reference=same, why="the pooled reference with the chosen no-DP plan's preprocessing")
    check(f"no_dp_vs_pooled_reference_{other}", mean("no_dp"), pooled[other]["mean_per_hospital_accuracy"],
          pooled_reference=other,
          why="reported only: the pooled reference under the other preprocessing "
              "(the criterion is no_dp_ge_pooled_reference)")
    check("eps_1_within_0.03_of_pooled_reference_same_preprocessing", mean("eps_1"), public - 0.03)
    check("eps_1_within_0.03_of_pooled_reference_train_standardised", mean("eps_1"), standardised - 0.03)
    global_no_dp = mean("no_dp")
    if global_no_dp is not None:
        check("personalized_ge_global", mean("no_dp", "personalized"), global_no_dp)
    checks.update(seed_spread(results, pooled))
    return checks


def _per_seed(entry: dict[str, Any] | None) -> list[float]:
    """A setting's per-seed means, in seed order (empty when the entry holds no runs)."""
    runs = sorted((entry or {}).get("runs") or [], key=lambda run: run["seed"])
    return [float(run["mean_per_hospital_accuracy"]) for run in runs]


def seed_spread(results: dict[str, Any], pooled: dict[str, Any]) -> dict[str, Any]:
    """REPORTED ONLY, beside the pooled-reference bars (pipelines.seed_statistics says why): the
    global no-DP model minus the pooled reference under its preprocessing, paired by seed (the
    pooled reference of seed s is given the plan seed s, and pairing goes by seed value, not by
    position; pairing is valid whether or not the two sides are correlated through the seed, and
    on the reported figures they are hardly so: paired and Welch intervals agree), and eps=1
    minus (the public-range pooled reference - 0.03),
    unpaired (DP noise draws OS entropy), each with its 95% interval over the seeds. An entry
    without per-seed figures on both sides gets no such line."""
    from pipelines.seed_statistics import difference_interval

    why = ("reported only, beside the bar of the same name (whose `met` stands): the difference and its 95% "
           "interval over the seeds, so a miss or a pass smaller than the seed-to-seed spread reads as such")
    out: dict[str, Any] = {}
    no_dp, eps_1 = _per_seed(results.get("no_dp")), _per_seed(results.get("eps_1"))
    kind = no_dp_pooled_kind(results)
    same = pooled.get(kind, {}).get("per_seed_mean_per_hospital_accuracy") or []
    if len(no_dp) >= 2 and len(no_dp) == len(same):
        out["no_dp_ge_pooled_reference_over_seeds"] = {
            **difference_interval(no_dp, same, paired=True), "left": "global no-DP model",
            "right": f"pooled reference ({kind})", "why": why}
    public = pooled.get("public_clinical_ranges", {}).get("per_seed_mean_per_hospital_accuracy") or []
    if len(eps_1) >= 2 and len(public) >= 2:
        out["eps_1_within_0.03_of_pooled_reference_same_preprocessing_over_seeds"] = {
            **difference_interval(eps_1, [p - 0.03 for p in public], paired=False), "left": "eps=1 global model",
            "right": "pooled reference (public_clinical_ranges) - 0.03", "why": why}
    return out


def print_table(results: dict[str, Any]) -> None:
    header = f"{'setting':<13}" + "".join(f"{h:>13}" for h in HOSPITALS) + f"{'mean':>8}{'+-':>7}"
    print(header)
    print("-" * len(header))
    rows = [(setting, entry) for setting, entry in results.items()]
    rows += [("personalised", results[s]["personalized"]) for s in results if "personalized" in results[s]]
    for name, entry in rows:
        print(f"{name:<13}" + "".join(f"{entry['per_hospital_mean_over_seeds'][h]:>13.3f}" for h in HOSPITALS)
              + f"{entry['mean_per_hospital_accuracy']:>8.3f}{entry['std_over_seeds']:>7.3f}")


def reference_figures(exports: dict[str, Path], chosen: dict[str, Hyper], seeds: list[int]) -> dict[str, Any]:
    """The pooled reference under each preprocessing and the local-only models, computed
    OUTSIDE the federation (pipelines.fed_heart_disease_reference says how). Both pooled
    references are always computed, whichever preprocessing the chosen no-DP plan uses
    (acceptance picks the one matching it): "train_set_standardisation" is the chosen no-DP
    plan's view with train statistics (its indicator choice kept; 0/1 when it uses public
    ranges), "public_clinical_ranges" the DP plans' view, which is also the view of a non-DP
    plan with public_ranges. The training recipe (optimizer, batch size, passes) is the chosen
    no-DP plan's in both; local-only models use the train-standardised views (a hospital alone
    has its own statistics to scale with)."""
    from healthfed_common.plan import parse_plan
    from pipelines.demo_reference import SiloArrays
    from pipelines.fed_heart_disease_reference import local_only, pooled_reference

    tables = {name: stored_table(path) for name, path in exports.items()}
    no_dp = plan_document("no_dp", replace(chosen["no_dp"], public_ranges=False), 0)
    dp_setting = next(s for s, e in SETTINGS.items() if e is not None)
    views = {"train_set_standardisation": parse_plan(no_dp),
             "public_clinical_ranges": parse_plan(plan_document(dp_setting, chosen.get(dp_setting, chosen["no_dp"]), 0))}
    arrays = {kind: {name: SiloArrays(*(a.ravel() if i % 2 else a for i, a in enumerate(
                         (*silo_arrays(table, plan, "train"), *silo_arrays(table, plan, "test")))))
                     for name, table in tables.items()}
              for kind, plan in views.items()}
    return {
        "pooled_reference": {kind: pooled_reference(silos, no_dp, seeds) for kind, silos in arrays.items()},
        "local_only": local_only(arrays["train_set_standardisation"], no_dp, seeds),
    }


def per_hospital_table(results: dict[str, Any], references: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each hospital's test accuracy (mean over seeds) under every model of the split, side by
    side: the federated settings, the personalised copy, its local-only model, the pooled one."""
    table: dict[str, dict[str, float]] = {h: {} for h in HOSPITALS}
    for setting, entry in results.items():
        for h in HOSPITALS:
            table[h][setting] = round(entry["per_hospital_mean_over_seeds"][h], 4)
            if "personalized" in entry:
                table[h]["personalized"] = round(entry["personalized"]["per_hospital_mean_over_seeds"][h], 4)
    for h in HOSPITALS:
        table[h]["local_only"] = round(references["local_only"]["per_hospital_mean_over_seeds"][h], 4)
        for kind, pooled in references["pooled_reference"].items():
            table[h][f"pooled_{kind}"] = round(pooled["per_hospital_mean_over_seeds"][h], 4)
    return table


def load_selection(path: Path, split_seed: int) -> dict[str, Hyper]:
    """The hyper-parameters `--select-only --split-seed N` chose for this split."""
    record = _read_splits(path).get(str(split_seed))
    if record is not None:
        known = {f.name for f in fields(Hyper)}  # version-2 records also hold personalization_epochs
        return {s: Hyper(**{k: x for k, x in v["selected"].items() if k in known}) for s, v in record["scores"].items()}
    raise SystemExit(f"no hyper-parameter selection for split seed {split_seed} in {path}: run "
                     f"`--select-only --split-seed {split_seed}` first (or pass --select)")


def _read_splits(path: Path) -> dict[str, Any]:
    previous = json.loads(path.read_text()) if path.is_file() else {}
    return previous.get("splits", {}) if isinstance(previous.get("splits"), dict) else {}


def _legacy_produced_by(record: dict[str, Any]) -> dict[str, Any]:
    """`produced_by` of scores written before it existed: the record's own search, grid version 1."""
    return {"date": record.get("date"), "command": record.get("command"), "grid_version": 1}


def searched_by(path: Path, split_seed: int, settings: list[str]) -> dict[str, Any]:
    """Which search (date, command, grid_version) produced each setting's chosen
    hyper-parameters in the selection file (grid version 1 for records without produced_by)."""
    record = _read_splits(path).get(str(split_seed), {})
    legacy = _legacy_produced_by(record)
    scores = record.get("scores", {})
    return {s: scores[s].get("produced_by", legacy) for s in settings if s in scores}


def _exclusive(path: Path) -> contextlib.AbstractContextManager[None]:
    """Holds an exclusive lock on `path` (through `path`.lock) while a run reads, merges and
    rewrites it: runs of different split seeds may go side by side in one checkout, and
    without the lock the later writer would drop the earlier one's split (a lost update)."""
    return exclusive_lock(path.with_name(path.name + ".lock"))


def _write_json(path: Path, document: dict[str, Any]) -> None:
    """Whole or not at all: a run killed mid-write leaves the previous file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(document, indent=2, default=str) + "\n")


def store_split(path: Path, split_seed: int, entry: dict[str, Any], head: dict[str, Any]) -> dict[str, Any]:
    """Merges this run's split entry into the result file (merge_entry, then _merge_split) and
    writes it, under the file's lock; returns the merged entry."""
    with _exclusive(path):
        merged = merge_entry(_read_splits(path).get(str(split_seed)), entry)
        _write_json(path, _merge_split(path, split_seed, merged, head))
    return merged


def store_selection(path: Path, split_seed: int, record: dict[str, Any]) -> dict[str, Any]:
    """Merges this search's record into the selection file (merge_selection) and writes it,
    under the file's lock; returns the whole document."""
    with _exclusive(path):
        document = merge_selection(path, split_seed, record)
        _write_json(path, document)
    return document


def _merge_split(path: Path, split_seed: int, entry: dict[str, Any], head: dict[str, Any]) -> dict[str, Any]:
    """The result file keeps one entry per split seed; a run replaces its own split's entry
    (which merge_entry has already merged with the earlier entry's settings this run did not
    measure)."""
    splits = _read_splits(path)
    splits[str(split_seed)] = entry
    return {**head, "splits": dict(sorted(splits.items())),
            "split_seeds_not_run": [s for s in REPORTED_SPLIT_SEEDS if str(s) not in splits]}


def _in_settings_order(by_setting: dict[str, Any]) -> dict[str, Any]:
    """DP settings first, then no DP (the order the runs go in); unknown keys last."""
    order = sorted(SETTINGS, key=lambda s: SETTINGS[s] is None)
    return {s: by_setting[s] for s in [*order, *sorted(set(by_setting) - set(order))] if s in by_setting}


def _earlier(previous: dict[str, Any], history_key: str, by_setting: dict[str, dict[str, Any]], kept: list[str],
             own: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs whose settings an entry keeps: the previous entry's own run (`own`, the
    settings it measured itself) and the runs it had kept in turn, each cut to `kept`."""
    mine = {"date": previous.get("date"), "command": previous.get("command")}
    runs = [{"settings": [s for s in by_setting if _who(by_setting[s]) == mine], **own},
            *previous.get(history_key, [])]
    runs = [{**run, "settings": [s for s in run["settings"] if s in kept]} for run in runs]
    return [run for run in runs if run["settings"]]


def _who(produced_by: dict[str, Any]) -> dict[str, Any]:
    return {"date": produced_by.get("date"), "command": produced_by.get("command")}


def merge_selection(path: Path, split_seed: int, record: dict[str, Any]) -> dict[str, Any]:
    """The selection file with this search's `record` as its split's entry. A search of a
    subset of the settings (`--select-only --settings no_dp`) replaces only those settings'
    scores and keeps the others of the split's earlier entry; every setting's scores carry
    `produced_by` (date, command, grid_version of the search that wrote them; a record written
    before produced_by existed was searched under grid version 1), and the searches whose
    scores are kept are listed under `earlier_searches`."""
    splits = _read_splits(path)
    old = splits.get(str(split_seed))
    if isinstance(old, dict) and isinstance(old.get("scores"), dict):
        kept = [s for s in old["scores"] if s not in record["scores"]]
        if kept:
            legacy = _legacy_produced_by(old)
            old_by = {s: v.get("produced_by", legacy) for s, v in old["scores"].items()}
            record["scores"] = _in_settings_order(
                {**{s: {**old["scores"][s], "produced_by": old_by[s]} for s in kept}, **record["scores"]})
            record["settings_searched_by_this_run"] = [s for s in record["scores"] if s not in kept]
            record["earlier_searches"] = _earlier(old, "earlier_searches", old_by, kept, {
                "date": old.get("date"), "command": old.get("command"), "machine": old.get("machine"),
                "wall_time_s": old.get("wall_time_s")})
            record["note"] = ("this entry mixes searches: " + "; ".join(
                f"{s} by `{old_by[s].get('command')}` ({old_by[s].get('date')}, grid version "
                f"{old_by[s].get('grid_version')})" for s in kept)
                + f"; {', '.join(record['settings_searched_by_this_run'])} by this search ({record['date']})")
    splits[str(split_seed)] = record
    return {"benchmark": "fed_heart_disease hyper-parameter search",
            "data": "validation splits (25%, stratified where possible) of each hospital's TRAIN set of the split "
                    "seed; test sets never read; the search is NOT charged to any ledger",
            "grid_history": list(GRID_HISTORY),
            "splits": dict(sorted(splits.items()))}


RUN_FIELDS = ("command", "date", "machine", "wall_time_s", "federation_wall_time_s", "reference_wall_time_s",
              "silo_restarts_between_plans")


def merge_entry(previous: dict[str, Any] | None, entry: dict[str, Any]) -> dict[str, Any]:
    """This run's split entry, merged with the split's earlier entry when the run measured only
    some settings (`--settings no_dp`): the settings this run measured replace the earlier
    results (and chosen hyper-parameters), the others are KEPT as measured by their run; the
    per-hospital table and the acceptance are recomputed from the merged results against this
    run's pooled references (they follow the chosen no-DP plan's training recipe, so they are
    recomputed whenever that changes). `settings_measured_by` says which run (date, command)
    measured each setting; `earlier_runs` keeps each earlier run's own record (machine, wall
    times, silo restarts, its federation's ledger, the reference figures it computed) and
    `mixes_runs` says so in words. The top-level command/date/machine/privacy.ledger are this
    run's. Without an earlier entry, or when this run measured every setting the earlier
    entry had, the entry is this run's alone."""
    this_run = {"date": entry["date"], "command": entry["command"]}
    entry["settings_measured_by"] = {s: dict(this_run) for s in entry["results"]}
    if not isinstance(previous, dict) or not isinstance(previous.get("results"), dict):
        return entry
    kept = [s for s in previous["results"] if s not in entry["results"]]
    if not kept:
        return entry
    legacy = {"date": previous.get("date"), "command": previous.get("command")}
    previous_by = previous.get("settings_measured_by") or {s: dict(legacy) for s in previous["results"]}
    previous_selection = previous.get("hyper_parameter_selection", {})
    previous_how = previous_selection.get("how_by_setting") or {s: previous_selection.get("how")
                                                                 for s in previous["results"]}
    selection = entry["hyper_parameter_selection"]
    entry["results"] = _in_settings_order({**{s: previous["results"][s] for s in kept}, **entry["results"]})
    entry["hyper_parameter_selection"] = {
        "how": selection["how"],
        "how_by_setting": _in_settings_order({**{s: previous_how.get(s) for s in kept},
                                              **{s: selection["how"] for s in selection["chosen"]}}),
        "chosen": _in_settings_order({**{s: previous_selection.get("chosen", {}).get(s) for s in kept},
                                      **selection["chosen"]}),
        "searched_by": _in_settings_order({**{s: previous_selection.get("searched_by", {}).get(
                                               s, "not recorded (entry written before searched_by existed)")
                                               for s in kept},
                                           **selection.get("searched_by", {})}),
    }
    entry["settings_measured_by"] = _in_settings_order({**{s: previous_by[s] for s in kept},
                                                         **entry["settings_measured_by"]})
    entry["earlier_runs"] = _earlier(previous, "earlier_runs", previous_by, kept, {
        **{k: previous.get(k) for k in RUN_FIELDS},
        "privacy_ledger": previous.get("privacy", {}).get("ledger"),
        "references_it_computed": {
            "pooled_reference": {k: v.get("mean_per_hospital_accuracy")
                                 for k, v in previous.get("pooled_reference", {}).items()},
            "local_only": previous.get("local_only", {}).get("mean_per_hospital_accuracy")},
    })
    measured_now = [s for s in entry["results"] if s not in kept]
    by = entry["settings_measured_by"]
    entry["mixes_runs"] = (
        "this entry mixes runs: " + "; ".join(f"{s} measured {by[s]['date']} by `{by[s]['command']}`"
                                              for s in entry["results"])
        + f". The pooled reference, local-only models, per-hospital table and acceptance are this run's "
        f"({this_run['date']}, settings {', '.join(measured_now)}), computed over the merged results; privacy.ledger "
        "is this run's federation's ledger, each earlier run's ledger is in earlier_runs[].privacy_ledger (its DP "
        "plans' charges also stay in their results' runs[].epsilon_charged_by_this_plan)")
    entry["per_hospital_accuracy_side_by_side"] = per_hospital_table(entry["results"], entry)
    entry["acceptance"] = acceptance(entry["split_seed"], entry["results"], entry["pooled_reference"])
    entry["privacy"] = {**entry.get("privacy", {}),
                        "ledger_covers": f"this run's federation only (settings {', '.join(measured_now)})"}
    return entry


def recompute_acceptance(path: Path, command: str) -> int:
    """Recomputes each split entry's `acceptance` from the entry's own stored results and pooled
    references (acceptance() reads nothing else), leaving every figure as its run measured it,
    and records when and by what command in `acceptance_recomputed`."""
    if not path.is_file():
        raise SystemExit(f"no result file {path}: run the benchmark first")
    with _exclusive(path):
        return _recompute_acceptance_locked(path, command)


def _recompute_acceptance_locked(path: Path, command: str) -> int:
    from pipelines.seed_statistics import shown

    document = json.loads(path.read_text())
    stamp = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": command,
             "what": "the acceptance alone, recomputed from this entry's stored results and pooled references; "
                     "no figure was re-measured"}
    for key, entry in document.get("splits", {}).items():
        entry["acceptance"] = acceptance(int(entry["split_seed"]), entry["results"], entry["pooled_reference"])
        entry["acceptance_recomputed"] = stamp
        print(f"split {key}: " + ", ".join(f"{name} {'met' if check['met'] else 'MISSED'}"
                                           for name, check in entry["acceptance"].items() if "met" in check))
        for name, check in entry["acceptance"].items():
            if "interval" in check:
                print(f"  {name}: {shown(check)} -- {check['reads']}")
    _write_json(path, document)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.fed_heart_disease",
        description="Fed-Heart-Disease (FLamby protocol) run as a real 4-hospital federation "
        "(4 silo-node processes + an aggregator process per plan) for no DP (with per-hospital "
        "personalisation), (eps=1, delta=1e-3) and (eps=0.1, delta=1e-3) record-level DP-SGD, 5 seeds "
        "each, on one split seed; computes the pooled reference and local-only models outside the "
        "federation; writes the split's entry of bench-results/fed_heart_disease.json and prints a table. "
        "Reads the data in place; exports and federation state go to --work.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Hyper-parameters: this split's entry of the selection file, written by "
        "--select-only --split-seed N on validation splits of the hospitals' TRAIN sets (never the "
        "test sets); --select searches first in the same run.",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder with processed.{cleveland,hungarian,switzerland,va}.data (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=Path("runs/fed_heart_disease"),
                        help="work folder for exports, kits, silo state, plans, reports (default: %(default)s; recreated)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/fed_heart_disease.json"),
                        help="result JSON; this split's entry is replaced, the others kept; a run of some settings "
                        "only keeps the entry's other settings and says so (default: %(default)s)")
    parser.add_argument("--split-seed", type=int, default=DEFAULT_SPLIT_SEED,
                        help=f"the protocol's train_test_split random_state (default: %(default)s, FLamby's; "
                        f"the report uses {', '.join(map(str, REPORTED_SPLIT_SEEDS))}, fixed before any result on them)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per setting (default: 5)")
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help=f"comma-separated subset of {','.join(SETTINGS)} (default: all); with a subset, the "
                        "split's entries in the selection file and the result file keep the other settings' "
                        "scores/results and record which run produced each")
    parser.add_argument("--select", action="store_true",
                        help="first choose hyper-parameters on validation splits of the train sets (in-process)")
    parser.add_argument("--select-only", action="store_true", help="only the hyper-parameter search; no federation")
    parser.add_argument("--selection-out", type=Path, default=SELECTION_FILE,
                        help="selection file, one entry per split seed (default: %(default)s)")
    parser.add_argument("--recompute-acceptance", action="store_true",
                        help="no run: recompute every stored split entry's acceptance in --out from its stored "
                        "results and pooled references (after the acceptance gained a reported figure); the "
                        "figures are untouched and each entry records the recomputation")
    args = parser.parse_args(argv)
    command = " ".join([".venv/bin/python -m pipelines.fed_heart_disease", *(argv if argv is not None else sys.argv[1:])])
    if args.recompute_acceptance:
        return recompute_acceptance(args.out, command)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    # DP plans first: a non-private plan charges the shared ledger epsilon = infinity
    settings.sort(key=lambda s: SETTINGS.get(s) is None)
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {list(SETTINGS)}")
    if not args.data.is_dir():
        parser.error(f"no data folder {args.data}")
    if not args.select_only:
        # checked before any search: the references train with the no-DP choice, so a run needs
        # one for no_dp and for each setting it runs, searched now or kept from an earlier search
        stored = _read_splits(args.selection_out).get(str(args.split_seed), {}).get("scores", {})
        missing = sorted(({*settings, "no_dp"} - set(stored)) - set(settings if args.select else []))
        if missing:
            parser.error(f"no hyper-parameters for {', '.join(missing)} on split seed {args.split_seed} in "
                         f"{args.selection_out} (the pooled and local-only references train with the no-DP "
                         f"choice): run `--select-only --settings {','.join(missing)} --split-seed "
                         f"{args.split_seed}` first, or pass --select with those settings")
    started = time.time()
    import shutil

    if args.work.exists():
        shutil.rmtree(args.work)
    exports = write_exports(args.data, args.work / "exports", args.split_seed)
    if args.select or args.select_only:
        found = select(exports, settings)
        searched = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for setting_scores in found.values():
            setting_scores["produced_by"] = {"date": searched, "command": command,
                                             "grid_version": GRID_HISTORY[-1]["version"]}
        record = {"split_seed": args.split_seed, "how": select.__doc__, "scores": found, "command": command,
                  "machine": _machine(), "wall_time_s": round(time.time() - started, 1), "date": searched}
        document = store_selection(args.selection_out, args.split_seed, record)
        kept = [s for s in document["splits"][str(args.split_seed)]["scores"] if s not in found]
        print(f"wrote split {args.split_seed} ({', '.join(found)}) to {args.selection_out} "
              f"({record['wall_time_s']:.0f}s)" + (f"; kept the earlier scores of {', '.join(kept)}" if kept else ""))
        if args.select_only:
            return 0
        selection_how = "searched in this run (--select)"
    else:
        selection_how = f"read from {args.selection_out} (written by --select-only --split-seed {args.split_seed})"
    # the searched settings' new choices and (a --settings subset) the others' kept ones: the
    # pooled and local-only references follow the no-DP choice even when only DP was searched
    chosen = load_selection(args.selection_out, args.split_seed)
    seeds = list(range(args.seeds))
    reference_began = time.time()
    references = reference_figures(exports, chosen, seeds)
    reference_s = time.time() - reference_began
    print("pooled reference " + ", ".join(f"{k} {v['mean_per_hospital_accuracy']:.3f}"
                                          for k, v in references["pooled_reference"].items())
          + f"; local-only {references['local_only']['mean_per_hospital_accuracy']:.3f} ({reference_s:.0f}s)")
    federation_began = time.time()
    federation = run_federation(args.work, exports, chosen, seeds, settings)
    results = summarise(settings, federation, chosen)
    entry: dict[str, Any] = {
        "split_seed": args.split_seed,
        "hyper_parameter_selection": {"how": selection_how, "chosen": {s: chosen[s].__dict__ for s in settings},
                                      "searched_by": searched_by(args.selection_out, args.split_seed, settings)},
        "results": results,
        **references,
        "per_hospital_accuracy_side_by_side": per_hospital_table(results, references),
        "acceptance": acceptance(args.split_seed, results, references["pooled_reference"]),
        "silo_restarts_between_plans": federation["silo_restarts"],
        "privacy": {"budget_per_dataset": PRIVACY_BUDGET, "approval_policy": APPROVAL_POLICY,
                    "ledger": federation["ledger"],
                    "note": "dp_declarations_cumulative (run report) is what each silo declares after the plan: "
                            "everything its ledger composed on the dataset so far (all earlier plans included); "
                            "epsilon_charged_by_this_plan composes only that plan's charges from the silo's ledger. "
                            "The hyper-parameter search and the pooled/local-only references are not charged."},
        "command": command, "machine": _machine(),
        "wall_time_s": round(time.time() - started, 1),
        "federation_wall_time_s": round(time.time() - federation_began, 1),
        "reference_wall_time_s": round(reference_s, 1),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.split_seed == DEFAULT_SPLIT_SEED:
        entry["flamby_reference"] = FLAMBY
    head = {
        "benchmark": "fed_heart_disease",
        "mode": "real federation: 4 silo-node processes + one aggregator process per plan, loopback mutual TLS "
                "(pipelines.local_federation.LocalFederation); silos evaluate on their own test subsets; pooled "
                "reference and local-only models computed outside the federation (labelled so)",
        "protocol": "FLamby Fed-Heart-Disease, ../shared/data/fed_heart_disease/README.md, with the split seed as "
                    "train_test_split's random_state (see the module docstring for the Switzerland split and the "
                    "handling of constant columns)",
        "metric": "mean over seeds of the plain mean of the 4 hospitals' test accuracies",
        "split_seeds": {"values": list(REPORTED_SPLIT_SEEDS),
                        "note": "fixed in code before any result on them was seen: SPLIT_SEEDS 43/44/45 before the "
                                "first run (grid versions 2 and 3 were fixed after test figures on them had been "
                                "seen), FRESH_SPLIT_SEEDS 47/48 together with grid version 3, before any run on them, 49/50 "
                                "on 2026-12-06, before any run on them, grid unchanged, 51/52 with grid version 4, "
                                "53/54 with grid version 5 and 55/56 with grid version 6, each before any run on them; "
                                "46 excluded (seen by an earlier review)"},
        "train_test_sizes": {h: list(v) for h, v in EXPECTED_SIZES.items()},
        "model": "logistic_regression",
        "seeds": {"values": seeds, "meaning": "plan seeds.model_init = seeds.data_order = seed; DP noise and "
                  "Poisson sampling draw OS entropy"},
        "targets": {"split_43": {**TARGETS, "personalized": PERSONALIZED_TARGET},
                    "every_split": "global no-DP >= that split's pooled reference; eps=1 within 0.03 of it; "
                                   "personalised >= global"},
        "hyper_parameter_selection": "per split seed, a grid fixed in code (grid(); the fine-tuning epochs are each silo's choice, PERSONALIZATION_CHOICES) searched "
                                     "on validation splits of the TRAIN records only (--select-only --split-seed N); "
                                     f"scores in {SELECTION_FILE}; the search is not charged to any ledger. "
                                     + GRID_NOTE,
        "entries_may_mix_runs": "a run of some settings only (--settings no_dp) keeps the split entry's other "
                                "settings as an earlier run measured them; such an entry names the run of each setting "
                                "(settings_measured_by, earlier_runs, mixes_runs) and recomputes the acceptance from "
                                "the merged results",
    }
    entry = store_split(args.out, args.split_seed, entry, head)
    if "mixes_runs" in entry:
        print(entry["mixes_runs"])
    print_table(entry["results"])
    print(json.dumps(entry["acceptance"], indent=1))
    print(f"wall time {entry['wall_time_s']:.0f}s; wrote split {args.split_seed} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
