"""The training plan: a declarative document the coordinator writes and every silo checks.

A plan names things from closed vocabularies (model ids from `models.MODEL_REGISTRY`,
feature transforms, optimizers); it never carries code or class paths. Both sides build the
same TFF computation from it, and `plan_hash` binds approvals, ledger charges and audit
entries to exactly this document and this HealthFed version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from healthfed_common import __version__
from healthfed_common.canonical_json import canonical_json, sha256_hex
from healthfed_common.client_weighting import DEFAULT_CLIENT_WEIGHTING, ClientWeighting
from healthfed_common.errors import PlanInvalid

if TYPE_CHECKING:
    from healthfed_common.secagg.graph_parameters import GraphChoice

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")]


class StrictModel(BaseModel):
    """Rejects unknown keys and is immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class FeatureSpec(StrictModel):
    """One model input column and how it becomes numbers.

    `standardize`: numeric. Without DP (by default): centred and scaled with the silo's own
    training statistics. Under DP, or with the plan's `preprocessing: public_bounds`: clamped to
    the public `bounds` the silo's dataset policy declares and scaled to [-1, 1] (under DP a
    training statistic would change the sensitivity; such a plan on a feature without declared
    bounds is refused, NON_PRIVATE_PREPROCESSING).
    `identity`: numeric, used as is. `one_hot`: categorical, one column per listed category
    (values outside the list encode as all zeros). `year`: a date reduced to its year.

    `standardize_indicators` (one_hot only): centre and scale each indicator column with the
    silo's own training mean and sample std, as published protocols such as FLamby's
    Fed-Heart-Disease do; it derives nothing the 0/1 indicators do not already carry, so the
    silo's allow-list for one_hot covers it.
    """

    name: Identifier
    transform: Literal["standardize", "identity", "one_hot", "year"] = "standardize"
    categories: tuple[str, ...] | None = None
    standardize_indicators: bool = False

    @model_validator(mode="after")
    def _categories_only_for_one_hot(self) -> "FeatureSpec":
        if self.transform == "one_hot" and not self.categories:
            raise ValueError(f"feature {self.name!r}: one_hot needs a non-empty categories list")
        if self.transform != "one_hot" and self.categories is not None:
            raise ValueError(f"feature {self.name!r}: categories are only for one_hot")
        if self.standardize_indicators and self.transform != "one_hot":
            raise ValueError(f"feature {self.name!r}: standardize_indicators is only for one_hot")
        return self

    @property
    def width(self) -> int:
        """Number of model input columns this feature becomes."""
        return len(self.categories) if self.categories else 1


class LabelSpec(StrictModel):
    """Binary label: a record is positive when its label value is in `positive_values`."""

    name: Identifier
    positive_values: tuple[str, ...] = ("1",)


class OptimizerSpec(StrictModel):
    name: Literal["sgd", "sgdm", "adam", "yogi"] = "sgd"
    learning_rate: float = Field(gt=0, le=100)
    momentum: float | None = Field(default=None, ge=0, lt=1)


class ModelSpec(StrictModel):
    """`kernel_initializer`: `zeros` starts a logistic regression at the uninformative model
    (the textbook start for a convex model; under strong DP noise a random start is noise the
    few noisy steps cannot undo). Models with hidden units need random starts to break symmetry."""

    id: Identifier
    hidden_units: tuple[Annotated[int, Field(ge=1, le=4096)], ...] = ()
    image_size: Annotated[int, Field(ge=8, le=512)] | None = None
    kernel_initializer: Literal["glorot_uniform", "zeros"] = "glorot_uniform"

    @model_validator(mode="after")
    def _zeros_only_without_hidden_units(self) -> "ModelSpec":
        if self.kernel_initializer == "zeros" and self.id != "logistic_regression":
            raise ValueError(f"model {self.id!r}: kernel_initializer zeros is only for logistic_regression "
                             "(hidden units started equal stay equal)")
        return self


class DPSpec(StrictModel):
    """Record-level DP-SGD inside each silo (see healthfed_common.dp)."""

    target_epsilon: float = Field(gt=0, le=100)
    target_delta: float = Field(gt=0, lt=1)
    l2_norm_clip: float = Field(gt=0, default=1.0)
    accountant: Literal["rdp", "pld"] = "rdp"


