"""The model card exported beside the SavedModel, and the preprocessing it prescribes.

A SavedModel alone is a function of `plan.input_width` numbers: nobody can apply it without
knowing which column is which and how each hospital turned its records into those numbers.
The card says it (plan, cohort, rounds, declared privacy spending, held-out evaluation, the
input columns in order and each feature's preprocessing), and `preprocess` applies exactly
that to a table, so `aggregator predict` scores a CSV as the silos' training view did.

The preprocessing mirrors `silo_node.datasets.view` (which this package may not import): the
column names (`cp=2`), the text form categories are compared in (whole numbers without a
fraction), the training SAMPLE std (ddof=1), a constant column only centred, a missing number
replaced by the training mean (no DP) or the policy's public `impute` (DP), and under DP a
`standardize` feature clamped to the hospital's public `bounds` and mapped onto [-1, 1]. The
aggregator never sees the statistics or the bounds (they are each hospital's own), so the card
names what is needed and `preprocess` refuses, with a code, when it is not given.

No TensorFlow here: the card is built and read in about a millisecond.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from aggregator.errors import AggregatorError
from healthfed_common.atomic_files import write_atomically
from healthfed_common.plan import FeatureSpec, Plan

CARD_FORMAT = 1
CARD_FILE = "model-card.json"
CARD_MARKDOWN = "MODEL_CARD.md"
SAVED_MODEL_DIR = "saved_model"
BASELINE_UNKNOWN = ("baseline needs the positive rate: the silos release loss, accuracy and AUC, not how many "
                    "held-out records are positive, so the all-negative accuracy (1 - positive rate) cannot be "
                    "computed here; compare the AUC with 0.5, or each hospital computes 1 - its positive rate")


class PredictError(AggregatorError):
    """Scoring a table with an exported model failed on the user's input (never a traceback)."""


class ModelCardInvalid(PredictError, ValueError):
    """The model folder has no readable model card of a known format, or the model is not tabular."""

    code = "PREDICT_CARD_INVALID"


class PredictColumnMissing(PredictError, LookupError):
    """The table lacks a column the model's features need."""

    code = "PREDICT_COLUMN_MISSING"


class PredictNeedsTrainStats(PredictError, ValueError):
    """A non-DP model's preprocessing needs the hospital's own training statistics."""

    code = "PREDICT_NEEDS_TRAIN_STATS"


class PredictNeedsBounds(PredictError, ValueError):
    """A DP model's `standardize` feature needs the hospital's public bounds (its dataset policy)."""

    code = "PREDICT_NEEDS_BOUNDS"


# -- building the card -------------------------------------------------------------------


def input_columns(plan: Plan) -> list[str]:
    """The model's input columns in order, named as the silo's training view names them."""
    names: list[str] = []
    for spec in plan.features:
        names += [f"{spec.name}={c}" for c in spec.categories] if spec.transform == "one_hot" and spec.categories \
            else [spec.name]
    return names


def preprocessing_text(spec: FeatureSpec, public_scaling: bool) -> str:
    """What a hospital must do to one feature's values, in words."""
    missing_public = "a missing value becomes your dataset policy's public `impute` (default: the centre of `bounds`, else 0)"
    missing = "a missing value becomes the mean of your own training records"
    if spec.transform == "one_hot":
        assert spec.categories is not None
        text = (f"one column per category {list(spec.categories)} (1 where the value equals it, compared as text with "
                "whole numbers written without a fraction; any other or missing value gives all zeros)")
        if spec.standardize_indicators:
            text += ("; each indicator column then centred and scaled with the mean and sample std (ddof=1) of your "
                     "own training records (a constant column only centred)")
        return text
    base = "the value's year (a 4-digit year or a date)" if spec.transform == "year" else "the number"
    if spec.transform == "standardize":
        if public_scaling:
            return (f"{base} clamped to your dataset policy's public `bounds` [low, high] and mapped onto [-1, 1] as "
                    f"(x - (low + high)/2) / ((high - low)/2); {missing_public}")
        return (f"{base} centred and scaled with the mean and sample std (ddof=1) of your own training records "
                f"(a constant column only centred); {missing}. The aggregator never sees these statistics: "
                "use your own (`aggregator predict --stats-from-train`)")
    return f"{base} as is; {missing_public if public_scaling else missing}"


