"""Gradescope and PrairieLearn packages, run without either platform.

Each package is built, unpacked into a temporary folder standing for /autograder (Gradescope) or
/grade (PrairieLearn), and its entry point (run_autograder, tests/run.sh) is run with
LABCHECK_PYTHON set to this interpreter instead of the environment setup.sh would build (the
labcheck it imports is therefore this checkout's; the reference, bands and contract tests come
from the package). The results.json it writes is checked against each platform's documented
format by the validators below, written from the docs:
  Gradescope: gradescope-autograders.readthedocs.io/en/latest/specs/ ("Output format")
  PrairieLearn: docs/externalGrading.md ("Grading results") and the info.json schema.

Grading one submission takes ~1 minute here, so the default run grades two (a hostile
submission through Gradescope, after filling its expected-answer cache as setup.sh does, and a buggy
one through PrairieLearn) on CHEAP; uploads that cannot be parsed are answered before any grading
starts (seconds); the correct and buggy examples through both platforms are `slow`. setup.sh runs
with stand-ins for apt-get and python3 that record what it would install (the real install needs
PyTorch's wheel index, which this machine cannot reach).
"""
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest

from labcheck import grade, package
from labcheck.exercises import REGISTRY
from labcheck.package import gradescope, prairielearn
from labcheck.report import base_name

CHEAP = "width"  # the exercise whose grading took least here (about a minute per submission)
VISIBILITY = ("hidden", "after_due_date", "after_published", "visible")
FORGED = '{"score": 1000, "tests": []}'


# ---------------------------------------------------------------------------------------------
# Validators, from the platforms' documentation


def gradescope_problems(results: dict) -> list[str]:
    """What in `results` does not follow Gradescope's documented results.json format."""
    problems = []
    top = {"score", "execution_time", "output", "output_format", "test_output_format", "test_name_format",
           "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard"}
    problems += [f"unknown top-level key {k!r}" for k in set(results) - top]
    tests = results.get("tests")
    if "score" not in results and not (tests and all("score" in t for t in tests)):
        problems.append("no top-level score and not every test has one")
    for key in ("score", "execution_time"):
        if key in results and not isinstance(results[key], (int, float)):
            problems.append(f"{key} is not a number")
    for key in ("visibility", "stdout_visibility"):
        if key in results and results[key] not in VISIBILITY:
            problems.append(f"{key} {results[key]!r} is not one of {VISIBILITY}")
    if "output" in results and not isinstance(results["output"], str):
        problems.append("output is not a string")
    if tests is not None and not isinstance(tests, list):
        problems.append("tests is not a list")
    fields = {"score", "max_score", "status", "name", "name_format", "number", "output", "output_format", "tags",
              "visibility", "extra_data"}
    for i, t in enumerate(tests or []):
        problems += [f"tests[{i}]: unknown key {k!r}" for k in set(t) - fields]
        for key in ("score", "max_score"):
            if key in t and not isinstance(t[key], (int, float)):
                problems.append(f"tests[{i}].{key} is not a number")
        if "status" in t and t["status"] not in ("passed", "failed"):
            problems.append(f"tests[{i}].status {t['status']!r}")
        if "visibility" in t and t["visibility"] not in VISIBILITY:
            problems.append(f"tests[{i}].visibility {t['visibility']!r}")
        for key in ("name", "output", "number"):
            if key in t and not isinstance(t[key], str):
                problems.append(f"tests[{i}].{key} is not a string")
    return problems


