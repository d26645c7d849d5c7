"""labcheck.sandbox and the worker (labcheck.untrusted) at the level of single calls; grading end to end is in
test_grading.py, confinement levels and bubblewrap in test_isolation.py."""
import json
import os
import time
from pathlib import Path

import pytest
import torch

from labcheck import isolation, sandbox, submission
from labcheck.sandbox import Limits, Sandbox, SubmissionFailure

PROBE_TARGETS = '''
import os
import sys
import torch

def add(a, b):
    return a + b

def boom():
    raise ValueError("student bug")

def leave():
    sys.exit(3)

def die():
    os._exit(4)

def spin():
    while True:
        pass

def big(n):
    return torch.zeros(n)

def meta():
    return torch.empty(2, device="meta")

def forge(a, b):
    import struct
    from labcheck import wire
    payload = wire.encode({"status": "ok", "value": 999})
    for fd in range(1, 32):  # a forged reply on every descriptor, the protocol's included
        try:
            os.write(fd, struct.pack(">Q", len(payload)) + payload)
        except OSError:
            pass
    return a + b

def bad_str():
    class Nasty(Exception):
        def __str__(self):
            raise RuntimeError("no message for you")
    raise Nasty()
'''


@pytest.fixture(scope="module", params=["fresh", "forked"])
def box(request, tmp_path_factory):
    """The same tests against a fresh worker and one forked from a worker zygote (labcheck grade's default)."""
    path = tmp_path_factory.mktemp("sub") / "student.py"
    path.write_text(PROBE_TARGETS)
    zygote = request.getfixturevalue("worker_zygote") if request.param == "forked" else None
    with Sandbox(path, "_selftest", Limits(timeout=10, max_reply_mb=1), zygote=zygote) as b:
        b.call("call", name="add", args=[0, 0])
        assert ("forked from a zygote" in b.isolation["details"]) == (zygote is not None)
        yield b


def call(box, name, *args):
    return box.call("call", name=name, args=list(args))


def test_values_come_back_as_plain_data(box):
    assert call(box, "add", 2, 3) == 5
    t = call(box, "add", torch.ones(2), torch.ones(2))
    assert isinstance(t, torch.Tensor) and t.tolist() == [2.0, 2.0]


@pytest.mark.parametrize("name, kind, text", [
    ("boom", "error", "ValueError: student bug"),
    ("leave", "error", "SystemExit: 3"),
    ("bad_str", "error", "Nasty"),
    ("meta", "error", "cannot be checked"),
    ("missing", "contract", "does not define `missing`"),
])
def test_student_failures_become_per_call_messages(box, name, kind, text):
    with pytest.raises(SubmissionFailure) as e:
        call(box, name)
    assert e.value.kind == kind and text in str(e.value)
    assert call(box, "add", 1, 1) == 2  # and the worker keeps serving


def test_forged_reply_frames_are_skipped(box):
    assert call(box, "forge", 2, 3) == 5
    assert call(box, "add", 1, 2) == 3  # and the protocol stays in step


def test_replies_over_the_size_limit_are_refused(box):
    with pytest.raises(SubmissionFailure, match="more than the 1 MB limit"):
        call(box, "big", 1_000_000)  # 4 MB
    assert call(box, "big", 10).shape == (10,)


def test_exit_and_timeout_restart_the_worker(box):
    with pytest.raises(SubmissionFailure, match="exit code 4") as e:
        call(box, "die")
    assert e.value.kind == "crash"
    box.limits.timeout = 2
    try:
        with pytest.raises(SubmissionFailure, match="did not return within 2 s"):
            call(box, "spin")
    finally:
        box.limits.timeout = 10
    assert call(box, "add", 2, 2) == 4


def test_a_submission_that_cannot_load_fails_fast_after_the_first_call(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import torch\nraise RuntimeError('at import')\n")
    with Sandbox(path, "_selftest", Limits(timeout=10)) as b:
        with pytest.raises(SubmissionFailure, match="RuntimeError: at import") as first:
            b.call("call", name="add", args=[1, 2])
        start = time.monotonic()
        with pytest.raises(SubmissionFailure) as second:
            b.call("call", name="add", args=[1, 2])
        assert time.monotonic() - start < 0.5 and second.value is first.value
        assert "broken.py" in str(first.value)  # the student's file name, not the worker's private copy


def test_notebook_runs_what_the_student_ran():
    nb = {"cells": [
        {"cell_type": "code", "source": ["import torch\n", "%time x = 1\n", "!pip install foo\n", "N = 3\n"]},
        {"cell_type": "code", "source": "def f(x):\n    return x + N\n\nclass C:\n    pass\n\nprint(f(1))\n"},
        {"cell_type": "code", "source": ["for _ in range(10**9):\n", "    train()\n", "w = torch.randn(3)\n"]},
        {"cell_type": "code", "source": ["this is ( not python\n"]},
        {"cell_type": "markdown", "source": ["def g(): pass"]},
        {"cell_type": "code", "source": ["SIZES: tuple = (1, 2)\n", "import sys; sys.exit(0)\n"]},
    ]}
    read = submission.read_notebook(json.dumps(nb))
    src = read.source
    namespace = {}
    exec(compile(src, "nb", "exec"), namespace)
    assert namespace["f"](1) == 4 and namespace["SIZES"] == (1, 2) and "C" in namespace
    assert namespace["w"].shape == (3,)  # a module-level object runs (cheaply)
    assert "train" not in src and "print" not in src and "g()" not in src and "exit" not in src
    assert {d.reason.split(" (")[0].split(":")[0] for d in read.dropped} == {
        "an IPython magic or shell command", "output only", "a top-level loop", "a syntax error",
        "it ends the program"}


def test_folder_entries(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "helper.py").write_text("")
    (tmp_path / "a" / "submission.py").write_text("")
    assert submission.submission_entry(tmp_path / "a", "width").name == "submission.py"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "mine.ipynb").write_text("{}")
    assert submission.submission_entry(tmp_path / "b", "width").name == "mine.ipynb"
    with pytest.raises(FileNotFoundError):
        submission.submission_entry(tmp_path / "nothing", "width")