def features_section(plan: Plan) -> list[dict[str, Any]]:
    public_scaling = plan.uses_public_bounds  # DP plans and non-DP plans with public_bounds preprocessing
    start, rows = 0, []
    for spec in plan.features:
        columns = [f"{spec.name}={c}" for c in spec.categories] if spec.transform == "one_hot" and spec.categories \
            else [spec.name]
        rows.append({
            "name": spec.name, "transform": spec.transform,
            "categories": list(spec.categories) if spec.categories else None,
            "standardize_indicators": spec.standardize_indicators,
            "width": spec.width, "first_column": start, "columns": columns,
            "statistics": ("public bounds from each hospital's dataset policy"
                           if public_scaling and spec.transform == "standardize"
                           else "each hospital's own training records" if not public_scaling and (
                               spec.transform != "one_hot" or spec.standardize_indicators)
                           else "none"),
            "preprocessing": preprocessing_text(spec, public_scaling),
        })
        start += spec.width
    return rows


def evaluation_section(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The held-out evaluation with the all-negative baseline beside accuracy where the silos'
    released metrics allow it (a `positive_rate` from every evaluating silo); otherwise the
    baseline is stated as unknown, never guessed."""
    per_silo: dict[str, dict[str, Any]] = {s: dict(m) for s, m in (evaluation.get("per_silo") or {}).items()}
    aggregate: dict[str, Any] = dict(evaluation.get("aggregate") or {})
    total = sum(float(m.get("num_examples", 0)) for m in per_silo.values())
    section: dict[str, Any] = {"aggregate": aggregate, "per_silo": per_silo}
    if per_silo and total > 0 and all("positive_rate" in m for m in per_silo.values()):
        rate = sum(float(m["positive_rate"]) * float(m["num_examples"]) for m in per_silo.values()) / total
        section["positive_rate"] = rate
        section["all_negative_baseline_accuracy"] = 1.0 - rate
        section["baseline_note"] = "all-negative accuracy = 1 - the held-out positive rate the silos released"
    else:
        section["all_negative_baseline_accuracy"] = None
        section["baseline_note"] = BASELINE_UNKNOWN
    if evaluation.get("personalization"):
        section["personalization"] = dict(evaluation["personalization"])
    return section


def build_card(plan: Plan, *, rounds_completed: int, evaluation: Mapping[str, Any],
               dp_declarations: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """The card as a JSON-ready dict. `dp_declarations`: what each silo DECLARED of its own
    ledger (the silo's ledger is authoritative; the aggregator cannot verify it)."""
    tabular = plan.model.image_size is None
    return {
        "card_format": CARD_FORMAT,
        "plan": {"name": plan.name, "hash": plan.plan_hash, "purpose": plan.purpose, "description": plan.description,
                 "dataset": plan.dataset, "model": plan.model.model_dump(mode="json"), "rounds_planned": plan.rounds},
        "saved_model": SAVED_MODEL_DIR,
        "rounds_completed": rounds_completed,
        "cohort": [{"silo_id": m.silo_id, "signing_key_fingerprint": m.fingerprint}
                   for m in sorted(plan.cohort, key=lambda m: m.silo_id)],
        "privacy": ({"differential_privacy": True, "target_epsilon": plan.dp.target_epsilon,
                     "target_delta": plan.dp.target_delta, "accountant": plan.dp.accountant,
                     "declared_per_hospital": {s: dict(d) for s, d in sorted(dp_declarations.items())},
                     "note": "declared by each hospital from its own privacy ledger (authoritative there)"}
                    if plan.dp is not None else {"differential_privacy": False}),
        "evaluation": evaluation_section(evaluation),
        "input": {"kind": "tabular" if tabular else "image",
                  "width": plan.input_width if tabular else None,
                  "image_size": plan.model.image_size,
                  "columns": input_columns(plan) if tabular else [],
                  "preprocessing": ("public_bounds" if plan.uses_public_bounds else "train_statistics")
                  if tabular else None},
        "features": features_section(plan) if tabular else [],
        "label": {"name": plan.label.name, "positive_values": list(plan.label.positive_values),
                  "output": "probability that the label is one of positive_values"},
    }


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def card_markdown(card: Mapping[str, Any]) -> str:
    """The short human version of the card."""
    plan, evaluation, privacy = card["plan"], card["evaluation"], card["privacy"]
    lines = [f"# Model card: {plan['name']}", "", f"- plan hash: `{plan['hash']}`",
             f"- purpose: {plan['purpose'] or '(not stated in the plan)'}",
             f"- dataset: {plan['dataset']}; model: {plan['model']['id']}",
             f"- rounds completed: {card['rounds_completed']} of {plan['rounds_planned']}",
             f"- predicts: {card['label']['output']} (label `{card['label']['name']}`, positive "
             f"{card['label']['positive_values']})", "", "## Cohort", ""]
    lines += [f"- {m['silo_id']} (signing key {m['signing_key_fingerprint']})" for m in card["cohort"]] or \
        ["- (no fixed cohort in the plan)"]
    lines += ["", "## Privacy", ""]
    if privacy["differential_privacy"]:
        lines.append(f"Differentially private: target ε {privacy['target_epsilon']:g}, δ {privacy['target_delta']:g} "
                     f"({privacy['accountant']}). Declared by each hospital:")
        lines += [f"- {silo}: " + ", ".join(f"{k} {_number(v)}" for k, v in sorted(d.items()))
                  for silo, d in privacy["declared_per_hospital"].items()] or ["- (no declarations received)"]
    else:
        lines.append("Not differentially private.")
    lines += ["", "## Held-out evaluation", ""]
    aggregate = evaluation["aggregate"]
    lines += [f"- {k}: {_number(v)}" for k, v in sorted(aggregate.items())] or ["- (no evaluation)"]
    baseline = evaluation["all_negative_baseline_accuracy"]
    lines.append(f"- all-negative baseline accuracy: {_number(baseline)}" if baseline is not None
                 else f"- all-negative baseline accuracy: unknown ({evaluation['baseline_note']})")
    personal = evaluation.get("personalization")
    if personal:
        lines += ["", *_personalization_table(personal)]
    lines += ["", "## Input", ""]
    if card["input"]["kind"] != "tabular":
        lines.append(f"Images of {card['input']['image_size']}x{card['input']['image_size']}, one channel, in [0, 1].")
    else:
        lines += [f"{card['input']['width']} columns in this order: " + ", ".join(f"`{c}`" for c in card["input"]["columns"]),
                  "", "| feature | transform | columns | preprocessing each hospital applies |", "|---|---|---|---|"]
        lines += [f"| {f['name']} | {f['transform']} | {f['width']} | {f['preprocessing'].replace('|', '/')} |"
                  for f in card["features"]]
        lines += ["", "Score a CSV: `aggregator predict --model THIS_FOLDER --csv FILE --out scores.csv` "
                  + ("`--policy YOUR_DATASET_POLICY.yaml`" if uses_public_bounds(card)
                     else "`--stats-from-train YOUR_TRAINING_RECORDS.csv`")]
    return "\n".join(lines) + "\n"


def write_card(directory: Path, card: Mapping[str, Any]) -> Path:
    """model-card.json and MODEL_CARD.md in `directory`, each replaced atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    # 0600 as before the shared helper (the card was written with mkstemp): the coordinator decides whom to give it
    write_atomically(directory / CARD_FILE, json.dumps(card, indent=2, sort_keys=True, default=float) + "\n",
                     mode=0o600)
    write_atomically(directory / CARD_MARKDOWN, card_markdown(card), mode=0o600)
    return directory / CARD_FILE


def read_card(model_dir: Path) -> dict[str, Any]:
    """The card of an exported model folder (OUT/model), refused with a code when absent,
    unreadable, of an unknown format, or not for a tabular model."""
    path = model_dir / CARD_FILE
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelCardInvalid(f"{model_dir} has no {CARD_FILE}: give the folder `aggregator run` exported "
                               "(OUT/model)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelCardInvalid(f"{path} cannot be read as a model card ({type(error).__name__})") from None
    if not isinstance(card, dict) or card.get("card_format") != CARD_FORMAT or not isinstance(card.get("features"), list):
        raise ModelCardInvalid(f"{path} is not a model card of format {CARD_FORMAT}")
    if card.get("input", {}).get("kind") != "tabular":
        raise ModelCardInvalid(f"{path}: this model takes images; `aggregator predict` scores tables only")
    return card


# -- applying the card's preprocessing -----------------------------------------------------


@dataclass(frozen=True)
class PublicBounds:
    """One feature's public values from a hospital's dataset policy."""

    bounds: tuple[float, float] | None
    impute: float | None

    @property
    def public_impute(self) -> float:
        if self.impute is not None:
            return self.impute
        return 0.5 * (self.bounds[0] + self.bounds[1]) if self.bounds is not None else 0.0


def canonical_text(values: pd.Series[Any]) -> pd.Series[Any]:
    """Cells as comparable text, as the silo compares categories: whole numbers without a
    fraction ('1.0' -> '1'), leading zeros kept."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.astype("float64")
        return numbers.map(
            lambda v: None if pd.isna(v) else (str(int(v)) if np.isfinite(v) and v == round(v) else repr(float(v)))
        ).astype("string")
    text = values.astype("string").str.strip()
    return text.str.replace(r"^([-+]?\d+)\.0+$", r"\1", regex=True)


def _numbers(values: pd.Series[Any], transform: str) -> NDArray[Any]:
    if transform == "year":
        text = values.astype("string")
        plain = pd.to_numeric(text.where(text.str.fullmatch(r"\d{4}").fillna(False)), errors="coerce")
        dated = pd.to_datetime(text.where(plain.isna()), errors="coerce", format="mixed").dt.year
        return plain.fillna(dated).astype("float64").to_numpy(dtype=np.float64)
    return pd.to_numeric(values, errors="coerce").astype("float64").to_numpy(dtype=np.float64)


def _indicators(values: pd.Series[Any], categories: list[str]) -> NDArray[Any]:
    text = canonical_text(values)
    return np.stack([(text == c).fillna(False).to_numpy(dtype=np.float64) for c in categories], axis=1)


def _centred(array: NDArray[Any], reference: NDArray[Any]) -> NDArray[Any]:
    """(x - mean) / sample std of `reference` (ddof=1); a constant reference only centres."""
    mean = float(reference.mean()) if reference.size else 0.0
    std = float(reference.std(ddof=1)) if reference.size > 1 else 0.0
    return (array - mean) / (std if std > 0 else 1.0)


def _require(frame: pd.DataFrame, name: str, what: str) -> pd.Series[Any]:
    if name not in frame.columns:
        raise PredictColumnMissing(f"{what} has no column {name!r}, which the model's feature {name!r} needs "
                                   f"(columns present: {sorted(map(str, frame.columns))[:20]})")
    return frame[name]


def uses_public_bounds(card: Mapping[str, Any]) -> bool:
    """Whether the model's inputs were scaled with public bounds (every DP model, and a non-DP
    model whose plan asked for them); cards written before the field existed say it by DP."""
    stated = card.get("input", {}).get("preprocessing")
    return stated == "public_bounds" if stated is not None else bool(card["privacy"]["differential_privacy"])


def preprocess(card: Mapping[str, Any], frame: pd.DataFrame, *, source: str = "the CSV",
               train: pd.DataFrame | None = None, train_source: str = "the training CSV",
               public: Mapping[str, PublicBounds] | None = None) -> NDArray[Any]:
    """float32 [rows, width] in the card's column order. Non-DP: statistics from `train`
    (the hospital's own training records; PREDICT_NEEDS_TRAIN_STATS when needed and absent).
    DP, or a plan with public_bounds preprocessing: `public` bounds/impute from the hospital's
    dataset policy (PREDICT_NEEDS_BOUNDS when a `standardize` feature has none)."""
    public_scaling = uses_public_bounds(card)
    blocks: list[NDArray[Any]] = []
    for feature in card["features"]:
        name, transform = str(feature["name"]), str(feature["transform"])
        values = _require(frame, name, source)
        if transform == "one_hot":
            block = _indicators(values, list(feature["categories"]))
            if feature.get("standardize_indicators"):
                if train is None:
                    raise PredictNeedsTrainStats(_needs_train(name, "standardised indicator columns"))
                reference = _indicators(_require(train, name, train_source), list(feature["categories"]))
                block = np.stack([_centred(column, ref) for column, ref in zip(block.T, reference.T)], axis=1)
            blocks.append(block)
            continue
        array = _numbers(values, transform)
        if public_scaling:
            given = (public or {}).get(name)
            if transform == "standardize" and (given is None or given.bounds is None):
                raise PredictNeedsBounds(f"feature {name!r} is scaled with public bounds: it needs the public `bounds` "
                                         "your dataset policy declares for it (give --policy YOUR_POLICY.yaml)")
            array = np.where(np.isnan(array), given.public_impute if given is not None else 0.0, array)
            if transform == "standardize":
                assert given is not None and given.bounds is not None
                low, high = given.bounds
                array = (np.clip(array, low, high) - 0.5 * (low + high)) / (0.5 * (high - low))
        else:
            needs = transform == "standardize" or bool(np.isnan(array).any())
            if needs and train is None:
                raise PredictNeedsTrainStats(_needs_train(name, "standardisation" if transform == "standardize"
                                                          else "the training mean for missing values"))
            if train is not None:
                reference = _numbers(_require(train, name, train_source), transform)
                reference = reference[~np.isnan(reference)]
                mean = float(reference.mean()) if reference.size else 0.0
                array = np.where(np.isnan(array), mean, array)
                if transform == "standardize":
                    array = _centred(array, reference)
        blocks.append(array.reshape(-1, 1))
    features = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(frame), 0))
    return np.ascontiguousarray(features, dtype=np.float32)