def prairielearn_problems(results: dict) -> list[str]:
    """What in `results` does not follow PrairieLearn's documented external-grading results format."""
    problems = []
    if len(json.dumps(results)) > 1_000_000:
        problems.append("larger than PrairieLearn's 1 MB limit")
    gradable = results.get("gradable", True)
    if not isinstance(gradable, bool):
        problems.append("gradable is not a boolean")
    if not gradable:
        errors = results.get("format_errors")
        if not (isinstance(errors, str) or isinstance(errors, list) and all(isinstance(e, str) for e in errors)):
            problems.append("an ungradable result needs format_errors (a string or a list of strings)")
        return problems
    score = results.get("score")
    if not isinstance(score, (int, float)) or not 0.0 <= score <= 1.0:
        problems.append(f"score {score!r} is not a number in [0, 1]")
    for key in ("message", "output"):
        if key in results and not isinstance(results[key], str):
            problems.append(f"{key} is not a string")
    for i, t in enumerate(results.get("tests", [])):
        if not {"points", "max_points"} <= set(t):  # else PrairieLearn disables the per-test points display
            problems.append(f"tests[{i}] lacks points or max_points")
        for key in ("points", "max_points"):
            if not isinstance(t.get(key), (int, float)):
                problems.append(f"tests[{i}].{key} is not a number")
        for key in ("name", "description", "message", "output"):
            if key in t and not isinstance(t[key], str):
                problems.append(f"tests[{i}].{key} is not a string")
    return problems


def info_json_problems(info: dict) -> list[str]:
    """info.json of an externally graded v3 question (PrairieLearn's infoQuestion schema)."""
    problems = []
    for key in ("uuid", "title", "topic", "type"):
        if not isinstance(info.get(key), str):
            problems.append(f"{key} missing or not a string")
    try:
        uuid.UUID(info.get("uuid", ""))
    except ValueError:
        problems.append("uuid is not a UUID")
    if info.get("type") != "v3" or info.get("gradingMethod") != "External":
        problems.append("not a v3 question with gradingMethod External")
    options = info.get("externalGradingOptions") or {}
    allowed = {"comment", "enabled", "image", "entrypoint", "serverFilesCourse", "timeout", "enableNetworking",
               "environment"}
    problems += [f"externalGradingOptions: unknown key {k!r}" for k in set(options) - allowed]
    if not isinstance(options.get("image"), str):
        problems.append("externalGradingOptions.image is required")
    if not isinstance(options.get("timeout"), int) or not 0 < options["timeout"] <= 600:
        problems.append("externalGradingOptions.timeout must be an integer number of seconds, at most 600")
    if options.get("enableNetworking") not in (False, None):
        problems.append("grading jobs must not have network")
    return problems


# ---------------------------------------------------------------------------------------------
# Helpers


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.is_file()}


def buggy_example(exercise: str) -> Path:
    """The first bundled buggy example that declares the tests it loses."""
    return next(f for f in sorted(REGISTRY[exercise].examples_dir.glob("buggy_*.py"))
                if grade.expected_failures(f))


HOSTILE_TAIL = '''

# ---- hostile part (labcheck's package tests): runs at import, inside the worker ----
import os as _os
import pathlib as _pl

_home = _pl.Path(_os.environ.get("LABCHECK_HOME", "/autograder/source/labcheck"))
_root = _home.parents[1]
for _secret in (_home / "exercises" / "{exercise}" / "reference.py", _home / "exercises" / "{exercise}" / "test_contract.py",
                _root / "submission_metadata.json", _home / "labcheck-package.json"):
    try:
        _data = _secret.read_bytes()
    except Exception:
        continue
    raise RuntimeError(f"hostile: read {{_secret}}")  # a leak fails every test: the grade shows it
for _target in (_root / "results" / "results.json", _root / "source" / "run_autograder",
                _home / "exercises" / "{exercise}" / "bands.json"):
    try:
        _target.parent.mkdir(parents=True, exist_ok=True)
        _target.write_text({forged!r})
    except Exception:
        pass
'''


def hostile_source(exercise: str) -> str:
    """A buggy example plus code that tries to read the reference and forge the results at import."""
    return buggy_example(exercise).read_text() + HOSTILE_TAIL.format(exercise=exercise, forged=FORGED)


def lost_tests(tests: list[dict], score="score", max_score="max_score") -> set[str]:
    return {base_name(t["name"]) for t in tests if t[score] < t[max_score]}


# ---------------------------------------------------------------------------------------------
# Gradescope


