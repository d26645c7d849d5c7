"""Workers forked from a worker zygote (labcheck.untrusted.zygote, labcheck.sandbox.WorkerZygote): one
student's worker leaves nothing for the next one's, cannot reach into the zygote, and a zygote that a
submission broke costs only that submission a fresh worker. The same single-call behaviour as a fresh
worker is in test_sandbox.py (its `box` runs both), grading end to end in test_examples.py and
test_grading.py (labcheck grade forks every worker)."""
import json
import os
import re

import pytest

from labcheck import grade, paths, sandbox, zygote_client
from labcheck.sandbox import Limits, Sandbox

CASES = paths.tests_dir() / "hostile" / "zygote"  # submissions aimed at the zygote, each saying what it does
LEAVE_RESIDUE, LOOK_AROUND, KILL_THE_ZYGOTE = (CASES / f"{name}.py" for name in
                                                ("leave_residue", "look_around", "kill_the_zygote"))


def look(zygote) -> dict:
    with Sandbox(LOOK_AROUND, "_selftest", Limits(timeout=30), zygote=zygote) as box:
        seen = box.call("call", name="add", args=[0, 0])
        assert "forked from a zygote" in box.isolation["details"]
    return seen


def test_nothing_one_students_worker_leaves_reaches_the_next(worker_zygote):
    zygote = worker_zygote
    before = look(zygote)
    with Sandbox(LEAVE_RESIDUE, "_selftest", Limits(timeout=30), zygote=zygote) as box:
        made, reached = box.call("call", name="add", args=[0, 0])
    assert len(made) == 5  # every file was really written
    assert "Permission denied" in reached or "Operation not permitted" in reached  # the zygote is not dumpable
    after = look(zygote)
    # the next child sees exactly what the first saw, but for its own scratch's number (child-N)
    same = lambda seen: re.sub(r"child-[0-9]+", "child-N", json.dumps(seen, sort_keys=True))  # noqa: E731
    assert same(after) == same(before)
    assert not any("left" in name for names in after.values() for name in names)
    assert zygote.idle()


def test_the_zygote_holds_no_name_or_path_of_a_submission(tmp_path, worker_zygote, monkeypatch):
    """The zygote's memory is every later child's: the request it gets names no student's file."""
    sent = []
    real = zygote_client.socket.send_fds

    def spy(sock, buffers, fds, *args):
        sent.append(b"".join(buffers).decode())
        return real(sock, buffers, fds, *args)

    path = tmp_path / "alice_smith_sgd.py"
    path.write_bytes(LOOK_AROUND.read_bytes())
    monkeypatch.setattr(zygote_client.socket, "send_fds", spy)
    with Sandbox(path, "_selftest", Limits(timeout=30), zygote=worker_zygote) as box:
        box.call("call", name="add", args=[0, 0])
    assert sent and not any("alice_smith" in text or str(tmp_path) in text for text in sent)


def test_a_submission_that_kills_its_zygote_costs_the_next_one_only_a_fresh_worker(worker_zygote):
    zygote = sandbox.WorkerZygote.start(Limits(), ("_selftest",))  # its own (worker_zygote: bubblewrap works)
    try:
        with Sandbox(KILL_THE_ZYGOTE, "_selftest", Limits(timeout=30), zygote=zygote) as box:
            assert box.call("call", name="add", args=[1, 2]) == 3  # its own worker lives on, orphaned
        assert not zygote.alive() and not zygote.idle()
        with Sandbox(LOOK_AROUND, "_selftest", Limits(timeout=30), zygote=zygote) as box:
            assert "/tmp" in box.call("call", name="add", args=[0, 0])
            assert "forked from a zygote" not in box.isolation["details"]
            assert box.isolation["level"] == "whitelist-fs"
    finally:
        zygote.close()


