"""`aggregator predict`: score a CSV with an exported model, preprocessed as its card says."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

EPILOG = "Exit codes: 0 ok, 1 refused (coded message on stderr), 2 usage error."


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="score a CSV with a model `aggregator run` exported",
        description="Reads the model card beside the SavedModel (OUT/model/model-card.json), turns the CSV's "
        "columns into the model's inputs exactly as the hospitals' training views did (one-hot by the card's "
        "categories; standardisation as the card prescribes) and writes one probability per row. A model "
        "trained without DP was by default standardised with each hospital's own training statistics, which "
        "the aggregator never saw: give --stats-from-train. A DP model's standardised features (and those of a "
        "non-DP model whose plan asked for `preprocessing: public_bounds`; the card says which) are clamped "
        "to the public bounds of the hospital's dataset policy: give --policy.",
        epilog=EPILOG,
    )
    parser.add_argument("--model", type=Path, required=True, help="the exported model folder (OUT/model)")
    parser.add_argument("--csv", type=Path, required=True, help="records to score (one row per record)")
    parser.add_argument("--out", type=Path, required=True, help="CSV to write: one column `probability`")
    parser.add_argument("--stats-from-train", type=Path, default=None, metavar="FILE",
                        help="CSV of this hospital's own training records; their mean and sample std standardise "
                        "(models with train_statistics preprocessing: non-DP by default)")
    parser.add_argument("--policy", type=Path, default=None, metavar="FILE",
                        help="this hospital's dataset policy (YAML): public bounds and impute values (DP models, and "
                        "non-DP models with public_bounds preprocessing)")
    parser.set_defaults(func=run)


def _refuse(code: str, message: str) -> int:
    print(f"aggregator predict: refused [{code}]: {message}", file=sys.stderr)
    return 1


def _read_csv(path: Path, what: str) -> Any:
    """The table, or None after a coded refusal was printed."""
    import pandas as pd

    try:
        # sep=None sniffs `,` `;` tab `|` (exports from European systems use `;`)
        return pd.read_csv(path, sep=None, engine="python", na_values=["?"], encoding_errors="strict")
    except FileNotFoundError:
        _refuse("MALFORMED_INPUT", f"{what} {path} does not exist")
    except IsADirectoryError:
        _refuse("MALFORMED_NOT_A_FILE", f"{what} {path} is a folder; give a CSV file")
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as error:
        _refuse("MALFORMED_INPUT", f"{what} {path} cannot be read as CSV ({type(error).__name__})")
    return None


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd
    import yaml

    from aggregator.model_card import (
        SAVED_MODEL_DIR, PredictError, public_bounds_from_policy, preprocess, read_card,
    )

    try:
        card = read_card(args.model)
    except PredictError as error:
        return _refuse(error.code, str(error))
    frame = _read_csv(args.csv, "--csv")
    if frame is None:
        return 1
    train = None
    if args.stats_from_train is not None:
        train = _read_csv(args.stats_from_train, "--stats-from-train")
        if train is None:
            return 1
    public = None
    if args.policy is not None:
        try:
            document = yaml.safe_load(args.policy.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            return _refuse("POLICY_UNREADABLE", f"--policy {args.policy} cannot be read ({type(error).__name__})")
        try:
            public = public_bounds_from_policy(document)
        except PredictError as error:
            return _refuse(error.code, f"--policy {args.policy}: {error}")
    try:
        features = preprocess(card, frame, source=f"--csv {args.csv}", train=train,
                              train_source=f"--stats-from-train {args.stats_from_train}", public=public)
    except PredictError as error:
        return _refuse(error.code, str(error))

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        model = tf.keras.models.load_model(args.model / card["saved_model"] if "saved_model" in card
                                           else args.model / SAVED_MODEL_DIR, compile=False)
    except (OSError, ValueError) as error:
        return _refuse("PREDICT_CARD_INVALID", f"the SavedModel in {args.model} cannot be loaded "
                       f"({type(error).__name__})")
    width = int(card["input"]["width"])
    if features.shape[1] != width:  # a card edited by hand; the model would fail on the shape
        return _refuse("PREDICT_CARD_INVALID", f"the card's features make {features.shape[1]} columns, the model "
                       f"takes {width}")
    scores = np.asarray(model.predict(features, batch_size=1024, verbose=0), dtype=np.float64).reshape(-1)
    temporary = None
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=args.out.parent, prefix=f".{args.out.name}.")
        os.close(handle)
        pd.DataFrame({"probability": scores}).to_csv(temporary, index=False, float_format="%.9g")
        os.replace(temporary, args.out)
    except OSError as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        return _refuse("PATH_UNUSABLE", f"--out {args.out} cannot be written ({type(error).__name__})")
    print(f"scored {len(scores)} rows with plan {card['plan']['name']} ({card['plan']['hash'][:12]}) → {args.out}")
    return 0
