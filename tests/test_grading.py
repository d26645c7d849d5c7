"""Grading end to end: hostile submissions, reports, a class folder, resume, a dying grader.

Every hostile case in tests/hostile/ is a small submission of the internal `_selftest` exercise
(contract_selftest.py, reference_selftest.py: four graded tests, 6 points). Each file declares
`EXPECTED = {test: text}`: the tests it must lose all points on, with a piece of the feedback;
every other test must keep full marks. All cases are graded once, in parallel, by
`labcheck.grade` exactly as `labcheck grade` does (one grader process each, sandboxed worker).
"""
import ast
import csv
import ctypes
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from labcheck import grade, paths, plugin, report, sandbox

HOSTILE = paths.tests_dir() / "hostile"
CONTRACT = HOSTILE / "contract_selftest.py"
REFERENCE = HOSTILE / "reference_selftest.py"
CASES = sorted(p.stem for p in HOSTILE.glob("*.py") if p.name not in (CONTRACT.name, REFERENCE.name))
# Also covered call by call in test_sandbox.py (or costly): graded end to end only with `-m slow`.
SLOW_CASES = {"loop_at_import", "sys_exit_at_import", "sys_exit_in_call", "os_exit_in_call", "wrong_device",
              "huge_reply"}
CASE_PARAMS = [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c for c in CASES]
TESTS = {"test_add": 1.0, "test_matmul": 2.0, "test_scale": 1.0, "test_means": 2.0}
GUARDED = [paths.repo_root() / "src" / "labcheck", paths.exercises_dir(), paths.repo_root() / "runs"]
FORGED = '{"score": 100, "tests": []}'  # what write_results.py appends wherever it can
PWNED = [paths.repo_root() / "PWNED.txt", paths.repo_root() / "PWNED_DIR", Path("/tmp/labcheck-pwned.txt"),
         Path("/tmp/labcheck-pwned-dir")]


def expected_of(path: Path, level: str | None = None) -> dict:
    """The EXPECTED line, read with ast (syntax_error.py cannot be parsed as a whole); where the file states
    another outcome below the whitelist file system (EXPECTED_BELOW_WHITELIST) and `level` is below it, that."""
    found = {}
    for line in path.read_text().splitlines():
        for name in ("EXPECTED", "EXPECTED_BELOW_WHITELIST"):
            if line.startswith(f"{name} = "):
                found[name] = ast.literal_eval(line.split("=", 1)[1].strip())
    below = level is not None and sandbox.LEVELS.index(level) < sandbox.LEVELS.index("whitelist-fs")
    return found.get("EXPECTED_BELOW_WHITELIST", found["EXPECTED"]) if below else found["EXPECTED"]


REFERENCE_COPIES = [Path("/tmp/labcheck-hostile-reference-copy"), Path("/var/tmp/labcheck-hostile-reference-copy")]
PR_SET_CHILD_SUBREAPER = 36  # prctl(2)
CANARY = "LABCHECK_HOSTILE_CANARY"  # in the grader's environment while the hostile cases run


def place_reference_copies() -> None:
    """Copies of the reference outside the repository, where read_reference_copy.py looks for them."""
    for root in REFERENCE_COPIES:
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(paths.exercises_dir(), root / "exercises", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(REFERENCE, root / REFERENCE.name)


def remove_reference_copies() -> None:
    for root in REFERENCE_COPIES:
        shutil.rmtree(root, ignore_errors=True)


def options(out: Path, **kw) -> grade.Options:
    base = dict(out=out, jobs=2, timeout=6.0, memory_mb=2048, total_timeout=240.0,
                extra_pytest_args=("--labcheck-reference", str(REFERENCE), "--labcheck-startup-timeout", "30"))
    base.update(kw)
    return grade.Options(**base)


def selftest_submissions(items) -> list[grade.Submission]:
    return grade.discover(items, "_selftest", tests=CONTRACT)


def fingerprint(root: Path) -> dict:
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(root.rglob("*")) if f.is_file()}


def forged_files() -> list[str]:
    """Files of the checkout (others edit them meanwhile, so no checksums) holding the forged report."""
    found = []
    for root in GUARDED:
        for f in Path(root).rglob("*"):
            try:
                if f.is_file() and f.stat().st_size < 10**7 and FORGED in f.read_text(errors="ignore"):
                    found.append(str(f))
            except OSError:
                continue
    return found


