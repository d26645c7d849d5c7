"""The student's side: contracts, starters, `labcheck handout` and `labcheck check` (labcheck.handout,
labcheck.selfcheck, labcheck.starter, labcheck.contracts, labcheck.answers).

The sgd handout is built once for the module (the reference answers the public tests, then passes
them again from the answers alone: ~16 s on 2 cores) and checked as a student would check it: the
starter, and bundled examples whose mistakes the public tests catch or the hidden tests keep.
"""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labcheck import answers, cli, contracts, grade, handout, selfcheck, starter
from labcheck.exercises import EXERCISES, REGISTRY, get

EXAMPLES = REGISTRY["sgd"].examples_dir


def reference_lines(exercise: str) -> set[str]:
    """Every statement line of the reference's contract functions and classes long enough to say something
    and not already public in the contract (a solution copied into a handout would carry them)."""
    ex = get(exercise)
    source = ex.reference_path.read_text()
    contract = contracts.read(exercise)
    names = {e.name for e in contract.entries}
    lines = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
            for inner in ast.walk(node):
                if isinstance(inner, ast.stmt) and not isinstance(inner, (ast.FunctionDef, ast.ClassDef)):
                    text = ast.get_source_segment(source, inner).splitlines()[0].strip()
                    if (len(text) >= 20 and text not in contract.markdown
                            and not text.startswith(("return ", '"""', "raise ", "super()"))):
                        lines.add(text)
    return lines


def parameters(node: ast.FunctionDef) -> list[tuple[str, bool]]:
    """(name, has a default) of a def's positional parameters, without self."""
    args = node.args.args
    defaults = [False] * (len(args) - len(node.args.defaults)) + [True] * len(node.args.defaults)
    return [(a.arg, d) for a, d in zip(args, defaults) if a.arg != "self"]