class SecureAggregationSpec(StrictModel):
    """How the silos' integer vectors are summed. `threshold` (t) is the number of cohort
    silos whose inputs every revealed sum contains; None means the recommended
    floor(2n/3) + 1 over the plan's cohort of n. `neighbours` fixes the SecAgg+ graph degree;
    None lets HealthFed derive the smallest degree that is safe for the cohort, threshold and
    `colluding_silos` (healthfed_common.secagg.graph_parameters; often the complete graph)."""

    protocol: Literal["none", "secagg", "secagg_plus"] = "none"
    threshold: Annotated[int, Field(ge=2)] | None = None
    neighbours: Annotated[int, Field(ge=2)] | None = None
    colluding_silos: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="How many cohort silos may collude with the coordinator (c); None: the most the "
        "threshold tolerates, 2t - n - 1. The SecAgg+ degree is derived (or an explicit `neighbours` "
        "checked) so that no c colluders and n - t dropped silos split the honest survivors.",
    )


class AlgorithmSpec(StrictModel):
    """The federated algorithm every silo's `work` runs (the server side is FedAvg's weighted
    mean, then `server_optimizer`, for both).

    `fedavg`: each silo minimises its own loss from the global model.
    `fedprox`: each silo minimises its loss plus the proximal term mu/2 * ||w - w_global||^2,
    which keeps a silo's local model near the round's global model when hospitals' data differ
    (Li et al. 2020). Its gradient mu * (w - w_global) depends on no record, so under DP-SGD it
    is added after per-example clipping and noise: it costs no privacy and changes neither the
    noise nor the accounting. mu = 0 is FedAvg. With plain SGD keep client learning_rate * mu
    below 2: beyond it each local step overshoots the global model and the local model diverges.
    `client_weighting` (either algorithm): the weight of each silo's update in the server's mean
    (healthfed_common.client_weighting)."""

    name: Literal["fedavg", "fedprox"] = "fedavg"
    mu: float | None = Field(default=None, ge=0, le=1000,
                             description="Proximal strength (fedprox only, required there).")
    client_weighting: ClientWeighting = Field(
        default=DEFAULT_CLIENT_WEIGHTING,
        description="How the server's mean weighs each silo's update: `examples` (the examples it processed this "
        "round; under DP-SGD the expected number: the pooled objective), `sqrt_examples` (their square root: a small "
        "hospital counts for more than its size, a large one for less), `uniform` (every silo alike). Each is a "
        "function of the record count every plan releases as metadata, so none reveals more than the count.")

    @model_validator(mode="after")
    def _mu_only_for_fedprox(self) -> "AlgorithmSpec":
        if self.name == "fedprox" and self.mu is None:
            raise ValueError("fedprox needs mu, the proximal strength (mu = 0 is fedavg)")
        if self.name != "fedprox" and self.mu is not None:
            raise ValueError("mu is only for fedprox")
        return self

    def canonical(self) -> dict[str, Any]:
        """The spec as hashed: `client_weighting` is left out while it is the default, so plans
        written before the option existed keep their hashes."""
        document = self.model_dump(mode="json")
        if self.client_weighting == DEFAULT_CLIENT_WEIGHTING:
            del document["client_weighting"]
        return document

    @property
    def proximal_strength(self) -> float | None:
        """mu for fedprox, None for fedavg (no proximal term in the graph at all)."""
        return self.mu if self.name == "fedprox" else None