@pytest.fixture(scope="module", autouse=True)
def adopt_orphans():
    """This test process is a child subreaper while the module runs: a worker its grader left behind is
    re-parented to it, not to init, so hostile_workers finds it among this process's descendants."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def hostile_workers(holding: Path = HOSTILE) -> list[int]:
    """Worker processes started from this test process (its descendants, orphans included: adopt_orphans)
    still holding one of the hostile submissions under `holding`. Only its own: other test files grade the
    same hostile files at the same time from other processes (pytest-xdist), and once theirs were counted."""
    children, _ = sandbox._process_table()
    descendants, todo = [], [os.getpid()]
    while todo:
        todo.extend(kids := children.get(todo.pop(), []))
        descendants.extend(kids)
    pids = []
    for pid in descendants:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if b"LABCHECK_SANDBOX_POLICY" in env and str(holding).encode() in env:
            pids.append(pid)
    return pids


def check_complete(results: dict) -> None:
    """Gradescope shape: every graded test once, with all fields, and a total that adds up."""
    assert sorted(t["name"] for t in results["tests"]) == sorted(TESTS)
    for t in results["tests"]:
        assert set(t) >= {"name", "score", "max_score", "status", "output", "visibility"}
        assert t["status"] in ("passed", "failed") and 0 <= t["score"] <= t["max_score"] == TESTS[t["name"]]
    assert results["score"] == pytest.approx(sum(t["score"] for t in results["tests"]))
    assert results["max_score"] == pytest.approx(sum(TESTS.values()))


@pytest.fixture(scope="module")
def hostile(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile-grades")
    before = fingerprint(HOSTILE)
    selected = {item.callspec.params["case"] for item in request.session.items
                if hasattr(item, "callspec") and "case" in item.callspec.params} or set(CASES)
    subs = selftest_submissions([HOSTILE / f"{case}.py" for case in CASES if case in selected])
    start = time.monotonic()
    place_reference_copies()
    os.environ[CANARY] = "the grader's secret"
    try:
        results = grade.grade_many(subs, options(out))
    finally:
        os.environ.pop(CANARY, None)
        remove_reference_copies()
    seconds = time.monotonic() - start
    time.sleep(1.0)
    return {"out": out, "results": results, "before": before, "after": fingerprint(HOSTILE),
            "seconds": seconds, "subs": subs}


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_hostile_submission_gets_a_complete_and_correct_report(hostile, case):
    results = hostile["results"][case]
    on_disk = json.loads((hostile["out"] / case / "results.json").read_text())
    assert on_disk["score"] == results["score"] and on_disk["extra_data"]["labcheck"]["finished"] is True
    check_complete(on_disk)
    isolation = on_disk["extra_data"]["labcheck"]["isolation"]
    if isolation is not None:  # None: no call ever reached a worker (e.g. a syntax error found at loading)
        assert isolation["level"] in sandbox.LEVELS and isolation["launcher"]
    expected = expected_of(HOSTILE / f"{case}.py", isolation and isolation["level"])
    for t in on_disk["tests"]:
        if t["name"] in expected:
            assert t["score"] == 0 and t["status"] == "failed", f"{case}: {t}"
            assert expected[t["name"]].lower() in t["output"].lower(), f"{case}: {t['name']} said {t['output']!r}"
        else:
            assert t["score"] == t["max_score"], f"{case}: {t['name']} lost points: {t['output']}"


def test_hostile_submissions_leave_the_grader_untouched(hostile):
    assert hostile["after"] == hostile["before"]
    assert forged_files() == []
    assert not [p for p in PWNED if p.exists()]
    assert hostile_workers() == []
    for case in hostile["results"]:  # nothing but the reports in each report folder
        assert sorted(p.name for p in (hostile["out"] / case).iterdir()) == ["grader.log", "results.json"]


def test_reports_of_the_hostile_run(hostile):
    from labcheck import report

    rows = report.rows(hostile["subs"], hostile["results"])
    report.write_gradebook(hostile["out"] / "gradebook.csv", rows)
    with open(hostile["out"] / "gradebook.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["name"] for r in table] == sorted(hostile["results"])
    assert set(table[0]) == {"name", "file", "student_id", "email", "student", "exercise", "score", "max_score", *TESTS}
    correct = next(r for r in table if r["name"] == "correct")
    assert float(correct["score"]) == float(correct["max_score"]) == sum(TESTS.values())
    md = report.summary_markdown(rows)
    assert "| loop_in_call | loop_in_call.py | - | _selftest | 5/6 |" in md and "did not return within" in md


# ---------------------------------------------------------------------------------------------
# A class folder: one submission hangs, the others are graded; resume; a grader that dies


NOTEBOOK = {
    "cells": [
        {"cell_type": "markdown", "source": ["# Homework"]},
        {"cell_type": "code", "source": ["import torch\n", "%matplotlib inline\n", "LR = 0.1\n"]},
        {"cell_type": "code", "source": ["def add(a, b):\n", "    return a + b\n", "\n", "def matmul(a, b):\n",
                                         "    return a @ b\n"]},
        {"cell_type": "code", "source": ["while True:  # the training cell: never run by the grader\n",
                                         "    pass\n"]},
        {"cell_type": "code", "source": ["raise SystemExit('not a definition')\n", "x = torch.randn(3)\n"]},
        {"cell_type": "code", "source": ["def scale(x, s):\n", "    return x * s\n", "\n", "def means(rows):\n",
                                         "    return [sum(r) / len(r) for r in rows]\n"]},
    ],
    "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
}


@pytest.fixture(scope="module")
def klass(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    folder = root / "submissions"
    folder.mkdir()
    shutil.copy(HOSTILE / "correct.py", folder / "alice.py")
    shutil.copy(HOSTILE / "loop_in_call.py", folder / "bob.py")
    (folder / "carol.ipynb").write_text(json.dumps(NOTEBOOK))
    (folder / "dave").mkdir()
    shutil.copy(HOSTILE / "correct.py", folder / "dave" / "submission.py")
    out = root / "grades"
    log = []
    subs = selftest_submissions([folder])
    results = grade.grade_many(subs, options(out), progress=lambda s, r, resumed: log.append((s.name, resumed)))
    return {"folder": folder, "out": out, "subs": subs, "results": results, "log": log}


def test_class_folder_grades_every_entry_despite_a_hanging_one(klass):
    assert [s.name for s in klass["subs"]] == ["alice", "bob", "carol", "dave"]
    scores = {name: r["score"] for name, r in klass["results"].items()}
    assert scores == {"alice": 6.0, "bob": 5.0, "carol": 6.0, "dave": 6.0}
    bob = json.loads((klass["out"] / "bob" / "results.json").read_text())
    check_complete(bob)
    assert "`add` did not return within" in bob["tests"][0]["output"]


def test_class_grading_resumes_and_regrades_only_what_changed(klass):
    log = []
    progress = lambda s, r, resumed: log.append((s.name, resumed))  # noqa: E731
    alice = klass["folder"] / "alice.py"
    alice.write_text(alice.read_text().replace("return a + b", "return a - b"))  # a new version
    (klass["out"] / "dave" / "results.json").unlink()  # as if interrupted before dave finished
    bob_report = (klass["out"] / "bob" / "results.json").read_text()
    results = grade.grade_many(selftest_submissions([klass["folder"]]), options(klass["out"]), progress=progress)
    assert sorted(log) == [("alice", False), ("bob", True), ("carol", True), ("dave", False)]
    assert results["alice"]["score"] == 5.0 and results["dave"]["score"] == 6.0
    assert (klass["out"] / "bob" / "results.json").read_text() == bob_report


def test_a_grader_that_runs_out_of_time_still_writes_a_complete_report(tmp_path):
    subs = selftest_submissions([HOSTILE / "loop_in_call.py"])
    # `add` loops until its CPU deadline (plugin.DEADLINE_FLOOR, 5 s); the whole submission gets less than that,
    # so the cap is reached however fast the machine is.
    assert plugin.DEADLINE_FLOOR > 4.0
    res = grade.grade_one(subs[0], options(tmp_path, timeout=60.0, total_timeout=4.0))
    check_complete(res)
    outputs = " ".join(t["output"] for t in res["tests"])
    assert "exceeded the total grading time of 4 s" in outputs
    assert res["tests"][0]["score"] == 0
    time.sleep(1.0)
    assert hostile_workers(HOSTILE / "loop_in_call.py") == []


def test_a_grader_that_cannot_start_still_writes_a_complete_report(tmp_path):
    subs = selftest_submissions([HOSTILE / "correct.py"])
    opts = options(tmp_path)
    opts.extra_pytest_args = ("--labcheck-no-such-option",)
    res = grade.grade_one(subs[0], opts)
    check_complete(res)
    # labcheck's failure, not the student's: not graded (never a 0), the details kept for the instructor
    assert report.NOT_GRADED in res["output"] and "grader process" not in res["output"]
    assert all(t["output"] == f"not graded: {report.NOT_GRADED}" for t in res["tests"])
    assert "grader process was called wrongly" in report.not_graded(res)["details"][0]


RUNNER = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import test_grading as T
from labcheck import grade
subs = T.selftest_submissions([{folder!r}])
grade.grade_many(subs, T.options(Path({out!r}), jobs=1))
"""


