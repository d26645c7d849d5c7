"""The trust boundary (labcheck.untrusted): what the worker may import, and that a submission which
patches torch or labcheck inside its worker scores no more than its own code earns.

The exercise cases graft a few hostile lines onto the bundled correct example (exercises/<id>/hostile/*.py
say what and what they must lose) and grade only the tests concerned, through the plugin as
`labcheck grade` does.
"""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labcheck import grade, paths
from labcheck.exercises import EXERCISES, get
from labcheck.sandbox import Limits, Sandbox

UNTRUSTED_OK = ("labcheck", "labcheck.wire", "labcheck.repro", "labcheck.submission", "labcheck.worker")
EXERCISE_CASES = sorted(p for ex in [*EXERCISES] for p in get(ex).hostile_dir.glob("*.py"))


def grader_side(modules) -> list[str]:
    """labcheck modules in `modules` that do not belong on the untrusted side: of the package, all but the
    untrusted ones; of the exercise folders (loaded by path), all but their calls.py."""
    return sorted(m for m in modules if (m.startswith("labcheck.") and m not in UNTRUSTED_OK
                                         and not m.startswith("labcheck.untrusted"))
                  or (m.startswith("labcheck_") and not m.startswith(("labcheck_calls_", "labcheck_submission_"))))


def test_the_worker_modules_import_no_grader_side_module():
    calls = {ex: str(get(ex).calls_path) for ex in [*EXERCISES, "_selftest"]}
    code = ("import json, sys\n"
            "import labcheck.worker, labcheck.untrusted.serve, labcheck.untrusted.loader, labcheck.untrusted.confine\n"
            "import labcheck.untrusted.zygote\n"
            "from labcheck.untrusted.calls import load_calls\n"
            f"for ex, path in {calls!r}.items():\n"
            "    load_calls(ex, path)\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    modules = json.loads(out.stdout)
    assert "labcheck_calls_width" in modules and "labcheck.untrusted.confine" in modules
    assert grader_side(modules) == []
    assert grader_side(["labcheck_probes_width", "labcheck_reference_sgd", "labcheck.grade"]) == [
        "labcheck.grade", "labcheck_probes_width", "labcheck_reference_sgd"]  # (what it would catch)


MODULES_PROBE = '''
import sys

def add(a, b):
    return sorted(m for m in sys.modules if m.startswith("labcheck"))
'''


def test_a_running_worker_holds_no_grader_side_module(tmp_path):
    """The real worker process, after loading a submission and serving a call."""
    sub = tmp_path / "modules.py"
    sub.write_text(MODULES_PROBE)
    with Sandbox(sub, "_selftest", Limits(timeout=60)) as box:
        modules = box.call("call", name="add", args=[0, 0])
    assert "labcheck.untrusted.serve" in modules
    assert grader_side(modules) == []


# ---------------------------------------------------------------------------------------------
# Hostile submissions of real exercises


def case_of(path: Path) -> dict:
    """BASE (exercise), TESTS (the -k selection graded) and EXPECTED {test: text} of a case file."""
    tree = ast.parse(path.read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("BASE", "TESTS", "EXPECTED"):
                found[node.targets[0].id] = ast.literal_eval(node.value)
    return found


def grade_grafted(case_file: Path, tmp_path: Path) -> dict:
    """Grade the exercise's examples/correct.py with the case's lines appended; return results.json."""
    case = case_of(case_file)
    base = get(case["BASE"]).examples_dir / "correct.py"
    sub = tmp_path / f"{case_file.stem}.py"
    sub.write_text(base.read_text() + "\n\n# ---- hostile lines ----\n" + case_file.read_text())
    results = tmp_path / "results.json"
    cmd = [sys.executable, "-m", "pytest", str(get(case["BASE"]).contract_tests),
           *grade.GRADER_PYTEST_ARGS, "--labcheck-exercise", case["BASE"], "--labcheck-submission", str(sub),
           "--labcheck-results", str(results), "-k", " or ".join(case["TESTS"])]
    subprocess.run(cmd, cwd=paths.repo_root(), capture_output=True, timeout=1200, env={**os.environ, **grade.GRADER_ENV})
    return json.loads(results.read_text())


CASE_FILES = EXERCISE_CASES


@pytest.mark.parametrize("case_file", CASE_FILES, ids=[f"{p.parent.parent.name}/{p.stem}" for p in CASE_FILES])
def test_patching_inside_the_worker_earns_nothing_its_code_did_not(case_file, tmp_path):
    case = case_of(case_file)
    results = grade_grafted(case_file, tmp_path)
    graded = {t["name"]: t for t in results["tests"] if not t["output"].startswith("not run")}
    assert set(graded) >= set(case["EXPECTED"]), f"not graded: {sorted(set(case['EXPECTED']) - set(graded))}"
    for name, t in graded.items():
        if name in case["EXPECTED"]:
            assert t["score"] == 0, f"{case_file.stem}: {name} scored {t['score']}: {t['output']}"
            assert case["EXPECTED"][name].lower() in t["output"].lower(), f"{name} said {t['output']!r}"
        else:
            assert t["score"] == t["max_score"], f"{case_file.stem}: {name} lost points: {t['output']}"
