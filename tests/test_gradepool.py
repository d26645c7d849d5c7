"""labcheck.gradepool: grader processes forked from a preloaded forkserver.

What must hold for the fork to replace `python -m pytest` per submission (grade.grader_command):
the same exit codes and log, no state carried from one graded child to the next (each is a fresh
copy of the server), the caller's current environment, and a process group that the overall cap
can stop as a whole, grandchildren included. End-to-end grading through the fork (hostile
submissions, a dying grader, Ctrl-C) is tests/test_grading.py, which runs with the default grader.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from labcheck import gradepool

PASSING = "def test_ok():\n    assert 1 + 1 == 2\n"
FAILING = "def test_bad():\n    assert 1 + 1 == 3\n"
# torch is preloaded in the server: a child that mutates it must not be seen by the next child.
LEAK_PROBE = """
import torch

def test_no_state_from_an_earlier_child():
    seen = getattr(torch, "_labcheck_gradepool_probe", 0)
    torch._labcheck_gradepool_probe = seen + 1
    torch.manual_seed(seen + 12345)  # global RNG state changed too
    assert seen == 0
"""
ENV_PROBE = """
import os

def test_environment_is_the_callers():
    assert os.environ.get("LABCHECK_GRADEPOOL_PROBE") == "set after the server started"
"""
HANG = """
import subprocess, sys, time

# The grandchild ignores SIGINT and says so by writing its pid (atomically) once it does.
GRANDCHILD = (
    "import os, signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "open('grandchild.tmp', 'w').write(str(os.getpid())); os.rename('grandchild.tmp', 'grandchild.pid'); "
    "time.sleep(600)")

def test_hang():
    subprocess.Popen([sys.executable, "-c", GRANDCHILD])
    time.sleep(600)
"""


def command(test_file):
    return [sys.executable, "-m", "pytest", str(test_file), "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]


def run(tmp_path, source, name="test_probe.py", timeout=120):
    test_file = tmp_path / name
    test_file.write_text(source)
    log = tmp_path / f"{name}.log"
    grader = gradepool.launch(command(test_file), log, tmp_path)
    return grader.wait(timeout=timeout), log.read_text()


def test_pytest_args_of_a_grader_command():
    assert gradepool.pytest_args(["/usr/bin/python3", "-m", "pytest", "t.py", "-q"]) == ["t.py", "-q"]
    with pytest.raises(ValueError, match="python -m pytest"):
        gradepool.pytest_args(["python", "t.py"])
    with pytest.raises(ValueError, match="python -m pytest"):
        gradepool.pytest_args(["pytest", "t.py"])


def test_exit_codes_and_log_are_pytests(tmp_path):
    code, log = run(tmp_path, PASSING, "test_pass.py")
    assert code == 0 and "1 passed" in log
    code, log = run(tmp_path, FAILING, "test_fail.py")
    assert code == 1 and "1 failed" in log and "assert (1 + 1) == 3" in log.replace("2 == 3", "(1 + 1) == 3")


def test_no_state_leaks_from_one_child_to_the_next(tmp_path):
    for i in range(3):
        code, log = run(tmp_path, LEAK_PROBE, f"test_leak_{i}.py")
        assert code == 0, log


def test_child_sees_the_callers_current_environment(tmp_path, monkeypatch):
    run(tmp_path, PASSING, "test_warm.py")  # the server is running before the variable exists
    monkeypatch.setenv("LABCHECK_GRADEPOOL_PROBE", "set after the server started")
    code, log = run(tmp_path, ENV_PROBE, "test_env.py")
    assert code == 0, log


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_hanging_child_times_out_and_its_group_is_stopped(tmp_path):
    test_file = tmp_path / "test_hang.py"
    test_file.write_text(HANG)
    grader = gradepool.launch(command(test_file), tmp_path / "hang.log", tmp_path)
    deadline = time.monotonic() + 120
    while not (tmp_path / "grandchild.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    with pytest.raises(subprocess.TimeoutExpired):
        grader.wait(timeout=0.5)
    assert os.getpgid(grader.pid) == grader.pid, "the child did not get a process group of its own"
    gradepool.signal_group(grader.pid, signal.SIGINT)  # as grade._stop: pytest ends its report
    code = grader.wait(timeout=60)
    assert code == 2 and "KeyboardInterrupt" in (tmp_path / "hang.log").read_text()
    assert _alive(grandchild), "the grandchild ignores SIGINT: only SIGKILL stops it"
    gradepool.signal_group(grader.pid, signal.SIGKILL)  # grade._stop's second signal: the whole group
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)
    gradepool.signal_group(grader.pid, signal.SIGKILL)  # a group that is gone: no error


def test_sigkill_reports_the_signal_as_a_negative_exit_code(tmp_path):
    test_file = tmp_path / "test_sleep.py"
    test_file.write_text("import time\n\ndef test_sleep():\n    time.sleep(600)\n")
    grader = gradepool.launch(command(test_file), tmp_path / "sleep.log", tmp_path)
    time.sleep(1.0)
    gradepool.signal_group(grader.pid, signal.SIGKILL)
    assert grader.wait(timeout=30) == -signal.SIGKILL


UNGUARDED_SCRIPT = """
import sys
from pathlib import Path
from labcheck import gradepool
here = Path(__file__).parent
with open(here / "script_runs.txt", "a") as f:  # once per run of this file's top level
    f.write("ran\\n")
grader = gradepool.launch([sys.executable, "-m", "pytest", str(here / "test_pass.py"), "-q", "-p", "no:cacheprovider"],
                          here / "script.log", here)
sys.exit(grader.wait(timeout=300))
"""


def test_a_callers_unguarded_script_is_not_rerun_in_the_child(tmp_path):
    (tmp_path / "test_pass.py").write_text(PASSING)
    script = tmp_path / "grade_my_class.py"
    script.write_text(UNGUARDED_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert (tmp_path / "script_runs.txt").read_text() == "ran\n"
    assert "1 passed" in (tmp_path / "script.log").read_text()