def test_isolation_prefix_is_a_working_unshare_or_nothing():
    prefix = sandbox.isolation_prefix()
    assert prefix == () or (prefix[0].endswith("unshare") and "-n" in prefix)


GUARD_TRICKS = '''
import builtins, os, pathlib

class Sneaky(str):
    def startswith(self, *a):
        return False

def rebind_builtins(path):
    saved = builtins.type, builtins.isinstance
    builtins.type, builtins.isinstance = (lambda x: int), (lambda a, b: False)
    try:
        return open(path).read()
    finally:  # (left rebound, the worker's own encoder breaks: a crash, still no access)
        builtins.type, builtins.isinstance = saved

def patch_posixpath(path):
    import posixpath
    posixpath.realpath = os.path.realpath = lambda p, **k: "/tmp/ok"
    return open(path).read()

def str_subclass(path):
    return open(Sneaky(path)).read()

def via_pathlib(path):
    return pathlib.Path(path).read_text()

def via_symlink(path):
    os.symlink(path, "link")
    return open("link").read()

def find_the_hook():
    import gc
    return len(gc.get_objects())

def scratch_is_fine():
    pathlib.Path("out.txt").write_text("hi")
    return open("out.txt").read()

def dlopen_process():
    import ctypes
    return str(ctypes.CDLL(None))

def dlopen_by_name():
    import ctypes
    return str(ctypes.CDLL("libc.so.6"))

def dlopen_scratch_copy(installed):
    import ctypes
    with open(installed, "rb") as src, open("mine.so", "wb") as dst:  # the scratch is writable: nothing loads from it
        dst.write(src.read())
    return str(ctypes.CDLL(os.path.abspath("mine.so")))

def torchvision_operators():
    import torchvision
    from torchvision import datasets, models, transforms
    from torchvision.ops import nms
    import torch
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0]])
    kept = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)  # a compiled torchvision operator
    return [kept.tolist(), transforms.ToTensor().__class__.__name__, callable(models.resnet18)]
'''


@pytest.mark.parametrize("trick", ["rebind_builtins", "patch_posixpath", "str_subclass", "via_pathlib",
                                   "via_symlink", "find_the_hook"])
def test_audit_hook_alone_resists_pure_python_tricks(guard_only_box, trick):
    """With the OS layer switched off, the audit hook still refuses the reference (tests/)."""
    secret = str(__import__("labcheck.paths", fromlist=["x"]).tests_dir() / "hostile" / "reference_selftest.py")
    with pytest.raises(SubmissionFailure, match="not allowed"):
        guard_only_box.call("call", name=trick, args=[secret] if trick != "find_the_hook" else [])
    assert guard_only_box.call("call", name="scratch_is_fine") == "hi"


@pytest.fixture(scope="module")
def guard_only_box(tmp_path_factory):
    path = tmp_path_factory.mktemp("guard") / "tricks.py"
    path.write_text(GUARD_TRICKS)
    mp = pytest.MonkeyPatch()
    mp.setattr(isolation, "isolation_prefix", lambda: ())
    mp.setenv(sandbox.BWRAP_ENV, "")  # no bubblewrap either: the audit hook (and seccomp) alone
    with Sandbox(path, "_selftest", Limits(timeout=20)) as b:
        yield b
    mp.undo()


def test_installed_native_libraries_load_and_nothing_else_does(tmp_path, monkeypatch):
    """torchvision's compiled operators load through ctypes (every seed notebook imports torchvision); the
    process itself, a library by bare name and a copy in the writable scratch are refused. The audit hook
    alone (a worker of its own: guard_only_box's tricks leave os.path.realpath patched)."""
    path = tmp_path / "tricks.py"
    path.write_text(GUARD_TRICKS)
    monkeypatch.setattr(isolation, "isolation_prefix", lambda: ())
    monkeypatch.setenv(sandbox.BWRAP_ENV, "")
    installed = str(Path(torch.__file__).parent / "lib" / "libtorch_global_deps.so")
    with Sandbox(path, "_selftest", Limits(timeout=60)) as box:
        assert box.call("call", name="torchvision_operators") == [[0, 2], "ToTensor", True]
        for trick, args in (("dlopen_process", []), ("dlopen_by_name", []), ("dlopen_scratch_copy", [installed])):
            with pytest.raises(SubmissionFailure, match="loading native code"):
                box.call("call", name=trick, args=args)
        assert box.isolation["level"] == "hook-only"


