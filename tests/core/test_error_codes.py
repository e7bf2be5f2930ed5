"""One registry of error codes, checked against the source (Flower's exit-code test is the model).

The source is scanned with `ast` for string constants in the places a code is written:
a class's `code = "..."`, a `code=` / `reason=` keyword, the arguments of the calls that carry
a code (`TaskRefused`, `Refusal`, `Ack`, `Finding`, `Decision`, `_refuse`, `MessageRefused`,
`PlanNotApprovable`, `where.error(..., CODE)`), `getattr(x, "code", DEFAULT)`, assignments to and
comparisons with `code` / `reason`, `return CODE, message` pairs, sets of codes, and texts that
print a code (`"CODE: ..."`, `"refused [CODE]"`). Then:

1. every code used in healthfed_common/, silo_node/, aggregator/, compliance/ and the
   containers' preflight (deploy/healthcheck.py) is an `ErrorCode` member;
2. every member is used somewhere in that source;
3. every member is tested: its string (or `ErrorCode.NAME`, or the name of the error class
   that carries it) appears in a test other than this file;
4. the README's "## Error codes" table is exactly the generated one.

No TensorFlow is imported, except by the one test that drives the silo's runner.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from healthfed_common.error_codes import BEGIN, END, ErrorCode, markdown_table, readme_section

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("healthfed_common", "silo_node", "aggregator", "compliance")
DEPLOY_SOURCES = ("deploy/healthcheck.py",)  # the containers' preflight prints codes too
THIS_FILE = Path(__file__).resolve()

_CODE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")
_PREFIXED = re.compile(r"^([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+): ")
_BRACKETED = re.compile(r"\[([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\]")
_CODE_CALLS = frozenset({"TaskRefused", "Refusal", "Ack", "Finding", "Decision", "_refuse", "MessageRefused",
                         "PlanNotApprovable", "PreflightFailed", "error"})
_CODE_NAMES = frozenset({"code", "reason"})


def _sources(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def _is_code(node: ast.AST) -> bool:
    return (isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) >= 3
            and _CODE.match(node.value) is not None)


def _codes_within(node: ast.AST) -> Iterator[str]:
    for sub in ast.walk(node):
        if _is_code(sub):
            assert isinstance(sub, ast.Constant)
            yield sub.value


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def codes_in(tree: ast.AST) -> Iterator[str]:
    """Every code written in one module, by position (see the module docstring)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            called = _name(node.func)
            if called in _CODE_CALLS:
                for argument in node.args:
                    yield from _codes_within(argument)
            if (called == "getattr" and len(node.args) == 3 and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value in _CODE_NAMES):
                yield from _codes_within(node.args[2])
            for keyword in node.keywords:
                if keyword.arg in _CODE_NAMES:
                    yield from _codes_within(keyword.value)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if node.value is not None and any(_name(t) in _CODE_NAMES for t in targets):
                yield from _codes_within(node.value)
        elif isinstance(node, ast.Compare) and _name(node.left) in _CODE_NAMES:
            for comparator in node.comparators:
                yield from _codes_within(comparator)
        elif (isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple) and node.value.elts
              and _is_code(node.value.elts[0])):
            yield from _codes_within(node.value.elts[0])
        elif isinstance(node, ast.Set) and node.elts and all(_is_code(e) for e in node.elts):
            yield from _codes_within(node)
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id == "ErrorCode"):
            yield node.attr
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if match := _PREFIXED.match(node.value):
                yield match.group(1)
            yield from (m.group(1) for m in _BRACKETED.finditer(node.value))


def _parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def used_codes() -> dict[str, set[str]]:
    """code -> the source files (relative) that use it."""
    used: dict[str, set[str]] = defaultdict(set)
    for path in [*_sources(*PACKAGES), *(ROOT / name for name in DEPLOY_SOURCES)]:
        if path.name == "error_codes.py" and path.parent.name == "healthfed_common":
            continue  # the registry itself uses nothing
        for code in codes_in(_parse(path)):
            used[code].add(str(path.relative_to(ROOT)))
    return used


def error_classes() -> dict[str, tuple[str, list[str], str | None]]:
    """class name -> (module file, base names, own `code`) for every class in the packages."""
    classes: dict[str, tuple[str, list[str], str | None]] = {}
    for path in _sources(*PACKAGES):
        for node in ast.walk(_parse(path)):
            if isinstance(node, ast.ClassDef):
                code = None
                for statement in node.body:
                    if (isinstance(statement, ast.Assign) and any(_name(t) == "code" for t in statement.targets)
                            and isinstance(statement.value, ast.Constant)):
                        code = statement.value.value
                bases = [name for name in map(_name, node.bases) if name]
                classes[node.name] = (str(path.relative_to(ROOT)), bases, code)
    return classes


def test_every_code_used_in_the_source_is_registered() -> None:
    unregistered = {code: sorted(files) for code, files in used_codes().items() if code not in ErrorCode.__members__}
    assert not unregistered, f"add these codes to healthfed_common/error_codes.py: {unregistered}"


def test_every_registered_code_is_used_in_the_source() -> None:
    unused = sorted(set(ErrorCode.__members__) - set(used_codes()))
    assert not unused, f"registered but never raised or sent: {unused}"


def test_every_registered_code_is_tested() -> None:
    tests = "\n".join(p.read_text(encoding="utf-8") for p in _sources("tests") if p.resolve() != THIS_FILE)
    carriers: dict[str, list[str]] = defaultdict(list)
    for name, (_, _, code) in error_classes().items():
        if code:
            carriers[code].append(name)
    words = set(re.findall(r"\w+", tests))
    untested = sorted(code for code in ErrorCode.__members__ if not words & {code, *carriers[code]})
    assert not untested, f"codes no test names (test each, by its string or its error class): {untested}"


def test_readme_error_code_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n## Error codes\n" in readme
    start, end = readme.find(BEGIN), readme.find(END)
    assert 0 <= start < end, "README.md lacks the generated error-code table's markers"
    assert readme[start:end + len(END)] == readme_section(), (
        "README's error-code table differs from the enum: python -m healthfed_common.error_codes --write README.md")


def test_every_code_has_a_one_line_meaning_and_action() -> None:
    for name, member in ErrorCode.__members__.items():
        assert member.value == name and _CODE.match(name), name
        for text in (member.meaning, member.action):
            assert text.strip() and "\n" not in text and text.endswith("."), (name, text)
    assert markdown_table().count("\n| `") == len(ErrorCode)


def test_a_library_error_in_the_silo_never_crosses_the_wire(tmp_path: Path) -> None:
    """A library exception raised while the silo builds its training view (here one that even
    carries a `code` attribute and a patient's name in its text) is answered with the
    registered SILO_INTERNAL_ERROR and a fixed message: neither its code nor its text leaves."""
    from silo_node.runner import SiloRunner, TaskRefused

    class LibraryError(LookupError):
        code = "E_LIBRARY"

    class Registry:
        def training_view(self, dataset: str, plan: object, subset: str) -> object:
            raise LibraryError("row 17: patient 'Jane Roe', MRN 004711 has no value")

    class Services:
        registry = Registry()

    class Plan:
        dataset = "cardiology"

    runner = SiloRunner.__new__(SiloRunner)
    runner._services = Services()  # type: ignore[assignment]
    with pytest.raises(TaskRefused) as refused:
        runner._view(Plan(), "train")  # type: ignore[arg-type]
    assert refused.value.code == ErrorCode.SILO_INTERNAL_ERROR
    assert refused.value.code in ErrorCode.__members__
    assert "Jane" not in refused.value.message and "004711" not in refused.value.message