class PersonalizationSpec(StrictModel):
    """Per-hospital personalisation measured at the final evaluation.

    `local_fine_tuning`: each silo fine-tunes the final global model on its own training
    records (the plan's client optimizer, batch size and data-order seed) and evaluates the
    fine-tuned model on its own held-out records. Only the metrics leave the silo, beside the
    global model's; the fine-tuned weights never do. Allowed only for plans without DP:
    fine-tuning on the training records after the plan's last DP round would be a release the
    plan's epsilon does not cover.

    How long to fine-tune is either fixed for every hospital (`local_epochs`) or each silo's own
    choice (`local_epochs_choices`): the silo holds out `holdout_fraction` of its training
    records, fine-tunes on the rest for each listed number of epochs (0 = keep the global
    model), keeps the one with the best held-out accuracy (ties: lower held-out loss, then fewer
    epochs; a silo with too few records to hold any out takes the fewest listed) and fine-tunes
    on all its training records for that many. Why a local choice: one epoch count cannot fit
    hospitals of 30 and 199 training records alike, and whether fine-tuning helps at all is a
    question only a hospital's own records can answer. The chosen count is released with the
    metrics (`personalized_fine_tuning_epochs`), in the same disclosure.

    `choice_folds` (default 1, the single holdout above) of k >= 2 makes the choice by
    stratified k-fold cross-validation over all of the silo's training records instead, and
    keeps the FEWEST listed epochs whose mean held-out accuracy is within one standard error of
    the best count's (the one-standard-error rule). Why: one holdout of a quarter of 30 to 200
    records scores each count on 8 to 50 records, so the best count often wins by noise, and a
    hospital then gets a fine-tuned copy worse than the shared model; with 0 listed, the rule
    keeps fine-tuning only where its mean fold accuracy leads the shared model's by more than
    the best count's standard error. The folds share records, so this guards against choosing
    by noise without being a significance test."""

    method: Literal["local_fine_tuning"] = "local_fine_tuning"
    local_epochs: int | None = Field(default=None, ge=1, le=1000,
                                     description="Every hospital fine-tunes for this many epochs. Give this or "
                                     "local_epochs_choices.")
    local_epochs_choices: tuple[Annotated[int, Field(ge=0, le=1000)], ...] | None = Field(
        default=None, min_length=2, max_length=8,
        description="Each hospital picks its own count from these (0 = keep the global model) on its training "
        "records (one holdout, or choice_folds folds); the count it picked is released as "
        "personalized_fine_tuning_epochs.")
    holdout_fraction: float = Field(default=0.25, gt=0.0, le=0.5,
                                    description="With local_epochs_choices: the share of each hospital's training "
                                    "records held out to choose on (stratified by label).")
    choice_folds: int = Field(default=1, ge=1, le=10,
                              description="With local_epochs_choices: 1 = choose on one held-out holdout_fraction; "
                              "k >= 2 = stratified k-fold cross-validation over all the training records, keeping "
                              "the fewest epochs whose mean held-out accuracy is within one standard error of the "
                              "best count's.")

    @model_validator(mode="after")
    def _one_way_to_pick_the_epochs(self) -> "PersonalizationSpec":
        if (self.local_epochs is None) == (self.local_epochs_choices is None):
            raise ValueError("give exactly one of local_epochs (every hospital alike) and "
                             "local_epochs_choices (each silo picks on a holdout of its training records)")
        if self.local_epochs_choices is not None:
            if len(set(self.local_epochs_choices)) != len(self.local_epochs_choices):
                raise ValueError(f"local_epochs_choices lists an epoch count twice: {list(self.local_epochs_choices)}")
            if list(self.local_epochs_choices) != sorted(self.local_epochs_choices):
                # one order, so the same choice has one hash and reads the same to every steward
                raise ValueError(f"list local_epochs_choices in increasing order: {list(self.local_epochs_choices)}")
        elif self.holdout_fraction != 0.25:
            raise ValueError("holdout_fraction is only for local_epochs_choices")
        elif self.choice_folds != 1:
            raise ValueError("choice_folds is only for local_epochs_choices")
        if self.choice_folds > 1 and self.holdout_fraction != 0.25:
            # each of k folds holds out 1/k of the records: another share would be a second meaning
            # (the default is accepted, as every full dump of a plan carries it)
            raise ValueError("give holdout_fraction (one holdout) or choice_folds (cross-validation), not both")
        return self

    @property
    def chosen_locally(self) -> bool:
        return self.local_epochs_choices is not None

    def describe(self) -> str:
        """How long each silo fine-tunes, in words a data steward reads before approving."""
        if self.local_epochs_choices is None:
            return f"{self.local_epochs} pass(es)"
        if self.choice_folds > 1:
            return (f"as many passes as it chooses from {list(self.local_epochs_choices)} (0 = keep the shared model) "
                    f"by {self.choice_folds}-fold cross-validation on its training records, taking the fewest passes "
                    "that score within one standard error of the best; the count it chose is released with the "
                    "metrics")
        return (f"as many passes as it chooses from {list(self.local_epochs_choices)} (0 = keep the shared model) "
                f"on a held-out {self.holdout_fraction:.0%} of its training records; the count it chose is released "
                "with the metrics")

    def canonical(self) -> dict[str, Any]:
        """The spec as hashed: the keys added with local choice are left out of a fixed-epochs
        spec, so such plans keep the hash they had before the keys existed; likewise
        `choice_folds` appears only when it is not 1 (and then replaces `holdout_fraction`)."""
        document = self.model_dump(mode="json")
        if self.local_epochs_choices is None:
            del document["local_epochs_choices"], document["holdout_fraction"]
        else:
            del document["local_epochs"]
            if self.choice_folds > 1:
                del document["holdout_fraction"]
        if self.choice_folds == 1:
            del document["choice_folds"]
        return document