@pytest.fixture(scope="module")
def autograder_zip(tmp_path_factory) -> Path:
    config = package.make_config(CHEAP, after_due_date=[package.graded_test_names(CHEAP)[-1]])
    return gradescope.build(config, tmp_path_factory.mktemp("gs") / "autograder.zip")


def autograder_root(zip_path: Path, tmp: Path, files: dict[str, str]) -> Path:
    """A folder laid out as Gradescope's /autograder: source/ (the zip), submission/, metadata."""
    root = tmp / "autograder"
    (root / "source").mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(root / "source")
        for info in zf.infolist():  # zipfile drops the mode bits; Gradescope keeps them
            mode = info.external_attr >> 16
            if mode:
                os.chmod(root / "source" / info.filename, stat.S_IMODE(mode))
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")  # as Gradescope's image build does
    (root / "submission").mkdir()
    for name, text in files.items():
        (root / "submission" / name).write_text(text)
    (root / "submission_metadata.json").write_text(json.dumps({"id": 1, "users": [{"email": "s@example.edu"}]}))
    return root


def run_autograder(root: Path) -> dict:
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "LABCHECK_PYTHON": sys.executable}
    env.pop("LABCHECK_EXPECTED_CACHE", None)  # the package's own, as on Gradescope
    proc = subprocess.run([str(root / "run_autograder")], cwd=root, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    assert gradescope_problems(results) == []
    return results


def test_autograder_zip_holds_what_grading_needs_and_nothing_else(autograder_zip):
    with zipfile.ZipFile(autograder_zip) as zf:
        names = set(zf.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
    assert {"setup.sh", "run_autograder"} <= names  # at the root of the archive, as Gradescope requires
    assert all(modes[n] & 0o111 for n in ("setup.sh", "run_autograder"))
    checkout = {n.split("/", 1)[1] for n in names if n.startswith("labcheck/")}
    ex = REGISTRY[CHEAP]
    assert {f"exercises/{CHEAP}/{name}" for name in ("exercise.py", "calls.py", "probes.py", "reference.py",
                                                     "bands.json", "test_contract.py")} | {
            "pyproject.toml", "labcheck-package.json", "src/labcheck/package/gradescope.py",
            "src/labcheck/package/templates/run_autograder"} <= checkout
    assert "conftest.py" not in checkout  # graders run with --noconftest (grade.GRADER_PYTEST_ARGS)
    others = [e for e in REGISTRY if e != ex.id]
    assert not [n for n in checkout if n.startswith(("tests/", ".git", f"exercises/{CHEAP}/examples",
                                                     f"exercises/{CHEAP}/hostile", f"exercises/{CHEAP}/claims"))
                or any(n.startswith(f"exercises/{o}/") for o in others)]


def test_setup_and_run_scripts_are_valid_bash(autograder_zip, tmp_path):
    with zipfile.ZipFile(autograder_zip) as zf:
        zf.extractall(tmp_path)
    scripts = [tmp_path / "setup.sh", tmp_path / "run_autograder"]
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)
    text = scripts[0].read_text()
    assert "TORCH=(torch==2.14.1 torchvision==0.29.1)" in text and "x86_64)" in text  # pinned as scripts/run
    assert "https://download.pytorch.org/whl/cpu" in text  # the CPU build: grading never uses a GPU
    assert not re.search(r"pip install[^\n]*\btorch\b(?!==)", text)  # never an unpinned torch
    assert "bubblewrap" in text and 'DATASETS="fashion-mnist"' in text  # width trains on Fashion-MNIST
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (scripts/run test installs it)")
    proc = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_visibility_options_are_checked_against_the_contract():
    tests = package.graded_test_names(CHEAP)
    with pytest.raises(ValueError, match="no graded test 'test_nope'"):
        package.make_config(CHEAP, hidden=["test_nope"])
    with pytest.raises(ValueError, match="two visibilities"):
        package.make_config(CHEAP, hidden=[tests[0]], after_due_date=[tests[0]])
    with pytest.raises(ValueError, match="visibility"):
        package.make_config(CHEAP, visibility="sometimes")
    config = package.make_config(CHEAP, visibility="after_published", after_due_date=[tests[0]])
    up = package.UploadResult(Path("x.py"), {"tests": [
        {"name": f"{tests[0]}[a]", "score": 1.0, "max_score": 1.0, "status": "passed", "output": ""},
        {"name": tests[1], "score": 0.0, "max_score": 2.0, "status": "failed", "output": "x" * 20000}]}, ["n"], 3.4)
    results = gradescope.results_json(up, config)
    assert gradescope_problems(results) == []
    assert [t["visibility"] for t in results["tests"]] == ["after_due_date", "after_published"]
    assert results["visibility"] == "after_published" and results["score"] == 1.0 and results["execution_time"] == 3
    assert len(results["tests"][1]["output"]) < 9000  # long outputs are clipped


def test_hidden_tests_that_carry_points_are_refused():
    """Gradescope counts a hidden test's points in the total score students see (its specification)."""
    tests = package.graded_test_names(CHEAP)
    with pytest.raises(ValueError, match=rf"hidden test\(s\) that carry points: {tests[0]} .*--after-due-date"):
        package.make_config(CHEAP, hidden=[tests[0]])
    with pytest.raises(ValueError, match="hidden test"):  # hidden by default, not shown otherwise
        package.make_config(CHEAP, visibility="hidden")
    config = package.make_config(CHEAP, visibility="hidden", after_due_date=tests)  # every test shown later: fine
    assert set(config.test_visibility.values()) == {"after_due_date"}


def test_prairielearn_refuses_visibility_it_cannot_honour():
    for kwargs in ({"hidden": [package.graded_test_names(CHEAP)[0]]}, {"after_due_date": [package.graded_test_names(CHEAP)[0]]},
                   {"after_published": [package.graded_test_names(CHEAP)[0]]}, {"visibility": "after_due_date"}):
        with pytest.raises(ValueError, match="PrairieLearn shows the student every test"):
            package.make_config(CHEAP, platform="prairielearn", **kwargs)
    config = package.make_config(CHEAP, platform="prairielearn")
    config.test_visibility = {package.graded_test_names(CHEAP)[0]: "hidden"}  # a hand-edited package
    with pytest.raises(ValueError, match="PrairieLearn shows"):
        prairielearn.results_json(package.UploadResult(Path("x.py"), {"tests": []}, [], 1.0), config)


def test_nothing_the_student_sees_before_the_due_date_counts_or_names_a_later_test():
    tests = package.graded_test_names(CHEAP)
    later, shown = tests[-1], tests[0]
    config = package.make_config(CHEAP, after_due_date=[later])
    log = f"FAILED test_contract.py::{later} - AssertionError: the hidden check's message"
    up = package.UploadResult(Path("x.py"), {
        "output": f"the grader process hit an internal error; its last output:\n{log}",
        "extra_data": {"labcheck": {"load_notes": ["line 3: import torchsummary"], "isolation": None}},
        "tests": [
            {"name": shown, "score": 1.0, "max_score": 2.0, "status": "failed", "output": f"not graded: {log}"},
            {"name": later, "score": 0.0, "max_score": 3.0, "status": "failed", "output": "the hidden check's message"}]},
        ["Graded width.py."], 2.0)
    results = gradescope.results_json(up, config)
    assert gradescope_problems(results) == []
    seen = results["output"] + "".join(t["output"] for t in results["tests"] if t["visibility"] == "visible")
    assert later not in seen and "hidden check" not in seen and "Score:" not in seen and "5" not in results["output"]
    assert "Tests shown now: 1/2 points." in results["output"] and "import torchsummary" in results["output"]
    assert gradescope.GRADING_STOPPED in results["output"]
    assert any(later in n for n in up.instructor_notes)  # the whole log goes to stdout: instructors only
    assert results["stdout_visibility"] == "hidden" and results["score"] == 1.0  # the grade itself is whole
    assert [t["visibility"] for t in results["tests"]] == ["visible", "after_due_date"]
    everything_visible = gradescope.results_json(up, package.make_config(CHEAP))
    assert "Score: 1/5." in everything_visible["output"]


def test_package_prints_what_students_see_and_the_platform_settings(tmp_path, capsys):
    from labcheck import cli

    tests = package.graded_test_names(CHEAP)
    assert cli.main(["package", "gradescope", "--exercise", CHEAP, "--out", str(tmp_path / "a.zip"),
                     "--after-due-date", tests[-1]]) == 0
    out = capsys.readouterr().out
    assert "memory: 768 MB (Gradescope's default); the student's worker is limited to 384 MB" in out
    assert "CPUs: 1 recommended (0.5 by default" in out and "timeout: at least 10 min" in out
    assert f"shows a student {len(tests) - 1} of the {len(tests)} tests" in out and "no total score" in out
    assert json.loads(zipfile.ZipFile(tmp_path / "a.zip").read("labcheck/labcheck-package.json"))["memory_mb"] == 384
    assert cli.main(["package", "prairielearn", "--exercise", CHEAP, "--out", str(tmp_path / "q")]) == 0
    out = capsys.readouterr().out
    assert "memory: 2048 MB, the grader host's" in out and "limited to 1664 MB" in out and "timeout: 600 s" in out
    assert cli.main(["package", "gradescope", "--exercise", CHEAP, "--out", str(tmp_path / "b.zip"),
                     "--memory-mb", "512"]) == 2  # above what a 768 MB container leaves the worker
    assert "must leave the grader 384 MB" in capsys.readouterr().err
    assert cli.main(["package", "gradescope", "--exercise", CHEAP, "--out", str(tmp_path / "b.zip"),
                     "--container-memory-mb", "2048"]) == 0
    assert "memory: 2048 MB (raise it from Gradescope's default 768 MB)" in capsys.readouterr().out


def fake_install_tools(bin_dir: Path, log: Path) -> None:
    """Stand-ins for apt-get and python3 (whose venv's python records each call and answers the build check)."""
    bin_dir.mkdir(parents=True)
    recorder = f'#!/usr/bin/env bash\necho "$(basename "$0") $*" >> {log}\n'
    (bin_dir / "apt-get").write_text(recorder)
    (bin_dir / "python3").write_text(recorder + 'if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; '
                                     'cp "$0" "$3/bin/python"; fi\n')
    for tool in ("apt-get", "python3"):
        (bin_dir / tool).chmod(0o755)


@pytest.mark.parametrize("exercise, data", [("sgd", ["mnist"]), (CHEAP, ["fashion-mnist"])])
def test_setup_installs_the_cpu_build_and_only_the_exercises_data(tmp_path, exercise, data):
    """setup.sh, run with stand-ins that record what it asks apt-get and pip for: torch's CPU build first and
    pinned, then labcheck (its pins already met), the exercise's data set only, then the expected answers."""
    zip_path = gradescope.build(package.make_config(exercise), tmp_path / "a.zip")
    with zipfile.ZipFile(zip_path) as zf:
        zf.extract("setup.sh", tmp_path)
    log = tmp_path / "calls.log"
    fake_install_tools(tmp_path / "bin", log)
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "LABCHECK_VENV": str(tmp_path / "venv"),
           "LABCHECK_DATA": str(tmp_path / "data"), "LABCHECK_SOURCE": "/autograder/source/labcheck"}
    proc = subprocess.run(["bash", str(tmp_path / "setup.sh")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    pip = [c for c in calls if " pip install" in c]
    assert pip == ["python -m pip install -q --upgrade pip",
                   "python -m pip install -q --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 "
                   "torchvision==0.29.1",
                   "python -m pip install -q /autograder/source/labcheck"]
    assert any("torch.version.cuda" in c for c in calls)  # a CUDA build fails the image build
    assert ("dataset-fashion-mnist" in " ".join(calls)) == ("fashion-mnist" in data)
    assert [c for c in calls if "labcheck.cli data" in c] == [f"python -m labcheck.cli data --only {d}" for d in data]
    assert calls[-1] == "python -m labcheck.package.gradescope --warm --root /autograder"


BROKEN = "import torch\n\ndef mlp(X, ws, bs:\n    return X\n"


def test_a_syntax_error_is_named_in_the_students_file_and_nothing_is_graded(autograder_zip, tmp_path):
    root = autograder_root(autograder_zip, tmp_path, {f"{CHEAP}.py": BROKEN})
    results = run_autograder(root)
    assert results["score"] == 0 and all(t["score"] == 0 for t in results["tests"])
    assert f"{CHEAP}.py, line 3: SyntaxError" in results["output"] and "submission.py" not in results["output"]
    assert results["output"].startswith(f"Received {CHEAP}.py.") and "Graded" not in results["output"]
    assert "def mlp(X, ws, bs:" in results["tests"][0]["output"]
    assert results["execution_time"] < 30  # parsed, never run: no grader, no worker


def test_load_failure_is_recognised_only_when_every_test_failed_to_load():
    failed = {"status": "failed", "output": "[load_error] the submission could not be loaded: NameError: x"}
    assert package.load_failure({"tests": [failed, failed]}) == "the submission could not be loaded: NameError: x"
    assert package.load_failure({"tests": [failed, {**failed, "output": "[error] wrong"}]}) is None
    assert package.load_failure({"tests": []}) is None
    up = package.UploadResult(Path("w.py"), {"tests": [failed]}, ["Graded w.py."], 1.0,
                              problem="w.py could not be loaded, so no test could run:\nNameError: x")
    results = prairielearn.results_json(up, package.make_config(CHEAP, platform="prairielearn"))
    assert results["gradable"] is False and results["format_errors"][0].startswith("w.py could not be loaded")
    assert prairielearn_problems(results) == []


def test_package_command(tmp_path, capsys):
    from labcheck import cli

    assert cli.main(["package", "gradescope", "--exercise", CHEAP, "--out", str(tmp_path / "a.zip"),
                     "--hidden", "test_nope"]) == 2
    assert "no graded test 'test_nope'" in capsys.readouterr().err and not (tmp_path / "a.zip").exists()
    assert cli.main(["package", "gradescope", "--exercise", CHEAP, "--out", str(tmp_path / "a.zip")]) == 0
    assert cli.main(["package", "prairielearn", "--exercise", CHEAP, "--out", str(tmp_path / "q")]) == 0
    assert zipfile.is_zipfile(tmp_path / "a.zip") and (tmp_path / "q" / "info.json").is_file()


def test_an_upload_without_a_gradable_file_is_told_what_to_submit(autograder_zip, tmp_path):
    root = autograder_root(autograder_zip, tmp_path, {"notes.txt": "hi", "a.py": "", "b.py": ""})
    results = run_autograder(root)
    assert results["score"] == 0 and results["tests"] and all(t["score"] == 0 for t in results["tests"])
    assert f"expected {CHEAP}.py or a notebook" in results["output"] and "a.py, b.py, notes.txt" in results["output"]


def test_hostile_submission_through_gradescope(autograder_zip, tmp_path):
    """Grades exactly like the buggy example it extends: reading the reference failed, no forgery stuck. The
    expected answers are filled first, as setup.sh does at image build: the grading computes none."""
    root = autograder_root(autograder_zip, tmp_path, {f"{CHEAP}.py": hostile_source(CHEAP)})
    env = {**os.environ, "LABCHECK_HOME": str(root / "source" / "labcheck")}
    env.pop("LABCHECK_EXPECTED_CACHE", None)
    warm = subprocess.run([sys.executable, "-m", "labcheck.package.gradescope", "--warm", "--root", str(root)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert warm.returncode == 0 and "expected answers of" in warm.stdout, warm.stdout + warm.stderr
    assert list((root / "source" / "labcheck" / "expected").rglob("*.bin"))
    before = tree_hashes(root / "source")
    results = run_autograder(root)
    assert results["extra_data"]["labcheck"]["expected_computed"] == 0
    assert lost_tests(results["tests"]) == set(grade.expected_failures(buggy_example(CHEAP)))
    assert tree_hashes(root / "source") == before
    assert not [f for f in root.rglob("*") if f.is_file() and "submission" not in f.relative_to(root).parts
                and FORGED in f.read_text(errors="ignore")]
    assert results["tests"][-1]["visibility"] == "after_due_date"
    later = package.graded_test_names(CHEAP)[-1]  # shown after the due date: no total, name or message before
    assert "Score:" not in results["output"] and later not in results["output"]
    assert "Tests shown now:" in results["output"]
    assert results["execution_time"] > 0 and f"Graded {CHEAP}.py." in results["output"]
    # Gradescope's submission_metadata.json is kept for the instructor (labcheck.roster reads it)
    assert results["extra_data"]["labcheck"]["submission_metadata"]["students"] == [
        {"name": None, "email": "s@example.edu", "sid": None}]


@pytest.mark.slow
@pytest.mark.parametrize("example", ["correct", "buggy"])
def test_bundled_examples_through_gradescope(autograder_zip, tmp_path, example):
    path = REGISTRY[CHEAP].examples_dir / "correct.py" if example == "correct" else buggy_example(CHEAP)
    results = run_autograder(autograder_root(autograder_zip, tmp_path, {f"{CHEAP}.py": path.read_text()}))
    assert lost_tests(results["tests"]) == set(grade.expected_failures(path))
    assert results["score"] == pytest.approx(sum(t["score"] for t in results["tests"]))


# ---------------------------------------------------------------------------------------------
# PrairieLearn


@pytest.fixture(scope="module")
def question(tmp_path_factory) -> Path:
    config = package.make_config(CHEAP)
    return prairielearn.build(config, tmp_path_factory.mktemp("pl") / "question", image="course/labcheck-grader")


def grade_root(question: Path, tmp: Path, files: dict[str, str]) -> Path:
    """A folder laid out as PrairieLearn's /grade: tests/ (the question's), student/, data/."""
    root = tmp / "grade"
    shutil.copytree(question / "tests", root / "tests")
    (root / "student").mkdir()
    for name, text in files.items():
        (root / "student" / name).write_text(text)
    (root / "data").mkdir()
    (root / "data" / "data.json").write_text(json.dumps({"params": {}, "submitted_answers": {}}))
    return root


def run_pl(root: Path) -> dict:
    env = {**os.environ, "GRADE_ROOT": str(root), "LABCHECK_PYTHON": sys.executable}
    env.pop("LABCHECK_EXPECTED_CACHE", None)  # the question's own, as on PrairieLearn
    entry = json.loads((root / "tests" / "labcheck" / "labcheck-package.json").read_text())  # config present
    assert entry["exercise"] == CHEAP
    proc = subprocess.run([str(root / "tests" / "run.sh")], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    assert prairielearn_problems(results) == []
    return results


def test_question_folder_layout(question):
    info = json.loads((question / "info.json").read_text())
    assert info_json_problems(info) == []
    assert info["externalGradingOptions"]["entrypoint"] == "/grade/tests/run.sh"
    html = (question / "question.html").read_text()
    assert re.search(rf'<pl-file-upload optional-file-names="{CHEAP}\.py, submission\.py, {CHEAP}\.ipynb">', html)
    assert "<pl-external-grader-results>" in html
    assert os.access(question / "tests" / "run.sh", os.X_OK)
    assert (question / "tests" / "labcheck" / "exercises" / CHEAP / "reference.py").is_file()
    image = {str(p.relative_to(question / "image")) for p in (question / "image").rglob("*") if p.is_file()}
    assert {"Dockerfile", "setup.sh", "labcheck/pyproject.toml", "labcheck/src/labcheck/grade.py"} <= image
    # a public image holds no solution: no exercise folder, no reference or contract tests (labcheck's own
    # modules, contracts.py say, and its exercise template, a softmax, are no course's)
    assert not [p for p in image if "exercises/" in p or (("reference" in p or "contract" in p)
                                                          and not p.startswith("labcheck/src/labcheck/"))]
    subprocess.run(["bash", "-n", str(question / "tests" / "run.sh")], check=True)


def test_regenerating_a_question_keeps_its_uuid(question):
    first = json.loads((question / "info.json").read_text())["uuid"]
    prairielearn.build(package.make_config(CHEAP), question, image="course/labcheck-grader")
    assert json.loads((question / "info.json").read_text())["uuid"] == first


def test_prairielearn_upload_without_a_gradable_file_is_not_gradable(question, tmp_path):
    results = run_pl(grade_root(question, tmp_path, {"answer.txt": "42"}))
    assert results["gradable"] is False and f"expected {CHEAP}.py or a notebook" in results["format_errors"][0]
    assert "answer.txt" in results["format_errors"][0]  # what the student did upload


def test_prairielearn_syntax_error_is_not_gradable_and_names_the_students_file(question, tmp_path):
    results = run_pl(grade_root(question, tmp_path, {f"{CHEAP}.py": BROKEN}))
    assert results["gradable"] is False and "tests" not in results
    assert results["format_errors"][0].startswith(f"{CHEAP}.py could not be parsed")
    assert f"{CHEAP}.py, line 3: SyntaxError" in results["format_errors"][0]
    assert "submission.py" not in json.dumps(results) and "Graded" not in json.dumps(results)
    assert results["message"] == (f"{CHEAP}.py could not be parsed, so nothing of it was graded: {CHEAP}.py, line 3: "
                                  "SyntaxError: '(' was never closed")


def test_prairielearn_notebook_with_a_cell_python_cannot_parse_is_not_gradable(question, tmp_path):
    cells = [{"cell_type": "code", "metadata": {}, "execution_count": 1, "outputs": [], "source": "import torch"},
             {"cell_type": "code", "metadata": {}, "execution_count": 2, "outputs": [],
              "source": "def mlp(X, ws, bs:\n    return X"}]
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}
    results = run_pl(grade_root(question, tmp_path, {f"{CHEAP}.ipynb": json.dumps(nb)}))
    assert results["gradable"] is False and "cell 2" in results["format_errors"][0]
    assert f"{CHEAP}.ipynb, cell 2" in results["format_errors"][0]


def test_buggy_submission_through_prairielearn(question, tmp_path):
    """After `run.sh --warm` (run once in the image on the question's tests/), a job computes no reference
    answer: it would store it beside the others, and tests/ is left as it was."""
    path = buggy_example(CHEAP)
    root = grade_root(question, tmp_path, {f"{CHEAP}.py": path.read_text()})
    env = {**os.environ, "GRADE_ROOT": str(root), "LABCHECK_PYTHON": sys.executable}
    env.pop("LABCHECK_EXPECTED_CACHE", None)
    warm = subprocess.run([str(root / "tests" / "run.sh"), "--warm"], env=env, capture_output=True, text=True,
                          timeout=900)
    assert warm.returncode == 0 and "expected answers of" in warm.stdout, warm.stdout + warm.stderr
    before = tree_hashes(root / "tests")
    assert any(name.startswith("labcheck/expected/") for name in before)
    results = run_pl(root)
    assert tree_hashes(root / "tests") == before
    assert lost_tests(results["tests"], "points", "max_points") == set(grade.expected_failures(path))
    points = sum(t["points"] for t in results["tests"])
    assert results["score"] == pytest.approx(points / sum(t["max_points"] for t in results["tests"]), abs=1e-6)
    assert 0 < results["score"] < 1


@pytest.mark.slow
@pytest.mark.parametrize("example", ["correct", "hostile"])
def test_more_submissions_through_prairielearn(question, tmp_path, example):
    text = (REGISTRY[CHEAP].examples_dir / "correct.py").read_text() if example == "correct" else hostile_source(CHEAP)
    root = grade_root(question, tmp_path, {f"{CHEAP}.py": text})
    before = tree_hashes(root / "tests")
    results = run_pl(root)
    expected = set() if example == "correct" else set(grade.expected_failures(buggy_example(CHEAP)))
    assert lost_tests(results["tests"], "points", "max_points") == expected
    assert tree_hashes(root / "tests") == before