def _needs_train(name: str, what: str) -> str:
    return (f"feature {name!r} needs {what} from your own training records, which the aggregator never sees: "
            "give --stats-from-train YOUR_TRAINING_RECORDS.csv (the records this hospital trained on)")


def public_bounds_from_policy(document: object) -> dict[str, PublicBounds]:
    """`bounds`/`impute` per feature from a dataset policy document (parsed YAML)."""
    features = document.get("features") if isinstance(document, dict) else None
    if not isinstance(features, dict):
        raise PredictNeedsBounds("the dataset policy has no `features:` mapping to take public bounds from")
    result: dict[str, PublicBounds] = {}
    for name, spec in features.items():
        spec = spec if isinstance(spec, dict) else {}
        raw, impute = spec.get("bounds"), spec.get("impute")
        bounds = None
        if isinstance(raw, list) and len(raw) == 2 and all(isinstance(v, (int, float)) for v in raw) and raw[0] < raw[1]:
            bounds = (float(raw[0]), float(raw[1]))
        result[str(name)] = PublicBounds(bounds, float(impute) if isinstance(impute, (int, float)) else None)
    return result


def _personalization_table(personal: dict[str, Any]) -> list[str]:
    """Each hospital's global-model metrics beside its fine-tuned copy's; under a local choice
    of epochs, also the count each hospital chose (released with its metrics)."""
    choices = personal.get("local_epochs_choices")
    how = (f"for the number of epochs it chose from {list(choices)} on a held-out part of its own training records "
           "(0 = kept the global model)" if choices is not None else f"for {personal['local_epochs']} epoch(s)")
    chosen_column = choices is not None
    lines = [f"Per hospital, the global model beside its own copy fine-tuned locally {how} "
             "(the fine-tuned models stayed in the hospitals):", "",
             "| hospital | held-out records | global accuracy | personalised accuracy | global AUC | personalised AUC |"
             + (" epochs chosen |" if chosen_column else ""),
             "|---|---|---|---|---|---|" + ("---|" if chosen_column else "")]
    for silo, row in personal["per_silo"].items():
        tuned = row["personalized"]
        chosen = tuned.get("fine_tuning_epochs")
        lines.append(f"| {silo} | {row['num_examples']} | {_number(row['global'].get('accuracy'))} | "
                     f"{_number(tuned.get('accuracy'))} | {_number(row['global'].get('auc'))} | "
                     f"{_number(tuned.get('auc'))} |"
                     + (f" {'?' if chosen is None else int(chosen)} |" if chosen_column else ""))
    return lines
