"""A replay table recorded on one grading run earns nothing on the next (issue #22 item 3).

Every graded input is drawn from the run's secret (labcheck.secret). The attack: a submission whose contract
functions are all wrong, but which answers every call of the worker from a table of the reference's answers
looked up by a hash of the call's inputs (as recorded on an earlier run: from feedback, or by resubmitting;
here, exactly, with the plugin's --labcheck-record-answers). Graded again with the run's secret it scores full
marks: that is what every run was before, when the inputs never changed. Graded with another secret, it scores
what its own code earns: nothing.

A cheaper check covers every exercise: run its contract tests on the reference in-process under two secrets
and record every graded call's inputs; no input of one run comes again in the other (so no table keyed by
them can answer), and the reference passes under both.
"""
import base64
import json
import zlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labcheck import grade, paths
from labcheck.exercises import EXERCISES, get

# The two whose tables the issue built (14 MB and 19 KB); sgd's three gradings take ~5 min here: `-m slow`.
REPLAY_EXERCISES = [pytest.param("sgd", marks=pytest.mark.slow), "width"]

REPLAY = '''
"""Every contract function is wrong; every worker call is answered from a table of the reference's answers,
keyed by a hash of the call's inputs (labcheck.answers' keys), when the table has the inputs."""
import base64, hashlib, sys, zlib

from labcheck import wire

_TABLE = wire.decode(zlib.decompress(base64.b64decode(TABLE)))
_calls = sys.modules["labcheck_calls_{exercise}"]


def _replaying(name, real):
    def replay(impl, **kwargs):
        h = hashlib.sha256(b"labcheck answers v1")
        h.update(b"{exercise}\\0" + name.encode() + b"\\0")
        h.update(wire.encode(kwargs))
        entry = _TABLE["answers"].get(h.hexdigest())
        return entry["raw"] if entry is not None else real(impl, **kwargs)
    return replay


for _name in list(_calls.CALLS):
    _calls.CALLS[_name] = _replaying(_name, _calls.CALLS[_name])


def _wrong(*args, **kwargs):
    raise NotImplementedError("no code of my own")


{names}
'''


def contract_names(exercise: str) -> list[str]:
    from labcheck import contracts

    return [entry.name for entry in contracts.read(exercise).entries]


def replay_submission(exercise: str, book: Path, folder: Path) -> Path:
    table = base64.b64encode(zlib.compress(book.read_bytes(), 1)).decode()
    names = "\n".join(f"{name} = _wrong" for name in contract_names(exercise))
    source = f"TABLE = {table!r}\n" + REPLAY.replace("{exercise}", exercise).replace("{names}", names)
    path = folder / f"replay_{exercise}.py"
    path.write_text(source)
    return path


def graded(exercise: str, submission: Path, secret: str, results: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "pytest", str(get(exercise).contract_tests), *grade.GRADER_PYTEST_ARGS,
           "--labcheck-exercise", exercise, "--labcheck-submission", str(submission), "--labcheck-results",
           str(results), "--labcheck-secret", secret, *extra]
    subprocess.run(cmd, cwd=paths.repo_root(), capture_output=True, timeout=1200, env={**os.environ, **grade.GRADER_ENV})
    data = json.loads(results.read_text())
    return {"score": sum(t["score"] for t in data["tests"]), "max_score": sum(t["max_score"] for t in data["tests"]),
            "tests": data["tests"]}


@pytest.mark.parametrize("exercise", REPLAY_EXERCISES)
def test_a_replay_table_recorded_on_one_run_earns_nothing_on_the_next(exercise, tmp_path):
    book = tmp_path / "answers.bin"
    recorded = graded(exercise, get(exercise).examples_dir / "correct.py", "first run", tmp_path / "first.json",
                      "--labcheck-record-answers", str(book))
    assert recorded["score"] == recorded["max_score"] > 0
    replay = replay_submission(exercise, book, tmp_path)
    again = graded(exercise, replay, "first run", tmp_path / "again.json")
    assert again["score"] == again["max_score"], (  # the table works where the inputs repeat ...
        [(t["name"], t["output"][:200]) for t in again["tests"] if t["score"] < t["max_score"]])
    next_run = graded(exercise, replay, "next run", tmp_path / "next.json")
    assert next_run["score"] == 0, (  # ... and answers nothing on a run with a secret of its own
        [(t["name"], t["score"]) for t in next_run["tests"] if t["score"] > 0])


# ---------------------------------------------------------------------------------------------
# Every exercise: no graded input repeats from one secret to another


RECORDER = '''
"""Test plugin: every graded call runs on the reference in this process (lab.call = lab.expect), and the
hash of each call's name and wire-encoded inputs is written to $LABCHECK_SEEN at the end."""
import hashlib, json, os

from labcheck import plugin, wire

SEEN = []


def _recording(method):
    def run(self, probe, **kwargs):
        spec = self.probes[probe]
        inputs = spec.inputs(**kwargs)
        if inputs:  # (a call without inputs, such as batchnorm's `ready`, has nothing a table could look up)
            digest = hashlib.sha256(spec.call.encode() + b"\\0" + wire.encode(inputs)).hexdigest()
            SEEN.append(f"{spec.call}:{digest}")
        return plugin.LabSession.expect_in_process(self, probe, **kwargs)
    return run


plugin.LabSession.expect_in_process = plugin.LabSession.expect
plugin.LabSession.call = _recording(plugin.LabSession.call)
plugin.LabSession.expect = _recording(plugin.LabSession.expect)


def pytest_sessionfinish(session):
    with open(os.environ["LABCHECK_SEEN"], "w") as f:
        json.dump(SEEN, f)
'''


def inputs_seen(exercise: str, secret: str, tmp_path: Path) -> tuple[set[str], dict]:
    (tmp_path / "labcheck_replay_recorder.py").write_text(RECORDER)
    seen, results = tmp_path / f"seen-{secret}.json", tmp_path / f"results-{secret}.json"
    cmd = [sys.executable, "-m", "pytest", str(get(exercise).contract_tests), *grade.GRADER_PYTEST_ARGS,
           "-p", "labcheck_replay_recorder", "--labcheck-exercise", exercise, "--labcheck-secret", secret,
           "--labcheck-expected-cache", "none", "--labcheck-results", str(results)]
    env = {**os.environ, **grade.GRADER_ENV, "LABCHECK_SEEN": str(seen),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(cmd, cwd=paths.repo_root(), capture_output=True, text=True, timeout=1800, env=env)
    assert seen.is_file(), out.stdout[-3000:] + out.stderr[-3000:]
    return set(json.loads(seen.read_text())), json.loads(results.read_text())


@pytest.mark.parametrize("exercise", EXERCISES)
def test_no_graded_input_repeats_from_one_secret_to_another(exercise, tmp_path):
    first, first_results = inputs_seen(exercise, "one run", tmp_path)
    second, second_results = inputs_seen(exercise, "another run", tmp_path)
    for results in (first_results, second_results):  # the reference passes whatever the inputs
        failed = [(t["name"], t["output"][:300]) for t in results["tests"] if t["status"] != "passed"]
        assert not failed and results["tests"], failed
    assert first and second
    assert not first & second, f"{len(first & second)} graded calls of {exercise} had the same inputs in both runs"
