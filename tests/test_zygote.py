"""Workers forked from a worker zygote (labcheck.untrusted.zygote, labcheck.sandbox.WorkerZygote): one
student's worker leaves nothing for the next one's, cannot reach into the zygote, and a zygote that a
submission broke costs only that submission a fresh worker. The same single-call behaviour as a fresh
worker is in test_sandbox.py (its `box` runs both), grading end to end in test_examples.py and
test_grading.py (labcheck grade forks every worker)."""
import json
import os
import re
import subprocess
import sys

import pytest

from labcheck import grade, paths, sandbox
from labcheck.sandbox import Limits, Sandbox
from tests.test_isolation import as_nobody  # noqa: F401  (the fixture: drop to user nobody)

# Writes with torch's own file code (C++, no audit event): what the audit hook cannot see, only the
# zygote's clean-up can remove. Then it tries to reach into the zygote's memory, past the hook too.
LEAVE_RESIDUE = '''
import os
import torch

def add(a, b):
    made = []
    for path in ("/tmp/left", "/dev/shm/left", "/dev/left", "left", os.environ["HOME"] + "/../../left-up"):
        torch.from_file(path, shared=True, size=8)
        made.append(path)
    os.mkdir("locked")
    torch.from_file("locked/inside", shared=True, size=8)
    os.chmod("locked", 0)
    try:
        torch.from_file(f"/proc/{os.getppid()}/mem", shared=False, size=8)
        reached = "read the zygote's memory"
    except RuntimeError as e:
        reached = str(e)
    return [made, reached]
'''

LOOK_AROUND = '''
import os

def listing(folder):
    return sorted(os.listdir(folder))

def add(a, b):
    here = os.getcwd()
    return {name: listing(name) for name in ("/tmp", "/dev/shm", "/dev", here, here + "/..", here + "/../..")}
'''

KILL_THE_ZYGOTE = '''
import os
import signal

def add(a, b):
    signal.pidfd_send_signal(os.pidfd_open(os.getppid()), signal.SIGKILL)  # (no audit event for this one)
    return a + b
'''


