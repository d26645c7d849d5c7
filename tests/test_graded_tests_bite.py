"""Every graded test bites: each is lost by at least one bundled buggy example of its exercise.

A graded test that no buggy submission can lose shows nothing about student code. This file proves,
without grading anything (EXPECTED_FAILURES is read with ast, the contract files are only collected),
that the bundled examples cover every graded test; tests/test_examples.py proves, by grading each
example once, that it loses exactly its EXPECTED_FAILURES. Together they are airtight because here:

  - the graded tests are those pytest itself collects with the `graded` marker (collected in-process,
    not run), and the grader's own plan of them (`grade.planned_tests`, read from the source) agrees;
  - every .py file in exercises/<id>/examples/ is one `grade.discover_examples()` finds (so test_examples grades
    it), exercises with examples are registered, and each registered exercise has examples;
  - every EXPECTED_FAILURES is a literal naming real graded tests of its own exercise, once each;
    correct.py names none and every buggy_*.py at least one.
"""
from __future__ import annotations

import ast

import pytest

from labcheck import grade, paths, report
from labcheck.exercises import EXERCISES, REGISTRY

EXAMPLES = grade.discover_examples()


def planned(exercise: str) -> list[str]:
    """The graded tests of `exercise` as the grader plans them (names of test functions)."""
    return [t["name"] for t in grade.planned_tests(REGISTRY[exercise].contract_tests)]


def examples_of(exercise: str) -> list[grade.Submission]:
    return [s for s in EXAMPLES if s.exercise == exercise]


@pytest.mark.parametrize("exercise", EXERCISES)
def test_planned_graded_tests_are_the_collected_ones(exercise, pytester):
    """The graded tests are what pytest collects with the `graded` marker (the grader's own run, in-process,
    nothing executed), and grade.planned_tests (results.json's list when grading stops early) agrees."""
    contract = REGISTRY[exercise].contract_tests
    items, _ = pytester.inline_genitems(str(contract), "-p", "no:cacheprovider")
    collected = {report.base_name(item.name) for item in items if item.get_closest_marker("graded")}
    names = planned(exercise)
    assert names, f"{exercise}: no graded test in {contract}"
    assert len(names) == len(set(names)), f"{exercise}: a graded test name occurs twice: {names}"
    assert set(names) == collected, (
        f"{exercise}: pytest collects graded tests {sorted(collected)}, grade.planned_tests reads {sorted(names)}")


@pytest.mark.parametrize("exercise", EXERCISES)
def test_every_graded_test_is_lost_by_a_buggy_example(exercise):
    lost_by: dict[str, list[str]] = {name: [] for name in planned(exercise)}
    for example in examples_of(exercise):
        for name in example.expected_failures or ():
            lost_by.setdefault(name, []).append(example.path.name)
    never = [name for name, files in lost_by.items() if not files]
    assert not never, (
        f"{exercise}: no bundled buggy example loses {never}. Add examples/{exercise}/buggy_<mistake>.py, a "
        "realistic student mistake that loses it, with the test in its EXPECTED_FAILURES")


@pytest.mark.parametrize("exercise", EXERCISES)
def test_every_example_file_is_graded(exercise):
    """test_examples grades what discover_examples finds: that must be every file of exercises/<id>/examples/."""
    folder = REGISTRY[exercise].examples_dir
    entries = sorted(p.name for p in folder.iterdir() if p.name != "__pycache__")
    discovered = sorted(s.path.name for s in examples_of(exercise))
    assert entries == discovered, (
        f"examples/{exercise}/ holds {entries}, but only {discovered} are graded as examples "
        "(standalone .py files not starting with '_')")
    assert "correct.py" in discovered, f"examples/{exercise}/ has no correct.py"
    buggy = [name for name in discovered if name != "correct.py"]
    assert buggy and all(name.startswith("buggy_") for name in buggy), (
        f"examples/{exercise}/: besides correct.py every example is a buggy_<mistake>.py, got {buggy}")


def test_every_exercise_folder_is_registered():
    """A folder under exercises/ without its exercise.py would hold examples and tests nobody runs."""
    folders = sorted(p.name for p in paths.exercises_dir().iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == sorted(EXERCISES), f"folders without a registry entry: {sorted(set(folders) - set(EXERCISES))}"


def expected_failures_node(path) -> ast.AST | None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = [node.value for node in tree.body if isinstance(node, ast.Assign)
             and any(isinstance(t, ast.Name) and t.id == "EXPECTED_FAILURES" for t in node.targets)]
    return nodes[0] if len(nodes) == 1 else None


@pytest.mark.parametrize("example", EXAMPLES, ids=[s.name for s in EXAMPLES])
def test_expected_failures_name_real_graded_tests(example):
    source = example.path.read_text(encoding="utf-8")
    assert ast.get_docstring(ast.parse(source)), f"{example.name}: the module docstring must name the mistake"
    node = expected_failures_node(example.path)
    assert isinstance(node, (ast.Tuple, ast.List)) and all(
        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts), (
        f"{example.name}: EXPECTED_FAILURES must be assigned once, a literal tuple of test names")
    names = list(example.expected_failures)
    graded = planned(example.exercise)
    assert len(names) == len(set(names)), f"{example.name}: EXPECTED_FAILURES repeats a name: {names}"
    unknown = [n for n in names if n not in graded]
    assert not unknown, f"{example.name}: EXPECTED_FAILURES names {unknown}, not graded tests of {example.exercise}"
    if example.path.stem == "correct":
        assert names == [], f"{example.name}: a correct submission loses no test"
    else:
        assert names, f"{example.name}: a buggy example must lose at least one graded test"
        assert len(names) < len(graded), f"{example.name}: loses every graded test; that shows nothing precise"