SiloId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9\-]{1,62}$")]


class CohortMember(StrictModel):
    """One hospital of the plan's fixed cohort: its silo id and the public half of the
    Ed25519 signing key the hospital generated itself (base64 of 32 bytes). Every
    secure-aggregation message that speaks for the silo must verify under this key."""

    silo_id: SiloId
    signing_key: str = Field(min_length=44, max_length=44, description="base64 Ed25519 public key")

    @model_validator(mode="after")
    def _key_decodes(self) -> "CohortMember":
        from healthfed_common.silo_keys import decode_public_key

        decode_public_key(self.signing_key)
        return self

    @property
    def fingerprint(self) -> str:
        from healthfed_common.silo_keys import fingerprint

        return fingerprint(self.signing_key)


def recommended_threshold(n: int) -> int:
    """floor(2n/3) + 1: with the consistency round, an aggregator colluding with c silos can
    make honest silos reveal both kinds of share of one peer only if 2t - n <= c, and can
    reconstruct a secret alone only if c >= t; this t tolerates c < n/3 for both."""
    return (2 * n) // 3 + 1


class Seeds(StrictModel):
    model_init: int = Field(default=0, ge=0, lt=2**31)
    data_order: int = Field(default=0, ge=0, lt=2**31)


class Plan(StrictModel):
    plan_format: Literal[1] = 1
    name: Identifier
    description: str = Field(default="", max_length=2000)
    purpose: str = Field(default="", max_length=2000)
    dataset: Identifier = Field(
        description="Federation-wide dataset name; each silo maps it to a dataset it registered."
    )
    model: ModelSpec
    features: tuple[FeatureSpec, ...] = Field(min_length=1)
    label: LabelSpec
    client_optimizer: OptimizerSpec
    server_optimizer: OptimizerSpec = OptimizerSpec(name="sgd", learning_rate=1.0)
    local_epochs: int = Field(ge=1, le=1000)
    batch_size: int = Field(ge=1, le=100_000)
    rounds: int = Field(ge=1, le=100_000)
    min_silos_per_round: int = Field(ge=1)
    round_deadline_s: float = Field(
        default=120.0,
        gt=0,
        description="Longest a round (or the final evaluation) waits for answers after it is offered.",
    )
    max_round_attempts: int = Field(
        default=3,
        ge=1,
        le=100,
        description="How often a round is offered again when fewer than min_silos_per_round "
        "silos returned results; after the last attempt the plan stops as failed.",
    )
    straggler_grace_s: float | None = Field(
        default=None,
        ge=0,
        description="Once min_silos_per_round results are in (under secure aggregation: at least "
        "the secure-aggregation threshold), wait at most this much longer for the other silos, "
        "then close the round; a straggler's late result is discarded for that round (it is "
        "offered the next one as usual). None: wait for every silo until round_deadline_s.",
    )
    failing_silo_rounds: int | None = Field(
        default=3,
        ge=1,
        description="After this many consecutive round offers a silo let pass without a result "
        "(no answer before the round closed, or SILO_INTERNAL_ERROR), it is reported as failing "
        "and rounds stop waiting for it when the others can meet the minimum without it. It is "
        "waited for again the moment it takes a task, and reported as rejoined when it answers. "
        "Policy refusals are answers, not failures. None: never report, always wait.",
    )
    update_bound: float = Field(
        default=1000.0,
        gt=0,
        description="Per-coordinate bound on a silo's example-weighted model delta before "
        "quantization for the secure sum; values beyond it are clipped (and counted).",
    )
    max_examples_per_silo: int = Field(default=1_000_000, ge=1)
    dp: DPSpec | None = None
    preprocessing: Literal["train_statistics", "public_bounds"] | None = Field(
        default=None,
        description="How `standardize` features are scaled and missing numbers filled. "
        "train_statistics: each hospital's own training mean and std (so every hospital scales "
        "differently); public_bounds: clamped to the public value ranges each hospital's dataset "
        "policy declares and mapped onto [-1, 1], missing values the policy's public impute value "
        "(every hospital scales alike, and no record moves another's features). None: "
        "public_bounds under dp (the only choice there), train_statistics otherwise.",
    )
    secure_aggregation: SecureAggregationSpec = SecureAggregationSpec()
    algorithm: AlgorithmSpec = Field(
        default=AlgorithmSpec(),
        description="fedavg (default) or fedprox with its proximal strength mu, and how the server weighs each "
        "silo's update.",
    )
    personalization: PersonalizationSpec | None = Field(
        default=None,
        description="Evaluate, beside the global model, each hospital's locally fine-tuned copy of it "
        "(non-DP plans only; the fine-tuned weights never leave the silo). None: global model only.",
    )
    cohort: tuple[CohortMember, ...] = Field(
        default=(),
        description="The hospitals this plan may run with, each pinned to its own signing key. "
        "Required under secure aggregation: a silo refuses any session whose participants are not "
        "exactly this cohort. `aggregator run` fills it from the enrolment records when empty.",
    )
    seeds: Seeds = Seeds()

    @model_validator(mode="after")
    def _cohort_and_threshold(self) -> "Plan":
        ids = [m.silo_id for m in self.cohort]
        if len(set(ids)) != len(ids):
            raise ValueError(f"cohort lists a silo twice: {sorted({i for i in ids if ids.count(i) > 1})}")
        keys = [m.signing_key for m in self.cohort]
        if len(set(keys)) != len(keys):
            raise ValueError("cohort lists one signing key for two silos")
        spec = self.secure_aggregation
        if spec.protocol == "none" or not self.cohort:
            return self
        n = len(self.cohort)
        if n < 2:
            raise ValueError("secure aggregation needs a cohort of at least 2 silos")
        t = self.secagg_threshold
        if not (n // 2 < t <= n):
            raise ValueError(f"secure_aggregation.threshold {t} must be a strict majority of the cohort "
                             f"of {n} ({n // 2 + 1}..{n}; recommended {recommended_threshold(n)})")
        if t < self.min_silos_per_round:
            raise ValueError(
                f"secure_aggregation.threshold {t} is below min_silos_per_round {self.min_silos_per_round}: "
                "a secure sum could close with fewer silos than the round needs, and re-offering that "
                "round would mask the same updates twice")
        if self.min_silos_per_round > n:
            raise ValueError(f"min_silos_per_round {self.min_silos_per_round} exceeds the cohort of {n}")
        most = max(0, 2 * t - n - 1)
        if spec.colluding_silos is not None and spec.colluding_silos > most:
            raise ValueError(
                f"secure_aggregation.colluding_silos {spec.colluding_silos} exceeds what threshold {t} of {n} "
                f"tolerates ({most} = 2t - n - 1): raise the threshold to defend against more colluders")
        self.secagg_graph  # a too-sparse explicit SecAgg+ degree raises GraphTooSparse (a ValueError)
        return self

    @property
    def cohort_ids(self) -> tuple[str, ...]:
        return tuple(sorted(m.silo_id for m in self.cohort))

    @property
    def secagg_threshold(self) -> int:
        """The plan's t over its cohort (explicit, or the recommended floor(2n/3)+1)."""
        spec = self.secure_aggregation
        if spec.threshold is not None:
            return spec.threshold
        return recommended_threshold(len(self.cohort))

    @property
    def secagg_colluders(self) -> int:
        """c: the colluding silos the plan's secure aggregation is built to withstand."""
        spec = self.secure_aggregation
        if spec.colluding_silos is not None:
            return spec.colluding_silos
        return max(0, 2 * self.secagg_threshold - len(self.cohort) - 1)

    @property
    def secagg_graph(self) -> "GraphChoice | None":
        """The masking graph the plan's rounds use: for SecAgg+ the degree (and neighbourhood
        threshold) derived for the cohort, threshold and colluders, or the explicit degree if it
        qualifies; the complete graph for classic SecAgg. None without secure aggregation."""
        spec = self.secure_aggregation
        if spec.protocol == "none" or len(self.cohort) < 2:
            return None
        from healthfed_common.secagg.graph_parameters import GraphRequirement, check_degree, choose_graph

        requirement = GraphRequirement(len(self.cohort), self.secagg_threshold, self.secagg_colluders)
        if spec.protocol == "secagg":
            return check_degree(requirement, len(self.cohort) - 1)
        if spec.neighbours is not None:
            return check_degree(requirement, spec.neighbours)
        return choose_graph(requirement)

    @model_validator(mode="after")
    def _grace_within_deadline(self) -> "Plan":
        if self.straggler_grace_s is not None and self.straggler_grace_s >= self.round_deadline_s:
            raise ValueError(
                f"straggler_grace_s ({self.straggler_grace_s:g}) must be shorter than round_deadline_s "
                f"({self.round_deadline_s:g}); a longer grace never shortens a round"
            )
        return self

    @model_validator(mode="after")
    def _dp_preprocessing_is_public(self) -> "Plan":
        if self.dp is not None and self.preprocessing == "train_statistics":
            raise ValueError(
                "preprocessing train_statistics is not allowed with dp: one record would move every "
                "record's features through the training mean and std, so the clipping bound would no "
                "longer be the sensitivity (use public_bounds, or leave preprocessing out)")
        return self

    @property
    def uses_public_bounds(self) -> bool:
        """Whether the silos' views use only public policy values (bounds, impute): always
        under dp, and for a non-DP plan that asks for it."""
        return self.dp is not None or self.preprocessing == "public_bounds"

    @model_validator(mode="after")
    def _personalization_without_dp(self) -> "Plan":
        if self.personalization is not None and self.dp is not None:
            raise ValueError(
                "personalization is only for plans without dp: the fine-tuning on each silo's training "
                "records would be a release the plan's epsilon does not cover")
        return self

    @model_validator(mode="after")
    def _unique_features(self) -> "Plan":
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"features listed twice: {duplicates}")
        if self.label.name in names:
            raise ValueError(f"label {self.label.name!r} is also listed as a feature")
        return self

    @property
    def input_width(self) -> int:
        return sum(f.width for f in self.features)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def canonical_bytes(self) -> bytes:
        """Canonical JSON of the plan. The fields added after plans were first hashed
        (`algorithm`, `personalization`, `preprocessing`) are left out while they hold their defaults, so a plan
        that does not use them keeps the hash (and approvals, ledger entries, traced-plan cache
        entries) it had before they existed; parsing the bytes back restores the defaults."""
        document = self.model_dump(mode="json")
        document["algorithm"] = self.algorithm.canonical()
        if self.personalization is not None:
            document["personalization"] = self.personalization.canonical()
        for name in _OMITTED_WHEN_DEFAULT:
            if document.get(name) == _DEFAULT_DUMPS[name]:
                del document[name]
        return canonical_json(document)

    @property
    def plan_hash(self) -> str:
        """sha256 over the canonical plan and the HealthFed version that interprets it."""
        return sha256_hex(self.canonical_bytes() + b"\n" + __version__.encode())