def submission(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def look(tmp_path, zygote) -> dict:
    with Sandbox(submission(tmp_path, "look.py", LOOK_AROUND), "_selftest", Limits(timeout=30), zygote=zygote) as box:
        seen = box.call("call", name="add", args=[0, 0])
        assert "forked from a zygote" in box.isolation["details"]
    return seen


def test_nothing_one_students_worker_leaves_reaches_the_next(tmp_path, worker_zygote):
    zygote = worker_zygote
    before = look(tmp_path, zygote)
    with Sandbox(submission(tmp_path, "residue.py", LEAVE_RESIDUE), "_selftest", Limits(timeout=30),
                 zygote=zygote) as box:
        made, reached = box.call("call", name="add", args=[0, 0])
    assert len(made) == 5  # every file was really written
    assert "Permission denied" in reached or "Operation not permitted" in reached  # the zygote is not dumpable
    after = look(tmp_path, zygote)
    # the next child sees exactly what the first saw, but for its own scratch's number (child-N)
    same = lambda seen: re.sub(r"child-[0-9]+", "child-N", json.dumps(seen, sort_keys=True))  # noqa: E731
    assert same(after) == same(before)
    assert not any("left" in name for names in after.values() for name in names)
    assert zygote.idle()


def test_the_zygote_holds_no_name_or_path_of_a_submission(tmp_path, worker_zygote):
    zygote = worker_zygote
    """The zygote's memory is every later child's: the request it gets names no student's file."""
    sent = []
    real = sandbox.socket.send_fds

    def spy(sock, buffers, fds, *args):
        sent.append(b"".join(buffers).decode())
        return real(sock, buffers, fds, *args)

    path = submission(tmp_path, "alice_smith_sgd.py", LOOK_AROUND)
    sandbox.socket.send_fds = spy
    try:
        with Sandbox(path, "_selftest", Limits(timeout=30), zygote=zygote) as box:
            box.call("call", name="add", args=[0, 0])
    finally:
        sandbox.socket.send_fds = real
    assert sent and not any("alice_smith" in text or str(tmp_path) in text for text in sent)


def test_a_submission_that_kills_its_zygote_costs_the_next_one_only_a_fresh_worker(tmp_path, worker_zygote):
    zygote = sandbox.WorkerZygote.start(Limits(), ("_selftest",))  # its own (worker_zygote: bubblewrap works)
    try:
        with Sandbox(submission(tmp_path, "killer.py", KILL_THE_ZYGOTE), "_selftest", Limits(timeout=30),
                     zygote=zygote) as box:
            assert box.call("call", name="add", args=[1, 2]) == 3  # its own worker lives on, orphaned
        assert not zygote.alive() and not zygote.idle()
        with Sandbox(submission(tmp_path, "look.py", LOOK_AROUND), "_selftest", Limits(timeout=30),
                     zygote=zygote) as box:
            assert "/tmp" in box.call("call", name="add", args=[0, 0])
            assert "forked from a zygote" not in box.isolation["details"]
            assert box.isolation["level"] == "whitelist-fs"
    finally:
        zygote.close()


def test_labcheck_grade_forks_each_worker_from_a_zygote_per_job(tmp_path):
    """Three submissions, one job: one zygote serves all three in turn, with the verdicts of fresh workers."""
    hostile = paths.tests_dir() / "hostile"
    subs = [grade.Submission(name=f"{name}-{i}", path=hostile / f"{name}.py", exercise="_selftest",
                             tests=hostile / "contract_selftest.py")
            for i, name in enumerate(("correct", "sys_exit_in_call", "correct"))]
    scores = {}
    for worker in ("fork", "fresh"):
        opts = grade.Options(out=tmp_path / worker, jobs=1, timeout=20, worker=worker,
                             extra_pytest_args=("--labcheck-reference", str(hostile / "reference_selftest.py")))
        results = grade.grade_many(subs, opts)
        scores[worker] = {name: r["score"] for name, r in results.items()}
        for r in results.values():
            details = r["extra_data"]["labcheck"]["isolation"]["details"]
            assert ("forked from a zygote" in details) == (worker == "fork")
    assert scores["fork"] == scores["fresh"]
    assert scores["fork"]["correct-0"] == scores["fork"]["correct-2"] > scores["fork"]["sys_exit_in_call-1"]


def test_a_grader_ended_abnormally_returns_no_zygote_to_the_pool(tmp_path):
    zygotes = grade.WorkerZygotes(grade.Options(out=tmp_path), {"_selftest"})
    z = zygotes.borrow()
    if z is None:
        pytest.skip("no bubblewrap here")
    zygotes.give_back(z, grader_ended_normally=False)
    assert not z.alive()
    fresh = zygotes.borrow()
    assert fresh is not z and fresh.idle()
    zygotes.give_back(fresh, grader_ended_normally=True)
    assert zygotes.borrow() is fresh  # a zygote left idle is lent again
    zygotes.give_back(fresh, grader_ended_normally=True)
    zygotes.close()
    assert not fresh.alive()


AS_NOBODY = '''
import json, sys
from pathlib import Path
from labcheck import grade
from labcheck.sandbox import Limits, Sandbox, WorkerZygote

hostile, work = Path(sys.argv[1]), Path(sys.argv[2])
zygote = WorkerZygote.start(Limits(), ("_selftest",))
seen = {}
for name, text in (("residue", sys.argv[3]), ("look", sys.argv[4])):
    (work / f"{name}.py").write_text(text)
    with Sandbox(work / f"{name}.py", "_selftest", Limits(timeout=30), zygote=zygote) as box:
        seen[name] = box.call("call", name="add", args=[0, 0])
zygote.close()
subs = [grade.Submission(name=n, path=hostile / f"{n}.py", exercise="_selftest", tests=hostile / "contract_selftest.py")
        for n in ("correct", "read_reference")]
opts = grade.Options(out=work / "grades", jobs=1, timeout=20,
                     extra_pytest_args=("--labcheck-reference", str(hostile / "reference_selftest.py")))
results = grade.grade_many(subs, opts)
print(json.dumps({"seen": seen, "graded": {n: [r["score"], r["extra_data"]["labcheck"]["isolation"]]
                                          for n, r in results.items()}}))
'''


def test_an_ordinary_user_gets_the_same_zygote_and_its_guarantees(as_nobody):
    """As `nobody` (no capability anywhere): forked workers grade the hostile corpus' thief and a correct
    submission at full marks, and one child can neither reach the zygote's memory nor leave files."""
    prefix, work = as_nobody
    env = {"PATH": os.environ["PATH"], "HOME": str(work), "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
    hostile = paths.tests_dir() / "hostile"
    out = subprocess.run([*prefix, sys.executable, "-c", AS_NOBODY, str(hostile), str(work), LEAVE_RESIDUE,
                          LOOK_AROUND], cwd=work, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    made, reached = report["seen"]["residue"]
    assert len(made) == 5 and ("Permission denied" in reached or "Operation not permitted" in reached), reached
    assert not any("left" in name for names in report["seen"]["look"].values() for name in names)
    for name, (score, isolation) in report["graded"].items():
        assert score == 6.0 and isolation["level"] == "whitelist-fs", (name, isolation)
        assert "forked from a zygote" in isolation["details"], (name, isolation)
