"""A worker process seen from the grader: its limits (Limits) and environment, the resource limits and task
cap set in the process about to execute it (_rlimits, TaskCap), and its CPU time read from /proc
(process_tree_cpu_seconds), which the worker cannot forge.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import secrets
import signal
import time
from pathlib import Path


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_table() -> tuple[dict[int, list[int]], dict[int, float]]:
    """(children of each pid, CPU seconds of each pid: user + system, all threads), read from /proc."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # exited meanwhile
            continue
        fields = stat[stat.rindex(b")") + 2:].split()  # after "pid (comm) ": state, ppid, ... (proc(5))
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        cpu[pid] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime + stime
    return children, cpu


def process_tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of process `root` and all its descendants (all their threads), read from
    /proc by the grader: the worker cannot forge it, and unlike wall time it does not grow with the load
    of the machine, so a CPU deadline gives the same verdict on an idle and on a busy machine."""
    children, cpu = _process_table()
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo.extend(children.get(pid, ()))
    return total


@dataclasses.dataclass
class Limits:
    timeout: float = 60.0  # seconds of wall clock per call: the cap, also for calls that block without computing
    startup_timeout: float = 90.0  # seconds to import torch and execute the submission
    memory_mb: int = 3072  # RLIMIT_DATA of the worker; torch alone maps ~0.8 GB of data
    file_mb: int = 64  # largest file the worker may write (scratch only)
    threads: int = 1  # torch threads in the worker, so parallel grading stays fair
    network: bool = False  # True lets the worker keep the host's network namespace
    max_reply_mb: int = 256  # largest reply the grader accepts; probes return small data


class SubmissionFailure(AssertionError):
    """The submission failed a call: its message is what the student reads."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind  # load_error | error | timeout | crash | protocol


@functools.lru_cache(maxsize=1)
def _prctl():
    """libc's prctl, loaded in the grader (never in the worker, whose guard forbids ctypes)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _worker_env(limits: Limits, home: str) -> dict[str, str]:
    """The whole environment of a worker (nothing of the grader's but PATH and device choices)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": str(limits.threads),
        "MKL_NUM_THREADS": str(limits.threads),
        # the worker imports the very labcheck the grader runs (a checkout on PYTHONPATH, not the install)
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    for key in ("CUDA_VISIBLE_DEVICES", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


PIDS_CGROUPS = "/sys/fs/cgroup/pids"  # cgroup v1's pids controller, where a root grader may make groups


MAX_TASKS = 512  # threads and processes of one worker (or one zygote and its child), all together


class TaskCap:
    """A pids cgroup holding at most MAX_TASKS threads and processes, for a worker started as root: root
    ignores RLIMIT_NPROC (issue #22: 10,000 threads created), the cgroup does not. Elsewhere (an ordinary
    user: RLIMIT_NPROC holds; no writable cgroup) it is inert. The process about to execute the worker joins
    it (`join`, from preexec_fn); `remove` deletes it once the worker is gone."""

    def __init__(self):
        self.path: str | None = None
        if os.geteuid() != 0 or not os.access(PIDS_CGROUPS, os.W_OK):
            return
        self._sweep()
        path = os.path.join(PIDS_CGROUPS, f"labcheck-{secrets.token_hex(6)}")
        try:
            os.mkdir(path)
            with open(os.path.join(path, "pids.max"), "w") as f:
                f.write(str(MAX_TASKS))
            self.path = path
        except OSError:
            try:
                os.rmdir(path)
            except OSError:
                pass

    def join(self) -> None:
        """In the child about to execute the worker: move itself into the group (before any thread starts)."""
        if self.path is not None:
            with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    def remove(self) -> None:
        """Delete the group; its last tasks may take a moment to go after SIGKILL (a leftover is swept later)."""
        for _ in range(40):
            if self.path is None:
                return
            try:
                os.rmdir(self.path)
                self.path = None
            except OSError:
                time.sleep(0.05)

    @staticmethod
    def _sweep(older_than: float = 120.0) -> None:
        """Remove the empty groups of graders that ended without removing theirs (never a fresh one: another
        grader may be about to join it)."""
        for name in os.listdir(PIDS_CGROUPS):
            path = os.path.join(PIDS_CGROUPS, name)
            try:
                if name.startswith("labcheck-") and time.time() - os.stat(path).st_mtime > older_than:
                    os.rmdir(path)  # refused while it holds a task
            except OSError:
                pass


def _rlimits(limits: Limits, cap: TaskCap | None = None) -> None:
    """The worker's resource limits, set in the process about to execute it."""
    import resource

    if cap is not None:
        cap.join()
    mem = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (mem, mem))
    fsize = limits.file_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.geteuid() != 0:  # root ignores RLIMIT_NPROC; the audit hook refuses fork there
        resource.setrlimit(resource.RLIMIT_NPROC, (512, 512))
    prctl = _prctl()
    if prctl is not None:  # PR_SET_PDEATHSIG: the worker dies if the grader dies
        prctl(1, signal.SIGKILL, 0, 0, 0)


def _children_of(pid: int) -> list[int]:
    return _process_table()[0].get(pid, [])