_OMITTED_WHEN_DEFAULT = ("algorithm", "personalization", "preprocessing")
_DEFAULT_DUMPS: dict[str, Any] = {"algorithm": AlgorithmSpec().canonical(), "personalization": None,
                                  "preprocessing": None}


def parse_plan(document: bytes | str | dict[str, Any], *, source: str = "plan") -> Plan:
    """Validates a plan document, turning pydantic's errors into one PlanInvalid naming
    each bad field."""
    try:
        if isinstance(document, dict):
            return Plan.model_validate(document)
        return Plan.model_validate_json(document)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in error.errors()
        )
        raise PlanInvalid(f"{source}: {problems}") from None


def plan_summary(plan: Plan) -> dict[str, Any]:
    """What a plan commits its parties to, for the audit logs (a silo's plan decisions, the
    aggregator's plan start): name, purpose, dataset, the cohort it may run with (silo ids and
    signing-key fingerprints) and the ε/δ allowance (None when the plan has no differential
    privacy). One function so both logs describe a plan in the same fields, which the report's
    plan table reads."""
    cohort = [{"silo": m.silo_id, "key_fingerprint": m.fingerprint} for m in plan.cohort]
    return {
        "plan_hash": plan.plan_hash,
        "name": plan.name,
        "purpose": plan.purpose,
        "dataset": plan.dataset,
        "rounds": plan.rounds,
        "cohort": cohort,
        "epsilon": None if plan.dp is None else plan.dp.target_epsilon,
        "delta": None if plan.dp is None else plan.dp.target_delta,
        "secure_aggregation": plan.secure_aggregation.protocol,
    }