def test_interrupted_class_grading_resumes_where_it_stopped(tmp_path):
    import signal
    import subprocess
    import sys

    folder = tmp_path / "class"
    folder.mkdir()
    shutil.copy(HOSTILE / "correct.py", folder / "a.py")
    shutil.copy(HOSTILE / "loop_in_call.py", folder / "b.py")
    shutil.copy(HOSTILE / "correct.py", folder / "c.py")
    out = tmp_path / "grades"
    code = RUNNER.format(tests=str(paths.tests_dir()), folder=str(folder), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=paths.repo_root(), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (out / "a" / "results.json").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2.0)  # b is being graded now (jobs=1, in name order)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and b"KeyboardInterrupt" in err
    assert (out / "a" / "results.json").exists() and not (out / "b" / "results.json").exists()
    assert not (out / "c" / "results.json").exists()
    time.sleep(1.0)
    assert hostile_workers() == []
    log = []
    results = grade.grade_many(selftest_submissions([folder]), options(out),
                               progress=lambda s, r, resumed: log.append((s.name, resumed)))
    assert sorted(log) == [("a", True), ("b", False), ("c", False)]
    assert {k: r["score"] for k, r in results.items()} == {"a": 6.0, "b": 5.0, "c": 6.0}


def test_no_link_earns_a_point_or_leaks_a_byte(tmp_path):
    """Issue #22: links in uploads are refused, never followed. Before: a folder whose entry file linked to the
    reference, or a class entry linking to it, scored full marks with no code of their own; bob's link to
    alice's file graded alice's code as bob's; a link to /etc/passwd quoted its first line in the feedback."""
    secret = tmp_path / "secret.txt"  # stands for root's files: a line no feedback may quote
    secret.write_text("root:x:0:0:not-for-students\n")
    klass = tmp_path / "class"
    klass.mkdir()
    shutil.copy(HOSTILE / "correct.py", klass / "alice.py")
    (klass / "carol.py").symlink_to(REFERENCE)  # a class entry linking to the reference
    (klass / "bob").mkdir()
    (klass / "bob" / "submission.py").symlink_to(klass / "alice.py")  # someone else's file
    (klass / "dave").mkdir()
    shutil.copy(HOSTILE / "correct.py", klass / "dave" / "submission.py")
    (klass / "dave" / "notes.txt").symlink_to(secret)  # a link anywhere in the folder
    (klass / "eve.py").symlink_to(secret)
    (klass / "frank").symlink_to(klass / "dave", target_is_directory=True)  # a class entry linking to a folder
    single = tmp_path / "grace"
    single.mkdir()
    (single / "submission.py").symlink_to(REFERENCE)  # one submission folder, given by itself
    subs = selftest_submissions([klass, single])
    assert sorted(s.name for s in subs) == ["alice", "bob", "carol", "dave", "eve", "frank", "grace"]
    results = grade.grade_many(subs, options(tmp_path / "out"))
    assert {name: r["score"] for name, r in results.items()} == {
        "alice": 6.0, "bob": 0.0, "carol": 0.0, "dave": 0.0, "eve": 0.0, "frank": 0.0, "grace": 0.0}
    for name in ("bob", "carol", "dave", "eve", "frank", "grace"):
        assert all("is a symbolic link" in t["output"] for t in results[name]["tests"]), results[name]
    reports = "".join(f.read_text(errors="replace") for f in (tmp_path / "out").rglob("*") if f.is_file())
    assert "not-for-students" not in reports and "def add" not in reports


