"""A grading failure is never the student's zero (issue #28 item 4).

A small exercise, `brokenpkg`, is built in a temporary folder found through $LABCHECK_EXERCISES: the
internal `_selftest` exercise's calls, a reference and three graded tests (5 points). Graded intact, the
correct submission earns 5/5 and one whose `means` returns strings loses only the test whose grader-side
arithmetic those strings break: the same test run on the reference's answers passes, so that failure is the
student's (a contract message), not labcheck's. Then the package is broken on purpose, as a course's copy
breaks: its bands file removed and a probe that raises, then a contract file that does not import.
`labcheck grade` must then mark the results not graded (report.NOT_GRADED for the student, never a
traceback; the details in extra_data.labcheck.not_graded for the instructor), write "not graded" in the
gradebook and summary.md, list them and exit with status 3; PrairieLearn's results say `gradable: false`;
once the package is fixed, the same command (no --fresh) grades them again. Four gradings of the tiny
exercise, about a minute here.
"""
import csv
import json
import shutil
from pathlib import Path

import pytest

from labcheck import cli, exercises, grade, paths, report
from labcheck.package import UploadResult, gradescope, make_config, prairielearn

HOSTILE = paths.tests_dir() / "hostile"
EXERCISE_PY = '''from labcheck.exercises import Exercise

EXERCISE = Exercise(id="brokenpkg", title="a package broken on purpose (tests/test_not_graded.py)")
'''
PROBES_PY = '''from labcheck.probes import Probes

PROBES = Probes("brokenpkg")
PROBES.passthrough("call")
PROBES.add("product", call="call_meta", result=lambda raw, inputs, kwargs: raw["value"])
'''
BROKEN_PROBE = "result=lambda raw, inputs, kwargs: raw['value_of_an_older_version']"  # a bug of ours
CONTRACT_PY = '''import pytest
import torch

from labcheck import bands

pytestmark = pytest.mark.exercise("brokenpkg")
ROWS = [[1.0, 2.0, 3.0], [4.0, 4.0], [0.5]]


@pytest.mark.graded(points=1)
def test_add(lab):
    got, want = lab.call("call", name="add", args=[2, 3]), lab.expect("call", name="add", args=[2, 3])
    torch.testing.assert_close(torch.tensor(float(got)), torch.tensor(float(want)), **bands.tolerance("brokenpkg.add"))


@pytest.mark.graded(points=2)
def test_matmul(lab):
    a, b = torch.ones(2, 3), torch.ones(3, 4)
    got, want = lab.call("product", name="matmul", args=[a, b]), lab.expect("product", name="matmul", args=[a, b])
    torch.testing.assert_close(got, want)


@pytest.mark.graded(points=2)
def test_means_sum(lab):
    got, want = lab.call("call", name="means", args=[ROWS]), lab.expect("call", name="means", args=[ROWS])
    assert sum(got) == pytest.approx(sum(want)), f"means returned {got}, expected {want}"
'''
BANDS_JSON = {"exercise": "brokenpkg", "tolerances": {"add": {"rtol": 0.0, "atol": 1e-6}}}
STRINGS = (HOSTILE / "correct.py").read_text().replace("return [float(sum(r)) / len(r) for r in rows]",
                                                        "return [str(sum(r) / len(r)) for r in rows]")


@pytest.fixture
def package(tmp_path, monkeypatch):
    """The `brokenpkg` exercise folder, registered through $LABCHECK_EXERCISES while the test runs."""
    folder = tmp_path / "exercises" / "brokenpkg"
    folder.mkdir(parents=True)
    (folder / "exercise.py").write_text(EXERCISE_PY)
    shutil.copyfile(HOSTILE / "_selftest" / "calls.py", folder / "calls.py")
    (folder / "probes.py").write_text(PROBES_PY)
    shutil.copyfile(HOSTILE / "reference_selftest.py", folder / "reference.py")
    (folder / "test_contract.py").write_text(CONTRACT_PY)
    (folder / "bands.json").write_text(json.dumps(BANDS_JSON))
    monkeypatch.setenv("LABCHECK_EXERCISES", str(folder.parent))
    monkeypatch.setenv("LABCHECK_EXPECTED_CACHE", str(tmp_path / "expected"))
    exercises.refresh()
    yield folder
    monkeypatch.undo()
    exercises.refresh()


def submissions(tmp_path: Path) -> Path:
    klass = tmp_path / "class"
    klass.mkdir(exist_ok=True)
    shutil.copyfile(HOSTILE / "correct.py", klass / "alice.py")
    (klass / "bob.py").write_text(STRINGS)
    return klass


def grade_cli(klass: Path, out: Path, capsys, fresh: bool = True) -> tuple[int, str]:
    """`labcheck grade CLASS --exercise brokenpkg` (the parser's choices are the exercises it was imported with)."""
    args = cli.get_args_parser().parse_args(["grade", str(klass), "--exercise", "width", "--out", str(out),
                                             "--jobs", "2", "--quiet", "--timeout", "10"] + ["--fresh"] * fresh)
    args.exercise = "brokenpkg"
    code = cli.cmd_grade(args)
    return code, capsys.readouterr().err