@pytest.mark.parametrize("exercise", EXERCISES)
def test_every_contract_name_is_the_references_with_the_same_parameters(exercise):
    contract = contracts.read(exercise)
    tree = {n.name: n for n in ast.parse(get(exercise).reference_path.read_text()).body
            if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert contract.entries and contract.imports and contract.exercise_text
    for entry in contract.entries:
        assert entry.name in tree, f"{exercise}: the reference defines no {entry.name}"
        node = tree[entry.name]
        if entry.is_class:
            node = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
        promised = parameters(ast.parse(f"def f({entry.args}): pass").body[0])
        actual = parameters(node)
        # the contract's required parameters, in order, then only optional ones (CONTRACTS.md allows extras)
        required = [n for n, default in promised if not default]
        assert [n for n, _ in actual[:len(required)]] == required, (exercise, entry.name, actual)
        assert all(default for _, default in actual[len(required):]), (exercise, entry.name, actual)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_starters_define_every_contract_name_with_stub_bodies_only(exercise):
    contract, reference = contracts.read(exercise), get(exercise).reference_path
    source = starter.python_source(contract, reference, f"{exercise}.py")
    tree = ast.parse(source)
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert defined == {e.name for e in contract.entries}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            body = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
            assert isinstance(body[-1], ast.Raise) and "NotImplementedError" in ast.unparse(body[-1]), node.name
            assert all(ast.unparse(s) == "super().__init__()" for s in body[:-1]), ast.unparse(node)
    notebook = starter.notebook(contract, reference, f"{exercise}.ipynb")
    code = [c.source for c in notebook.cells if c.cell_type == "code"]
    assert code[0] == contract.imports and code[-1] == f"!labcheck check {exercise}.ipynb --exercise {exercise}"
    assert "\n\n\n".join(code[1:-1]) in source  # the notebook's stubs are the .py's
    assert not [line for line in reference_lines(exercise) if line in source]


def test_public_tests_keep_only_the_public_tests_and_what_they_use():
    source = get("sgd").contract_tests.read_text()
    kept, public, hidden = handout.public_tests(source)
    tree = {n.name for n in ast.parse(kept).body if isinstance(n, ast.FunctionDef)}
    assert public == ["test_initialize_nn_structure", "test_my_nn_input_shapes", "test_sgd_step_trajectory",
                      "test_sgd_step_zeroes_grads", "test_train_sgd_trajectory"]
    assert set(public) <= tree and not set(hidden) & tree and len(public) + len(hidden) == 15
    # helpers and fixtures of public tests stay, those of hidden tests only go (trained: the reference itself)
    assert {"grading", "check_training", "close", "first_mismatch"} <= tree
    assert not {"trained", "init_diagnosis"} & tree and "load_reference" not in kept
    assert kept.count("@pytest.mark.graded") == len(public)


def test_an_answer_book_round_trips_and_names_what_it_lacks(tmp_path):
    import torch

    book = answers.AnswerBook("sgd", made_with={"torch": "0.0-other", "labcheck": "0.1.0"})
    book.put("forward", b"inputs", {"out": torch.arange(3.0)}, 0.25)
    book = answers.AnswerBook.read(book.write(tmp_path / "answers.bin"))
    raw, seconds = book.get("forward", b"inputs")
    assert torch.equal(raw["out"], torch.arange(3.0)) and seconds == 0.25
    with pytest.raises(answers.MissingAnswer, match=r"'forward' on these inputs; it was made with torch 0.0-other"):
        book.get("forward", b"other inputs")


@pytest.fixture(scope="module")
def sgd_handout(tmp_path_factory) -> Path:
    return handout.build("sgd", tmp_path_factory.mktemp("handout") / "sgd")


def check(capsys, file: Path, out: Path) -> tuple[int, str]:
    code = cli.main(["check", str(file), "--exercise", "sgd", "--handout", str(out)])
    return code, capsys.readouterr().out


def verdicts(printed: str) -> dict[str, str]:
    return {line.split()[1]: line.split()[0] for line in printed.splitlines() if line.startswith(("  PASS", "  FAIL"))}


def test_the_handout_holds_no_solution_and_no_hidden_test(sgd_handout):
    names = {p.relative_to(sgd_handout).as_posix() for p in sgd_handout.rglob("*") if p.is_file()}
    assert {"README.md", "CONTRACT.md", "sgd.py", "sgd.ipynb", "check/handout.json", "check/answers.bin"} <= names
    assert not [n for n in names if n.endswith(".py") and n not in (
        "sgd.py", *(f"check/exercises/sgd/{f}" for f in ("test_contract.py", "exercise.py", "calls.py", "probes.py")))]
    texts = "\n".join((sgd_handout / n).read_text() for n in names if not n.endswith(".bin"))
    assert not [line for line in reference_lines("sgd") if line in texts]
    manifest = json.loads((sgd_handout / "check" / "handout.json").read_text())
    hidden = [t["name"] for t in grade.planned_tests(REGISTRY["sgd"].contract_tests)
              if t["name"] not in manifest["public_tests"]]
    assert len(hidden) == manifest["hidden_tests"] == 10 and not [n for n in hidden if n in texts]
    assert manifest["public_points"] + manifest["hidden_points"] == 26
    nbformat.validate(nbformat.read(str(sgd_handout / "sgd.ipynb"), as_version=4))


def test_check_grades_the_starter_at_zero_public_points(sgd_handout, capsys):
    code, printed = check(capsys, sgd_handout / "sgd.py", sgd_handout)
    assert code == 1 and set(verdicts(printed).values()) == {"FAIL"} and len(verdicts(printed)) == 5
    assert "Public tests: 0/10 points. 10 more tests (16 points)" in printed
    assert "still the starter's stub" in printed


def test_check_fails_exactly_the_public_tests_the_grader_fails_with_its_messages(sgd_handout, tmp_path):
    buggy = EXAMPLES / "buggy_no_zero_grad.py"
    home = selfcheck.check_home(sgd_handout)
    handout_secret = selfcheck.read_manifest(sgd_handout)["secret"]  # the inputs its answers were recorded for
    checked = selfcheck.run_public_tests(buggy, "sgd", home, ("--labcheck-answers", home / selfcheck.ANSWERS),
                                         secret=handout_secret)
    subprocess.run([sys.executable, "-m", "pytest", str(REGISTRY["sgd"].contract_tests), *grade.GRADER_PYTEST_ARGS,
                    "-m", "public", "--labcheck-exercise", "sgd", "--labcheck-submission", str(buggy),
                    "--labcheck-results", str(tmp_path / "graded.json"), "--labcheck-min-isolation", "none",
                    "--labcheck-secret", handout_secret],
                   capture_output=True, env={**os.environ, **grade.GRADER_ENV}, timeout=600)
    graded = json.loads((tmp_path / "graded.json").read_text())
    failed = {t["name"] for t in checked["tests"] if t["status"] == "failed"}
    assert failed == set(grade.expected_failures(buggy)) & set(handout.public_tests(
        REGISTRY["sgd"].contract_tests.read_text())[1]) and len(failed) == 3
    assert [(t["name"], t["score"], t["output"]) for t in checked["tests"]] == [
        (t["name"], t["score"], t["output"]) for t in graded["tests"]]


def test_a_mistake_only_hidden_tests_catch_passes_the_check(sgd_handout, capsys):
    code, printed = check(capsys, EXAMPLES / "buggy_momentum_lr_inside.py", sgd_handout)
    assert code == 0 and set(verdicts(printed).values()) == {"PASS"} and "Public tests: 10/10 points" in printed


def test_check_refuses_a_folder_without_a_handout_or_of_another_exercise(sgd_handout, tmp_path, capsys):
    (tmp_path / "mine.py").write_text("")
    assert cli.main(["check", str(tmp_path / "mine.py"), "--exercise", "sgd"]) == 2
    assert "no handout at" in capsys.readouterr().err
    assert cli.main(["check", str(tmp_path / "mine.py"), "--exercise", "width", "--handout", str(sgd_handout)]) == 2
    assert "is for `sgd`, not `width`" in capsys.readouterr().err
    with pytest.raises(selfcheck.HandoutError):
        selfcheck.read_manifest(tmp_path)