def test_torchvision_loads_inside_bubblewrap(tmp_path, monkeypatch):
    monkeypatch.delenv(sandbox.BWRAP_ENV, raising=False)  # (the guard-only fixture above may still be active)
    path = tmp_path / "tv.py"
    path.write_text(GUARD_TRICKS)
    with Sandbox(path, "_selftest", Limits(timeout=60)) as b:
        assert b.call("call", name="torchvision_operators") == [[0, 2], "ToTensor", True]
        assert b.isolation["level"] == "whitelist-fs"


def test_the_seccomp_program_for_bubblewrap_lets_exec_through_and_the_workers_does_not():
    from labcheck.untrusted.confine import seccomp_program

    with_exec, without_exec = seccomp_program(block_exec=False), seccomp_program(block_exec=True)
    if with_exec is None:
        pytest.skip("no seccomp program for this machine's architecture")
    assert len(with_exec) % 8 == 0 and len(without_exec) == len(with_exec) + 2 * 8  # two more JEQ rules


def test_forked_processes_are_refused_inside_bubblewrap(tmp_path, monkeypatch):
    monkeypatch.delenv(sandbox.BWRAP_ENV, raising=False)  # (the guard-only fixture above may still be active)
    path = tmp_path / "forker.py"
    path.write_text("import os\n\ndef fork():\n    return os.fork()\n")
    with Sandbox(path, "_selftest", Limits(timeout=30)) as b:
        with pytest.raises(SubmissionFailure, match="not allowed|Operation not permitted"):
            b.call("call", name="fork")
        assert b.isolation["level"] == "whitelist-fs"


HOST_DEVICE_TRICKS = '''
import os

def chmod_devices():
    changed = []
    for name in ("null", "zero", "full", "random", "urandom", "tty"):
        try:
            fd = os.open("/dev/" + name, os.O_RDONLY)
            os.fchmod(fd, 0)  # by descriptor: no path for the audit hook to see
            os.close(fd)
            changed.append(name)
        except OSError:
            pass
    return changed
'''


@pytest.mark.parametrize("forked", [False, True], ids=["fresh", "zygote"])
def test_a_submission_cannot_change_the_hosts_device_nodes(tmp_path, monkeypatch, worker_zygote, forked):
    """Run as root, bubblewrap's sandbox user is root outside too: with --dev's binds of the host's nodes, a
    submission's fchmod(/dev/null, 0) changed the host's /dev/null (found while fixing issue #22). The nodes
    are private copies now: whatever the submission changes, the host's stay as they were."""
    import stat as stat_

    monkeypatch.delenv(sandbox.BWRAP_ENV, raising=False)
    before = {n: os.stat(f"/dev/{n}").st_mode for n in sandbox.DEVICES if os.path.exists(f"/dev/{n}")}
    path = tmp_path / "devices.py"
    path.write_text(HOST_DEVICE_TRICKS)
    try:
        with Sandbox(path, "_selftest", Limits(timeout=30), zygote=worker_zygote if forked else None) as box:
            box.call("call", name="chmod_devices")
            assert box.isolation["level"] == "whitelist-fs"
        after = {n: os.stat(f"/dev/{n}").st_mode for n in before}
    finally:  # never leave this machine without a usable /dev/null, whatever the verdict
        for name, mode in before.items():
            if os.stat(f"/dev/{name}").st_mode != mode:
                os.chmod(f"/dev/{name}", stat_.S_IMODE(mode))
    assert after == before


THREAD_TRICKS = '''
import threading

def start_threads(n):
    stop = threading.Event()
    started = 0
    try:
        for _ in range(n):
            threading.Thread(target=stop.wait, daemon=True).start()
            started += 1
    except RuntimeError:
        pass
    stop.set()
    return started
'''


@pytest.mark.parametrize("forked", [False, True], ids=["fresh", "zygote"])
def test_a_worker_cannot_start_thousands_of_threads(tmp_path, monkeypatch, worker_zygote, forked):
    """Issue #22: a submission started 10,000 threads (host tasks 156 -> 10,158). As root (RLIMIT_NPROC does not
    bind root) the worker and the zygote are in a pids cgroup of MAX_TASKS; as an ordinary user RLIMIT_NPROC
    holds."""
    monkeypatch.delenv(sandbox.BWRAP_ENV, raising=False)
    path = tmp_path / "threads.py"
    path.write_text(THREAD_TRICKS)
    with Sandbox(path, "_selftest", Limits(timeout=60), zygote=worker_zygote if forked else None) as box:
        started = box.call("call", name="start_threads", args=[3000])
    assert started < sandbox.MAX_TASKS