def test_report_names_never_collide_with_the_class_files_or_each_other(tmp_path):
    """Issue #22: a class entry named gradebook.csv.py got a report folder named gradebook.csv, and
    `labcheck grade` died with IsADirectoryError, writing no gradebook, summary or dashboard."""
    klass = tmp_path / "class"
    klass.mkdir()
    for name in ("gradebook.csv.py", "summary.md.py", "index.html.py", "Alice.py", "alice.py"):
        shutil.copy(HOSTILE / "correct.py", klass / name)
    subs = selftest_submissions([klass])
    assert len({s.out_name.lower() for s in subs}) == 5 and not any("." in s.out_name for s in subs)
    out = tmp_path / "out"
    results = grade.grade_many(subs, options(out))
    assert sorted(r["score"] for r in results.values()) == [6.0] * 5
    from labcheck import dashboard, report  # the class files, as `labcheck grade` writes them after grading

    rows = report.rows(subs, results)
    report.write_gradebook(out / "gradebook.csv", rows)
    (out / "summary.md").write_text(report.summary_markdown(rows, examples=False))
    assert dashboard.write(out) == out / "index.html"
    assert len((out / "gradebook.csv").read_text().splitlines()) == 6 and (out / "index.html").is_file()


MISSING_IMPORTS = '''import torch
import torchvision
from torchvision import datasets, transforms
import seaborn as sns
import tqdm.notebook as tqdm
from IPython.display import display
from scipy import random, linalg
from google.colab import drive
import torchsummary
from torchsummary import summary


def add(a, b):
    return a + b + 0 * linalg.norm([0.0])


def matmul(a, b):
    return a @ b


def scale(x, s):
    summary(x)  # needs what the grading environment does not have
    return s * x


def means(rows):
    return [sum(r) / len(r) for r in tqdm.tqdm(rows, disable=True)]
'''


