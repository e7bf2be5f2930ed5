"""One root error per package, all under healthfed_common.errors.HealthFedError.

Read from the source with `ast` (no TensorFlow): every exception class defined in
healthfed_common/, silo_node/, aggregator/ or compliance/ descends from its package's root and
from HealthFedError, keeps a built-in beside it where it had one, and a class's own `code` is a
registered ErrorCode. The roots' codes are the fallbacks printed when nothing more precise is
known; they are pinned here because monitoring and logs key on them."""

from __future__ import annotations

import builtins

from healthfed_common.error_codes import ErrorCode
from tests.core.test_error_codes import error_classes

PACKAGE_ROOTS = {
    "healthfed_common": "HealthFedError",
    "silo_node": "SiloNodeError",
    "aggregator": "AggregatorError",
    "compliance": "ComplianceError",
}


def test_one_root_error_per_package_under_healthfed_error() -> None:
    """Every exception class defined in a package descends from that package's root, and every
    root from HealthFedError; a leaf's own `code` is a registered code."""
    classes = error_classes()
    builtin_errors = {name for name in dir(builtins)
                      if isinstance(getattr(builtins, name), type) and issubclass(getattr(builtins, name), BaseException)}

    def ancestors(name: str) -> set[str]:
        seen: set[str] = set()
        stack = [name]
        while stack:
            current = stack.pop()
            for base in classes.get(current, ("", [], None))[1]:
                if base not in seen:
                    seen.add(base)
                    stack.append(base)
        return seen

    problems = []
    for name, (module, _, code) in classes.items():
        lineage = ancestors(name)
        if not lineage & builtin_errors:
            continue  # not an exception
        if name.startswith("_") and code is None:
            continue  # a private control-flow signal that never leaves its module
        package = module.split("/")[0]
        root = PACKAGE_ROOTS[package]
        if name != root and root not in lineage:
            problems.append(f"{module}: {name} does not descend from {root}")
        if name != "HealthFedError" and "HealthFedError" not in lineage:
            problems.append(f"{module}: {name} does not descend from HealthFedError")
        if code is not None and code not in ErrorCode.__members__:
            problems.append(f"{module}: {name}.code {code!r} is not an ErrorCode")
    assert not problems, "\n".join(problems)
    for package, root in PACKAGE_ROOTS.items():
        assert classes[root][0].startswith(package + "/"), root


ROOT_CODES = {
    "HealthFedError": "HEALTHFED_ERROR",
    "SiloNodeError": "SILO_NODE_ERROR",
    "AggregatorError": "AGGREGATOR_ERROR",
    "ComplianceError": "COMPLIANCE_ERROR",
    # sub-roots inside a package: one per subsystem, each with its fallback code
    "DataLayerError": "DATA_LAYER_ERROR",
    "PrivacyLedgerError": "PRIVACY_LEDGER_ERROR",
    "EnrolmentError": "ENROLMENT_ERROR",
    "EnrolmentRefused": "ENROLMENT_REFUSED",
    "InstanceRejected": "INSTANCE_REJECTED",
    "DPError": "DP_ERROR",
    "SecAggError": "SECAGG_ERROR",
    "AtnaError": "ATNA_ERROR",
}


def test_roots_carry_their_fallback_codes() -> None:
    classes = error_classes()
    for name, code in ROOT_CODES.items():
        if name == "AtnaError" and name not in classes:
            continue  # compliance/atna.py not in this checkout
        assert classes[name][2] == code, name
        assert code in ErrorCode.__members__


def test_the_package_roots_are_importable_and_nested() -> None:
    from aggregator.errors import AggregatorError
    from compliance.errors import ComplianceError, LogCorrupt
    from healthfed_common.errors import HealthFedError
    from silo_node.datasets.errors import DataLayerError, FeatureNotAllowed
    from silo_node.errors import SiloNodeError
    from silo_node.privacy_ledger import BudgetExceeded

    for root in (AggregatorError, ComplianceError, SiloNodeError):
        assert root.__bases__ == (HealthFedError,)
    assert issubclass(DataLayerError, SiloNodeError)
    # leaves keep their built-in, so code that does not know HealthFed still catches them
    assert issubclass(FeatureNotAllowed, PermissionError) and issubclass(FeatureNotAllowed, SiloNodeError)
    assert issubclass(BudgetExceeded, PermissionError) and issubclass(BudgetExceeded, SiloNodeError)
    assert issubclass(LogCorrupt, ValueError) and issubclass(LogCorrupt, ComplianceError)