def results_of(out: Path, name: str) -> dict:
    return json.loads((out / name / "results.json").read_text())


def test_a_broken_package_gives_not_graded_never_zero(package, tmp_path, capsys):
    klass = submissions(tmp_path)
    code, err = grade_cli(klass, tmp_path / "intact", capsys)
    alice, bob = results_of(tmp_path / "intact", "alice"), results_of(tmp_path / "intact", "bob")
    assert code == 0 and alice["score"] == 5 and report.not_graded(alice) is None, (err, alice)
    # bob's strings break the grader's own `sum(got)`: the reference's answers pass the same test, so it is his
    lost = {t["name"]: t["output"] for t in bob["tests"] if t["score"] < t["max_score"]}
    assert list(lost) == ["test_means_sum"] and report.not_graded(bob) is None, bob
    assert "the grader could not check what your code returned (TypeError" in lost["test_means_sum"]

    (package / "bands.json").unlink()  # the course's copy lost a file ...
    probes = (package / "probes.py").read_text()
    (package / "probes.py").write_text(probes.replace("result=lambda raw, inputs, kwargs: raw[\"value\"]",
                                                      BROKEN_PROBE))  # ... and a probe has a bug
    assert BROKEN_PROBE in (package / "probes.py").read_text()
    out = tmp_path / "broken"
    code, err = grade_cli(klass, out, capsys)
    assert code == grade.NOT_GRADED_EXIT and "NOT GRADED" in err and "alice" in err and "bob" in err, err
    alice = results_of(out, "alice")
    unchecked = report.not_graded(alice)
    assert unchecked["tests"] == ["test_add", "test_matmul"]
    assert alice["output"].startswith(f"Not graded: {report.NOT_GRADED}.")
    outputs = {t["name"]: t["output"] for t in alice["tests"]}
    assert outputs == {"test_add": f"not graded: {report.NOT_GRADED}",
                       "test_matmul": f"not graded: {report.NOT_GRADED}", "test_means_sum": ""}
    assert "Traceback" not in json.dumps(alice["tests"]) + alice["output"]  # nothing of ours shown to the student
    details = "\n".join(unchecked["details"])
    assert "no tolerance 'brokenpkg.add'" in details and "value_of_an_older_version" in details
    rows = {r["name"]: r for r in csv.DictReader((out / "gradebook.csv").read_text().splitlines())}
    assert rows["alice"]["score"] == rows["bob"]["score"] == "not graded"
    summary = (out / "summary.md").read_text()
    assert "## Not graded: 2 submission(s) labcheck failed to grade" in summary and "value_of_an_older_version" in summary
    feedback = (out / "alice" / "feedback.md").read_text()
    assert "**not graded**" in feedback and "problem on our side" in feedback and "0 / 5" not in feedback
    # PrairieLearn: not gradable (no score, no attempt used); the details go to the job's log
    pl = prairielearn.results_json(UploadResult(klass / "alice.py", alice, ["Graded alice.py."], 1.0),
                                   make_config("brokenpkg"))
    assert pl["gradable"] is False and pl["format_errors"] == [f"Not graded: {report.NOT_GRADED}."]
    assert "no tolerance" in capsys.readouterr().err
    # Gradescope has no "ungradable": its output says so first, without a score; the details stay in extra_data
    gs = gradescope.results_json(UploadResult(klass / "alice.py", alice, ["Graded alice.py."], 1.0),
                                 make_config("brokenpkg"))
    assert gs["output"].startswith(f"Not graded: {report.NOT_GRADED}.") and "Score:" not in gs["output"]
    assert gs["output"].count(report.NOT_GRADED) == 1 and gs["extra_data"]["labcheck"]["not_graded"] == unchecked


def test_a_contract_file_that_does_not_import_gives_not_graded(package, tmp_path, capsys):
    (package / "test_contract.py").write_text("import no_such_module_of_the_grader\n" + CONTRACT_PY)
    klass = tmp_path / "class"
    klass.mkdir()
    shutil.copyfile(HOSTILE / "correct.py", klass / "alice.py")
    code, err = grade_cli(klass, tmp_path / "out", capsys)
    alice = results_of(tmp_path / "out", "alice")
    assert code == grade.NOT_GRADED_EXIT and report.not_graded(alice) is not None
    assert {t["output"] for t in alice["tests"]} == {f"not graded: {report.NOT_GRADED}"} and len(alice["tests"]) == 3
    assert "no_such_module_of_the_grader" in "\n".join(report.not_graded(alice)["details"])
    assert "no_such_module" not in alice["output"]
    (package / "test_contract.py").write_text(CONTRACT_PY)  # fixed: the same command grades it again
    code, err = grade_cli(klass, tmp_path / "out", capsys, fresh=False)
    assert code == 0 and results_of(tmp_path / "out", "alice")["score"] == 5, err