def test_an_import_the_grader_lacks_costs_only_the_functions_that_use_it(tmp_path):
    """Issue #28: a module the grading environment does not have (google.colab, torchsummary) or a name a
    module no longer has (`from scipy import random`) made the whole submission fail to load (a .py: every
    point; a notebook dropped some imports and kept others). Now, in a .py and a notebook alike, only `scale`
    (which calls torchsummary's summary) loses its point, with a message naming the import, and the notes
    reach results.json's output (hence feedback.md)."""
    import nbformat

    py = tmp_path / "student.py"
    py.write_text(MISSING_IMPORTS)
    cells = MISSING_IMPORTS.split("\n\n\n")
    nb = tmp_path / "student_nb.ipynb"
    nb.write_text(nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])))
    results = grade.grade_many(selftest_submissions([py, nb]), options(tmp_path / "out"))
    for name in ("student", "student_nb"):
        r = results[name]
        lost = {t["name"]: t["output"] for t in r["tests"] if t["score"] < t["max_score"]}
        assert list(lost) == ["test_scale"] and "from torchsummary import summary" in lost["test_scale"], lost
        assert "torchsummary" in r["output"] and "google.colab" in r["output"] and "scipy import random" in r["output"]
        assert len(r["extra_data"]["labcheck"]["load_notes"]) == 4, r["extra_data"]["labcheck"]["load_notes"]


def test_a_submission_folder_grades_with_the_students_own_modules(tmp_path):
    """Issue #28: `sgd.py` plus the student's `helpers.py` it imports could not be graded (the worker got the
    entry file alone). A folder is one submission: its modules import each other (a package too), tracebacks
    name the student's own files, and nothing else of the class is visible (a neighbour's file is not)."""
    klass = tmp_path / "class"
    (klass / "alice" / "ops").mkdir(parents=True)
    (klass / "alice" / "submission.py").write_text(
        "import torch\nfrom helpers import add, means\nfrom ops.linalg import matmul\n\n\n"
        "def scale(x, s):\n    return helpers_scale(x, s)\n\n\nfrom helpers import scale as helpers_scale\n")
    (klass / "alice" / "helpers.py").write_text(
        "def add(a, b):\n    return a + b\n\n\ndef means(rows):\n    return [float(sum(r)) / len(r) for r in rows]\n\n\n"
        "def scale(x, s):\n    raise ValueError('not written yet')\n")
    (klass / "alice" / "ops" / "__init__.py").write_text("")
    (klass / "alice" / "ops" / "linalg.py").write_text("def matmul(a, b):\n    return a @ b\n")
    (klass / "bob.py").write_text("import helpers\n\n\ndef add(a, b):\n    return helpers.add(a, b)\n")
    results = grade.grade_many(selftest_submissions([klass]), options(tmp_path / "out"))
    alice = {t["name"]: t for t in results["alice"]["tests"]}
    assert {name: t["score"] for name, t in alice.items()} == {"test_add": 1.0, "test_matmul": 2.0, "test_scale": 0.0,
                                                               "test_means": 2.0}
    assert "not written yet" in alice["test_scale"]["output"] and "alice/helpers.py" in alice["test_scale"]["output"]
    bob = {t["name"]: t for t in results["bob"]["tests"]}
    assert bob["test_add"]["score"] == 0 and "helpers" in bob["test_add"]["output"]  # alice's module is not his
