"""`labcheck check FILE --exercise ID`: the public tests of a handout, run on the student's own machine.

    labcheck check sgd.ipynb --exercise sgd [--handout DIR]     (DIR: the handout; default FILE's folder)

A handout (labcheck.handout) carries the check as data in DIR/check/, laid out as a labcheck home
($LABCHECK_HOME) that holds no reference and no hidden test:
    handout.json           the manifest: exercise, public tests and points, how many tests stay hidden
    answers.bin            the reference's answers to the public tests (labcheck.answers)
    pytest.ini             the grader's pytest settings
    the public tests and the exercise's bands file, at the paths the registry gives them
The public tests run exactly as the grader runs a contract file (its own pytest process with the
labcheck plugin only, the student's code in a worker of labcheck.sandbox, at whatever confinement
this machine allows: it is the student's own code), except that `lab.expect` reads the answers file
instead of running the reference. So a public test fails with the grader's message, word for word.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHECK_DIR = "check"  # the self-check's folder inside a handout
MANIFEST = "handout.json"
ANSWERS = "answers.bin"
PYTEST_INI = "pytest.ini"


class HandoutError(RuntimeError):
    """No usable handout, or a handout whose check does not hold."""


def check_home(handout: Path) -> Path:
    return Path(handout) / CHECK_DIR


def read_manifest(handout: Path) -> dict:
    path = check_home(handout) / MANIFEST
    if not path.is_file():
        raise HandoutError(f"no handout at {handout} (expected {path}); pass the handout's folder with --handout")
    return json.loads(path.read_text())


def public_tests_file(home: Path, exercise: str) -> Path:
    """Where the public tests lie in a check home: the contract tests' path under LABCHECK_HOME=home."""
    from labcheck import paths
    from labcheck.exercises import get

    return Path(home) / get(exercise).contract_tests.relative_to(paths.repo_root())


def run_public_tests(submission: Path, exercise: str, home: Path, answers: tuple[str, Path],
                     extra: tuple[str, ...] = (), timeout: float = 900.0, secret: str | None = None) -> dict:
    """Run the public tests of the check home `home` on `submission`; returns the results.json it wrote.

    `answers` is ("--labcheck-answers", file) to read the reference's answers, or
    ("--labcheck-record-answers", file) to record them (then `extra` names the reference). `secret` is the
    handout's (its manifest's): the inputs its answers were recorded for (labcheck.secret)."""
    from labcheck.grade import GRADER_ENV, GRADER_PYTEST_ARGS

    home = Path(home).resolve()
    with tempfile.TemporaryDirectory(prefix="labcheck-check-") as tmp:
        results = Path(tmp) / "results.json"
        cmd = [sys.executable, "-m", "pytest", str(public_tests_file(home, exercise)), *GRADER_PYTEST_ARGS,
               "-c", str(home / PYTEST_INI), "--rootdir", str(home),
               "--labcheck-submission", str(Path(submission).resolve()), "--labcheck-exercise", exercise,
               "--labcheck-results", str(results), "--labcheck-min-isolation", "none",
               "--labcheck-expected-cache", "none", answers[0], str(Path(answers[1]).resolve()), *extra]
        if secret is not None:
            cmd += ["--labcheck-secret", secret]
        env = {**os.environ, **GRADER_ENV, "LABCHECK_HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=timeout)
        try:
            data = json.loads(results.read_text())
        except (OSError, ValueError):
            raise HandoutError(f"the public tests did not run (exit code {proc.returncode}):\n"
                               f"{(proc.stdout + proc.stderr)[-3000:]}") from None
    return data


def report(results: dict, manifest: dict, file_name: str) -> str:
    """What the student reads: each public test, its points and, where it failed, the grader's message."""
    from labcheck.dashboard import diagnosis, what_to_check
    from labcheck.report import first_lines

    tests = results.get("tests", [])
    width = max([len(t["name"]) for t in tests] + [10])
    lines = [f"labcheck check: {file_name} against the public tests of `{manifest['exercise']}` "
             f"({len(tests)} of {len(tests) + manifest['hidden_tests']} graded tests)", ""]
    for t in tests:
        passed = t["status"] == "passed"
        lines.append(f"  {'PASS' if passed else 'FAIL'}  {t['name']:{width}s}  {t['score']:g}/{t['max_score']:g}")
        if not passed:
            lines += [f"        {line}" for line in first_lines(t.get("output", "")).splitlines()]
            hint = what_to_check(t)
            if diagnosis(t.get("output", "")) not in hint:
                lines.append(f"        -> {hint}")
    lines += ["", f"Public tests: {results.get('score', 0):g}/{results.get('max_score', 0):g} points. "
                  f"{manifest['hidden_tests']} more tests ({manifest['hidden_points']:g} points) grade your "
                  "submission after you submit; passing the public ones does not mean passing those."]
    return "\n".join(lines)


def main(args) -> int:
    submission = Path(args.file)
    if not submission.exists():
        print(f"labcheck check: no such file: {submission}", file=sys.stderr)
        return 2
    handout = Path(args.handout) if args.handout else submission.resolve().parent
    try:
        manifest = read_manifest(handout)
        if manifest["exercise"] != args.exercise:
            raise HandoutError(f"the handout at {handout} is for `{manifest['exercise']}`, not `{args.exercise}`")
        home = check_home(handout)
        results = run_public_tests(submission, args.exercise, home, ("--labcheck-answers", home / ANSWERS),
                                   secret=manifest.get("secret"))
    except HandoutError as e:
        print(f"labcheck check: {e}", file=sys.stderr)
        return 2
    print(report(results, manifest, submission.name))
    return 0 if all(t["status"] == "passed" for t in results.get("tests", [])) else 1