def test_labcheck_grade_forks_each_worker_from_a_zygote_per_job(tmp_path):
    """Three submissions, one job: one zygote serves all three in turn, each with its own verdict. (That
    the verdicts equal fresh workers' is checked by test_examples.py's expected failures and by the
    grading benchmark, which grades a class both ways.)"""
    hostile = paths.tests_dir() / "hostile"
    subs = [grade.Submission(name=f"{name}-{i}", path=hostile / f"{name}.py", exercise="_selftest",
                             tests=hostile / "contract_selftest.py")
            for i, name in enumerate(("correct", "sys_exit_in_call", "correct"))]
    opts = grade.Options(out=tmp_path, jobs=1, timeout=20,
                         extra_pytest_args=("--labcheck-reference", str(hostile / "reference_selftest.py")))
    results = grade.grade_many(subs, opts)
    assert {name: r["score"] for name, r in results.items()} == {"correct-0": 6.0, "sys_exit_in_call-1": 5.0,
                                                                 "correct-2": 6.0}
    for r in results.values():
        assert "forked from a zygote" in r["extra_data"]["labcheck"]["isolation"]["details"]


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



LOCK_THE_HOME = (CASES / "lock_the_home.py", CASES / "lock_the_home_notebook.ipynb")


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_submission_that_locks_the_zygotes_folders_zeroes_nobody_after_it(tmp_path, jobs):
    """Issue #22: at import, a submission fchmods the zygote's home, the folder above it, /tmp, /dev/shm and
    /dev/null to 0. Before, the zygote's clean-up read the unlistable home as empty, reported clean, and every
    student after it on that job got 0. Now it puts the permissions back (or reports not clean and is
    replaced): the innocents around both attacks (.py and a notebook's default argument) keep full marks."""
    hostile = paths.tests_dir() / "hostile"
    order = [hostile / "correct.py", LOCK_THE_HOME[0], hostile / "correct.py", LOCK_THE_HOME[1],
             hostile / "correct.py", hostile / "correct.py"]
    subs = [grade.Submission(name=f"{path.stem}-{i}", path=path, exercise="_selftest",
                             tests=hostile / "contract_selftest.py") for i, path in enumerate(order)]
    opts = grade.Options(out=tmp_path, jobs=jobs, timeout=20,
                         extra_pytest_args=("--labcheck-reference", str(hostile / "reference_selftest.py")))
    results = grade.grade_many(subs, opts)
    assert {name: r["score"] for name, r in results.items()} == {sub.name: 6.0 for sub in subs}, {
        name: [t.get("output", "")[:200] for t in r["tests"] if t["score"] < t["max_score"]]
        for name, r in results.items()}
    for r in results.values():
        assert "forked from a zygote" in r["extra_data"]["labcheck"]["isolation"]["details"]


def test_a_zygote_whose_clean_up_cannot_look_reports_not_clean():
    """The clean-up's own check: a folder it cannot read is never 'clean' (it was: an unlistable folder read as
    an empty one, and an empty one was what it had kept)."""
    from labcheck.untrusted import zygote

    import tempfile

    with tempfile.TemporaryDirectory() as top:
        home = os.path.join(top, "home")
        os.mkdir(home)
        writable = (home,)
        folders = zygote._watched(writable)
        kept = zygote._state(folders, writable)
        assert kept is not None and folders[0] == "/" and folders[-1] == home
        os.chmod(home, 0)
        os.mkdir(os.path.join(top, "other"))  # (a parent's listing is not watched: only its mode)
        assert zygote._put_back(kept, folders, writable)  # the zygote owns it: the mode goes back
        assert zygote._state(folders, writable) == kept
        os.chmod(home, 0)
        real_chmod = os.chmod
        try:
            os.chmod = lambda *a, **k: (_ for _ in ()).throw(PermissionError("refused"))  # as for a host-owned folder
            assert not zygote._put_back(kept, folders, writable)
        finally:
            os.chmod = real_chmod
            os.chmod(home, 0o700)
