"""Plans: canonical hashing, strict validation, a closed model registry."""

from __future__ import annotations

import json

import pytest

from healthfed_common.errors import PlanInvalid, UnknownModel
from healthfed_common.models import model_entry
from healthfed_common.plan import parse_plan
from pipelines.demo import demo_plan


def test_plan_hash_ignores_key_order_and_whitespace() -> None:
    document = demo_plan()
    shuffled = json.dumps(dict(reversed(list(document.items()))), indent=4)
    assert parse_plan(document).plan_hash == parse_plan(shuffled).plan_hash


def test_plan_hash_changes_with_any_setting() -> None:
    changed = demo_plan() | {"local_epochs": 3}
    assert parse_plan(demo_plan()).plan_hash != parse_plan(changed).plan_hash


def test_unknown_keys_are_refused_with_their_location() -> None:
    with pytest.raises(PlanInvalid, match="model.path"):
        parse_plan(demo_plan() | {"model": {"id": "mlp", "path": "evil.module.Class"}})


def test_one_hot_feature_needs_categories() -> None:
    bad = demo_plan()
    bad["features"] = [{"name": "sex", "transform": "one_hot"}]
    with pytest.raises(PlanInvalid, match="categories"):
        parse_plan(bad)


def test_label_cannot_also_be_a_feature() -> None:
    bad = demo_plan()
    bad["features"] = bad["features"] + [{"name": bad["label"]["name"]}]
    with pytest.raises(PlanInvalid, match="also listed"):
        parse_plan(bad)


def test_models_come_only_from_the_registry() -> None:
    assert model_entry("mlp").kind == "tabular"
    with pytest.raises(UnknownModel, match="not in this build's registry"):
        model_entry("keras.applications.ResNet50")
