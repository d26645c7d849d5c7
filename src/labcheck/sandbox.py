"""Run calls against an untrusted submission in a separate, confined worker process.

    with Sandbox("alice.py", "width") as box:
        out = box.call("mlp_forward", X=X, ws=ws, bs=bs)   # raw data, or SubmissionFailure

Where the trust boundary lies is written in `labcheck.untrusted`. Isolation, outermost first:
  - bubblewrap where it works (`bwrap`, unprivileged user namespaces): new user, PID, network, IPC and
    UTS namespaces, --die-with-parent, --new-session, a seccomp filter (no new processes), and a
    whitelist file system: read-only binds of the interpreter's prefix, the virtual environment, the
    labcheck package and the one submission copy, a private writable scratch; nothing else of the host
    exists in it (no reference, tests, reports, other students, expected-answer cache; no copy of them
    wherever it lies). Without bubblewrap: `unshare` (network, and PID + mount namespaces where allowed),
    then the worker hides the denied paths itself (labcheck.untrusted.confine);
  - its own process and session (killed as a group), a fresh scratch folder as cwd/HOME/TMPDIR,
    a clean environment; it dies with the grader (PR_SET_PDEATHSIG);
  - resource limits: RLIMIT_DATA (memory), RLIMIT_FSIZE (files it writes), RLIMIT_CORE 0,
    RLIMIT_NPROC where not root, and a wall-clock deadline per call enforced from here;
  - loading the submission has its own deadline (the worker reports "ready" or the load error
    first), and a submission that cannot load is remembered: its tests fail at once;
  - a contract function that ran out of time is remembered: a later call that enters it fails at once
    with the same message (the worker reports which function it entered);
  - inside, seccomp and an audit hook (labcheck.untrusted.confine);
  - replies decoded by labcheck.wire (data only, never pickle) and judged in the grader.
`labcheck grade` forks each worker from a worker zygote instead (WorkerZygote, one per job): the same
bubblewrap set-up and the same confinement inside, without paying for Python and torch per
submission; labcheck.untrusted.zygote says what keeps one student's worker from reaching the next.
The confinement reached is one of LEVELS (`Sandbox.isolation`); the plugin records it in every
results.json and refuses to grade below --labcheck-min-isolation.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import secrets
import time
from pathlib import Path

from labcheck import paths
from labcheck.untrusted.confine import SYSTEM_LIBRARIES
from labcheck.untrusted.serve import SANDBOX_ENV

# Ordered confinement levels, weakest first.
LEVELS = ("none", "hook-only", "no-network", "whitelist-fs")
LEVEL_HELP = {
    "none": "no confinement of the worker at all",
    "hook-only": "seccomp and the audit hook only: the worker shares the host's network and file system",
    "no-network": "a private network namespace (unshare); files hidden only where the grader runs as root",
    "whitelist-fs": "bubblewrap: user/PID/network/IPC namespaces and a whitelist file system",
}
DEFAULT_MIN_ISOLATION = "whitelist-fs"
BWRAP_ENV = "LABCHECK_BWRAP"  # path of bwrap to use; empty (or "none") means: do not use bubblewrap


def isolation_level(text: str) -> str:
    if text not in LEVELS:
        raise ValueError(f"unknown isolation level {text!r}; one of {', '.join(LEVELS)}")
    return text


def how_to_reach(level: str) -> str:
    """What to do on this machine to reach `level` (the text of a refusal)."""
    steps = []
    if LEVELS.index(level) >= LEVELS.index("no-network"):
        steps.append("install bubblewrap (`apt-get install bubblewrap`, which `scripts/run` does) so that `bwrap` "
                     "is on PATH")
        steps.append("allow unprivileged user namespaces: `sysctl -w kernel.unprivileged_userns_clone=1` "
                     "(Debian kernels), and on Ubuntu 23.10+ `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` "
                     "or an AppArmor profile for bwrap; in a container, run it with user namespaces allowed "
                     "(e.g. Docker's default seccomp profile blocks them: `--security-opt seccomp=unconfined`)")
        steps.append("check with `bwrap --unshare-all --ro-bind / / true`")
    return "; ".join(steps) or "nothing to do"


MAX_STRAY_FRAMES = 16  # frames without the call's token tolerated before the call fails
CPU_POLL_SECONDS = 0.2  # how often a call's CPU time is read while it runs
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
def isolation_prefix() -> tuple[str, ...]:
    """The strongest `unshare` this machine allows: network + PID namespaces, else network only, else none."""
    exe = shutil.which("unshare")
    if not exe:
        return ()
    for flags in (("-n", "-p", "-f", "--kill-child", "--mount-proc"), ("-n",)):
        try:
            if subprocess.run([exe, *flags, "true"], capture_output=True, timeout=10).returncode == 0:
                return (exe, *flags)
        except (OSError, subprocess.SubprocessError):
            continue
    return ()


def _can_unshare_network() -> bool:
    return "-n" in isolation_prefix()


# ---------------------------------------------------------------------------------------------
# bubblewrap: the whitelist file system


def bwrap_path() -> str | None:
    """The bwrap to use: $LABCHECK_BWRAP if set (empty or "none": none), else `bwrap` on PATH."""
    value = os.environ.get(BWRAP_ENV)
    if value is not None:
        return None if value.strip() in ("", "none") else value
    return shutil.which("bwrap")


def _outermost(paths_: set[str]) -> list[str]:
    """The paths none of whose ancestors is also in the set."""
    ordered = sorted(paths_)
    return [p for p in ordered if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in ordered)]


@functools.lru_cache(maxsize=1)
def environment_paths() -> tuple[str, ...]:
    """What the worker's Python needs to read, and nothing more: the interpreter's prefix, the virtual
    environment, the labcheck package (not the repository around it), and torch/numpy where they live
    outside those. Symlinked paths are bound under both names."""
    import importlib.util

    wanted = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
              str(Path(__file__).parent), os.path.dirname(sys.executable)}
    # found without importing them: `labcheck grade`'s own process never loads torch
    wanted |= {str(Path(importlib.util.find_spec(m).origin).parent) for m in ("torch", "numpy")}
    found = set()
    for p in wanted:
        for q in (os.path.abspath(p), os.path.realpath(p)):
            if os.path.exists(q):
                found.add(q)
    return tuple(_outermost(found))




DEVICES = ("null", "zero", "full", "random", "urandom", "tty")  # the nodes bubblewrap's --dev binds from the host
# Everything a sandboxed worker can write is a size-limited in-memory file system (issue #22: 3 GB written into
# an unlimited /tmp, 2 GB onto the host's disk): the scratch (its cwd and HOME; the zygote's home and every
# child's scratch in it), /tmp and /dev/shm. memfd_create is refused by the seccomp filter (confine).
SCRATCH_MB, TMP_MB, SHM_MB = 256, 64, 16


def private_devices(folder: str) -> list[str]:
    """bwrap arguments that put private copies of /dev's nodes over the host's, made in `folder` (root only).

    Run as root, the sandbox's user is root outside it too (no capabilities, but the owner of every
    root-owned file it can reach): with --dev's bind of the host's own /dev/null, a submission's
    `os.chmod('/dev/null', 0)` changed the *host's* /dev/null. Over a private node it changes only its
    own copy (the zygote puts modes back; a fresh worker's copy is thrown away). Where nodes cannot be
    made or opened (no CAP_MKNOD, a nodev file system), nothing: a non-root sandbox owns no host node."""
    if os.geteuid() != 0:
        return []
    import stat

    args = []
    try:
        os.makedirs(folder, mode=0o755, exist_ok=True)
        for name in DEVICES:
            host, node = f"/dev/{name}", os.path.join(folder, name)
            if not os.path.exists(node):
                os.mknod(node, stat.S_IFCHR | 0o666, os.stat(host).st_rdev)
            os.chmod(node, 0o666)  # (mknod applies the umask; an earlier worker may have changed it)
            if name != "tty":  # (no controlling terminal is fine; a node that cannot be opened is not)
                os.close(os.open(node, os.O_RDONLY))
            args += ["--dev-bind", node, host]
    except OSError:
        return []
    return args


def bwrap_command(exe: str, writable: str, readonly: list[str], seccomp_fd: int | None,
                  devices: str | None = None) -> list[str]:
    """bwrap's arguments (before the command): namespaces, then a file system made only of the system's
    shared libraries, `readonly` and the writable scratch `writable` (all at their host paths; what can be
    written is in size-limited memory: SCRATCH_MB, TMP_MB, SHM_MB); as root, /dev's nodes are private copies
    made in `devices` (private_devices), a folder outside `writable`."""
    cmd = [exe, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
           "--unshare-cgroup-try", "--disable-userns", "--die-with-parent", "--new-session",
           "--cap-drop", "ALL",  # run as root, bwrap would otherwise keep every capability in the sandbox
           "--proc", "/proc", "--dev", "/dev", *(private_devices(devices) if devices else ()),
           "--size", str(SHM_MB << 20), "--tmpfs", "/dev/shm", "--size", str(TMP_MB << 20), "--tmpfs", "/tmp"]
    for lib in SYSTEM_LIBRARIES:
        if os.path.islink(lib):
            cmd += ["--symlink", os.readlink(lib), lib]
        elif os.path.isdir(lib):
            cmd += ["--ro-bind", lib, lib]
    for path in _outermost(set(readonly) | set(environment_paths())):
        cmd += ["--ro-bind", path, path]
    cmd += ["--size", str(SCRATCH_MB << 20), "--tmpfs", writable, "--chdir", writable]  # (nothing on the host's disk)
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    return cmd + ["--"]


def _seccomp_pipe() -> int | None:
    """A pipe's read end holding the seccomp program for bwrap (no new processes; exec stays allowed,
    since bwrap installs the filter right before it executes the worker)."""
    from labcheck.untrusted.confine import seccomp_program

    program = seccomp_program(block_exec=False)
    if program is None:
        return None
    r, w = os.pipe()
    os.write(w, program)  # a few hundred bytes: fits the pipe's buffer
    os.close(w)
    return r


@functools.lru_cache(maxsize=8)
def _bwrap_check(exe: str | None, euid: int) -> str | None:
    """None when bubblewrap starts this Python here, else why not."""
    if exe is None:
        return "bubblewrap (bwrap) is not installed or disabled ($LABCHECK_BWRAP)"
    with tempfile.TemporaryDirectory(prefix="labcheck-bwrap-check-") as scratch:
        fd = _seccomp_pipe()
        try:
            work = os.path.join(scratch, "work")
            os.mkdir(work)
            cmd = bwrap_command(exe, work, [], fd, os.path.join(scratch, "dev")) + [
                sys.executable, "-S", "-c", "import os; os.listdir('/'); open('/dev/null', 'w').write('-')"]
            proc = subprocess.run(cmd, capture_output=True, timeout=30, pass_fds=() if fd is None else (fd,))
        except (OSError, subprocess.SubprocessError) as e:
            return f"bwrap could not run: {e}"
        finally:
            if fd is not None:
                os.close(fd)
    if proc.returncode != 0:
        return f"bwrap failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace').strip()[:300]}"
    return None


def achievable_isolation() -> dict:
    """The strongest level this machine gives a worker now, and why not a stronger one."""
    why_not = _bwrap_check(bwrap_path(), os.geteuid())
    if why_not is None:
        return {"level": "whitelist-fs", "launcher": "bwrap", "why_not_higher": ""}
    prefix = isolation_prefix()
    if "-n" in prefix:
        return {"level": "no-network", "launcher": "unshare " + " ".join(prefix[1:]), "why_not_higher": why_not}
    return {"level": "hook-only", "launcher": "none", "why_not_higher": f"{why_not}; `unshare -n` is refused too"}


def check_min_isolation(minimum: str) -> dict:
    """achievable_isolation(), or a RuntimeError that says what is missing and how to get it."""
    reached = achievable_isolation()
    if LEVELS.index(reached["level"]) < LEVELS.index(minimum):
        raise RuntimeError(
            f"labcheck refuses to grade: the worker's isolation here is {reached['level']!r} "
            f"({LEVEL_HELP[reached['level']]}), below the required {minimum!r} ({LEVEL_HELP[minimum]}). "
            f"Why: {reached['why_not_higher']}. To get there: {how_to_reach(minimum)}. "
            f"Or lower the requirement (--min-isolation / --labcheck-min-isolation, one of {', '.join(LEVELS)}).")
    return reached


@functools.lru_cache(maxsize=1)
def _prctl():
    """libc's prctl, loaded in the grader (never in the worker, whose guard forbids ctypes)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def default_deny() -> list[str]:
    """What no submission may read: every exercise folder (references, bands, tests, examples; a worker reads
    only its exercise's calls.py, allowed by name), labcheck's tests, the git history."""
    from labcheck.exercises import exercise_roots

    return [*(str(Path(r).resolve()) for r in exercise_roots()), str(paths.tests_dir()), str(paths.repo_root() / ".git")]


def calls_path(exercise: str) -> str:
    """The exercise's calls.py: the one file of its folder a worker loads (read-only, by name)."""
    from labcheck.exercises import get

    return str(get(exercise).calls_path.resolve())


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


UNPRIVILEGED_USER = "nobody"  # whom a worker run as root without bubblewrap becomes before any student line


def unprivileged_ids() -> tuple[int, int] | None:
    """(uid, gid) a worker started as root without bubblewrap drops to, or None where it cannot: not root, no
    such user, or an interpreter or library that user cannot read (pyenv under a 0700 /root). Without
    bubblewrap nothing hides the grader's files from a worker that is root: torch.from_file read the
    reference past the audit hook (issue #26); as that user, the files only root may read stay closed."""
    if os.geteuid() != 0:
        return None
    import importlib.util
    import pwd
    import stat

    try:
        user = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        return None
    needed = {os.path.realpath(sys.executable), *environment_paths(),
              *(os.path.dirname(importlib.util.find_spec(m).origin) for m in ("torch", "numpy", "encodings"))}
    for path in needed:  # every folder on the way traversable by others, the place itself readable
        parts = Path(path).parts
        for i in range(1, len(parts) + 1):
            try:
                mode = os.stat(Path(*parts[:i])).st_mode
            except OSError:
                return None
            last = i == len(parts)
            if (stat.S_ISDIR(mode) and not mode & stat.S_IXOTH) or (last and not mode & stat.S_IROTH):
                return None
    return user.pw_uid, user.pw_gid


def _children_of(pid: int) -> list[int]:
    return _process_table()[0].get(pid, [])


ZYGOTE_ENV = "LABCHECK_ZYGOTE"  # a zygote handed to this grader process: {"fd", "pid", "limits"} as JSON


class WorkerZygote:
    """The grader's side of labcheck.untrusted.zygote: a worker under bubblewrap (the same whitelist
    file system and namespaces as a fresh worker's, without a submission in it) that has imported
    torch once and forks one confined child per submission, one at a time. `labcheck grade` keeps one
    per job and hands it to the grader processes in turn (ZYGOTE_ENV); a Sandbox that finds it there
    starts its worker as a child of it instead of a new process (~1.8 s of CPU less per submission).
    Whatever goes wrong with it, a Sandbox falls back to a fresh worker."""

    def __init__(self, control: socket.socket, pid: int, limits: Limits, proc: subprocess.Popen | None = None):
        self.control = control
        self.pid = pid  # the zygote's process on this host (its children are the students' workers)
        self.limits = limits
        self.busy = False
        self.broken = False
        self._proc = proc  # bubblewrap, when this process started it
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._cap: TaskCap | None = None  # its pids cgroup, when this process made one

    @classmethod
    def start(cls, limits: Limits | None = None, exercises: tuple[str, ...] = ()) -> "WorkerZygote | None":
        """A new zygote under bubblewrap, ready, or None where bubblewrap is not what a fresh worker would get."""
        zygote = cls.launch(limits, exercises)
        return zygote if zygote is not None and zygote.wait_ready() else None

    @classmethod
    def launch(cls, limits: Limits | None = None, exercises: tuple[str, ...] = ()) -> "WorkerZygote | None":
        """Start a zygote without waiting for it to import torch (wait_ready() does). Call it from a thread
        that outlives the zygote: bubblewrap dies with the *thread* that started it (PR_SET_PDEATHSIG)."""
        limits = limits or Limits()
        reached = achievable_isolation()
        if reached["launcher"] != "bwrap" or limits.network:
            return None
        scratch = tempfile.TemporaryDirectory(prefix="labcheck-zygote-")
        home = str(Path(scratch.name).resolve() / "home")  # the sandbox's only writable folder; the log is beside it
        os.mkdir(home)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # the kernel tells us the zygote's pid
        calls = {exercise: calls_path(exercise) for exercise in exercises}  # each one's calls.py, bound read-only
        env = {**_worker_env(limits, home), "LABCHECK_ZYGOTE_EXERCISES": json.dumps(calls)}
        cmd = [*bwrap_command(bwrap_path(), home, list(calls.values()), None, str(Path(scratch.name) / "dev")),
               sys.executable, "-P", "-m", "labcheck.worker", "--zygote"]
        _prctl()  # loaded here: after fork, in preexec_fn, only what is loaded already is safe to call
        cap = TaskCap()  # the zygote and its one child at a time, together
        try:
            with open(Path(scratch.name) / "zygote.log", "ab") as err:
                proc = subprocess.Popen(cmd, stdin=theirs, stdout=subprocess.DEVNULL, stderr=err, cwd=home, env=env,
                                        preexec_fn=lambda: _rlimits(limits, cap), start_new_session=True, close_fds=True)
        finally:
            theirs.close()
        zygote = cls(ours, 0, limits, proc)
        zygote._scratch, zygote._cap = scratch, cap
        return zygote

    def wait_ready(self) -> bool:
        """Wait until the zygote has imported torch; False (and closed) if it never does."""
        if self.pid:
            return self.alive()
        try:
            reply, pid = self._receive(self.limits.startup_timeout)
        except (OSError, ValueError):
            reply, pid = None, None
        if not (reply or {}).get("status") == "ready" or not pid:
            self.close()
            return False
        self.pid = pid
        return True

    @classmethod
    def from_environment(cls) -> "WorkerZygote | None":
        """The zygote labcheck grade handed to this grader process, once per process."""
        global _ATTACHED
        if _ATTACHED is None and os.environ.get(ZYGOTE_ENV):
            spec = json.loads(os.environ.pop(ZYGOTE_ENV))
            control = socket.socket(fileno=int(spec["fd"]))
            control.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            _ATTACHED = cls(control, int(spec["pid"]), Limits(**spec["limits"]))
        return _ATTACHED

    def handoff(self) -> dict:
        """What a grader process needs to use this zygote (with the control socket passed to it)."""
        return {"pid": self.pid, "limits": dataclasses.asdict(self.limits)}

    @staticmethod
    def announcement(control_fd: int, handoff: dict) -> str:
        """The ZYGOTE_ENV value that from_environment reads: the control socket's fd in the grader process
        (the socket is passed to it) and the zygote's handoff()."""
        return json.dumps({"fd": control_fd, **handoff})

    def serves(self, limits: Limits) -> bool:
        """Whether a child of this zygote is the worker a Sandbox with `limits` would start."""
        mine = self.limits
        return (not self.busy and self.alive() and not limits.network and limits.threads == mine.threads
                and limits.memory_mb <= mine.memory_mb and limits.file_mb <= mine.file_mb)

    def alive(self) -> bool:
        return not self.broken and (self._proc is None or self._proc.poll() is None)

    def idle(self) -> bool:
        """Alive, with no child and no unread message: as a grader that used it properly leaves it."""
        if not self.alive() or _children_of(self.pid):
            return False
        try:
            self.control.settimeout(0.0)
            self.control.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False

    def _receive(self, timeout: float) -> tuple[dict | None, int | None]:
        """The next control message and the pid of the process that sent it (None, None at end of file)."""
        self.control.settimeout(timeout)
        data, ancillary, _flags, _addr = self.control.recvmsg(1 << 16, socket.CMSG_SPACE(12))
        if not data:
            return None, None
        pid = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        return json.loads(data), pid

    def spawn(self, policy: dict, env: dict, entry: Path, stderr_path: Path, limits: Limits) -> "ForkedWorker | None":
        """Fork a confined worker for one submission (`entry`, its private copy); None if the zygote failed."""
        token = secrets.token_hex(8)
        # No file name or path of the submission goes in: the zygote's memory is copied into each later
        # child, so it must hold nothing of one student for the next to find (the grader renames the file).
        policy = {k: v for k, v in policy.items() if k not in ("submission", "display_name", "allow_read")}
        request = {"op": "spawn", "id": token, "policy": policy, "env": env, "suffix": entry.suffix,
                   "rlimits": {"RLIMIT_DATA": limits.memory_mb * 2**20, "RLIMIT_FSIZE": limits.file_mb * 2**20}}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        err = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        source = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            self.control.settimeout(30.0)
            socket.send_fds(self.control, [json.dumps(request).encode()], [theirs.fileno(), err, source])
            reply, _ = self._receive(30.0)
            children = _children_of(self.pid)
        except (OSError, ValueError):
            reply, children = None, []
        finally:
            theirs.close()
            os.close(err)
            os.close(source)
        if (reply or {}).get("id") != token or reply.get("status") != "forked" or len(children) != 1:
            ours.close()
            self.broken = True
            return None
        self.busy = True
        return ForkedWorker(self, token, children[0], ours, str(reply.get("entry", "")))

    def close(self) -> None:
        self.broken = True
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.control.close()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
        if self._cap is not None:
            self._cap.remove()


_ATTACHED: WorkerZygote | None = None


class ForkedWorker:
    """A zygote's child serving one submission, with the part of subprocess.Popen's interface Sandbox uses."""

    def __init__(self, zygote: WorkerZygote, token: str, pid: int, channel: socket.socket, entry: str):
        self.zygote, self.token, self.pid, self.entry = zygote, token, pid, entry
        self.stdin = self.stdout = channel
        self.returncode: int | None = None
        try:  # a handle on this very process: its pid may be reused once the zygote has reaped it
            self._pidfd: int | None = os.pidfd_open(pid)
        except OSError:
            self._pidfd = None

    def kill(self) -> None:
        if self._pidfd is not None and self.returncode is None:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _release(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self.zygote.busy = False

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.wait(0.0)
            except subprocess.TimeoutExpired:
                pass
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """The child's exit code (negative: killed by that signal), once the zygote has put the sandbox back."""
        deadline = time.monotonic() + (1e9 if timeout is None else timeout)
        while self.returncode is None:
            try:
                reply, _ = self.zygote._receive(max(0.0, deadline - time.monotonic()))
            except (TimeoutError, BlockingIOError):
                raise subprocess.TimeoutExpired(f"zygote child {self.pid}", timeout) from None
            except (OSError, ValueError):
                reply = None
            if reply is None:  # the zygote is gone, and with it its pid namespace
                self.zygote.broken = True
                self.returncode = -signal.SIGKILL
            elif reply.get("id") == self.token and reply.get("status") == "exited":
                self.returncode = int(reply.get("returncode", -signal.SIGKILL))
                if not reply.get("clean", False):
                    self.zygote.broken = True
        self._release()
        return self.returncode


class Sandbox:
    def __init__(self, submission: str | os.PathLike, exercise: str, limits: Limits | None = None,
                 deny: list[str] | None = None, zygote: WorkerZygote | None = None):
        self.submission = Path(os.path.abspath(submission))  # (a link stays a link: it is refused, never followed)
        self.exercise = exercise
        self.limits = limits or Limits()
        self.deny = default_deny() + [str(Path(d).resolve()) for d in (deny or [])]
        self.hung: dict[str, str] = {}  # contract function -> the timeout message it earned
        self.isolation: dict = {}  # level, launcher, details, why_not_higher: set when the worker is ready
        self._proc: subprocess.Popen | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._stderr_path: Path | None = None
        self._load_failure: SubmissionFailure | None = None
        self._via_bwrap = False
        self.confinement: list[str] = []  # what the worker reported it could enforce (OS level)
        self.load_notes: list[str] = []  # what of the submission did not load (the worker's words, for the student)
        self.calls = 0
        self.zygote = zygote if zygote is not None else WorkerZygote.from_environment()
        self._worker_entry: str | None = None  # the submission's file as the worker names it
        self._display: str | None = None  # ... and as the student does
        self._files = 1  # files of the submission copied for the worker (its own modules beside the entry)
        self._cap: TaskCap | None = None  # the fresh worker's pids cgroup (root only)
        self._student_folder: str | None = None  # the folder of the student's entry file

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._kill()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if isinstance(proc, ForkedWorker):
                proc.kill()
            else:
                os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if self._cap is not None:
            self._cap.remove()

    def _preexec(self) -> None:
        _rlimits(self.limits, self._cap)

    def _needed_paths(self, work: Path) -> list[str]:
        return [*environment_paths(), str(work)]

    def _effective_deny(self, work: Path) -> list[str]:
        """The deny list less any path holding something the worker needs (the Python environment, its
        scratch): hiding those would change grades, not protect anything."""
        needed = self._needed_paths(work)
        return [d for d in self.deny if not any(n == d or n.startswith(d.rstrip("/") + "/") for n in needed)]

    def _start(self) -> None:
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="labcheck-worker-")
        scratch = Path(self._scratch.name).resolve()
        work = scratch / "cwd"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        self._stderr_path = scratch / "stderr.log"
        submission, display = self._copy_submission(scratch)
        self._worker_entry, self._display = str(submission), display
        reached = achievable_isolation()
        if self.limits.network:  # only labcheck's own tests ask for the host's network
            reached = {"level": "hook-only", "launcher": "none", "why_not_higher": "Limits(network=True)"}
        seccomp_fd = None
        self._via_bwrap = reached["launcher"] == "bwrap"
        if self._via_bwrap:
            seccomp_fd = _seccomp_pipe()
            prefix = bwrap_command(bwrap_path(), str(work), [str(submission.parent), calls_path(self.exercise)],
                                   seccomp_fd, str(scratch / "dev"))
        elif reached["launcher"].startswith("unshare"):
            prefix = isolation_prefix()
        else:
            prefix = ()
        policy = {
            "exercise": self.exercise,
            "submission": str(submission),
            "display_name": display,
            "deny": self._effective_deny(work),
            "allow_read": [str(submission), calls_path(self.exercise)],
            "calls_path": calls_path(self.exercise),
            "allow_write": [str(work)],
            "threads": self.limits.threads,
            "max_reply_mb": self.limits.max_reply_mb,
            "mount_namespace": "--mount-proc" in prefix,
            # without bubblewrap, a worker started as root becomes an unprivileged user after confining itself
            "drop_to": unprivileged_ids() if not self._via_bwrap else None,
        }
        env = _worker_env(self.limits, str(work))
        if policy["drop_to"] and display is not None:  # its scratch is its own; the submission's copy readable to it
            os.chown(work, *policy["drop_to"])
            for path in (submission.parent, *submission.parent.rglob("*")):
                os.chmod(path, 0o755 if path.is_dir() else 0o644)
        forked = None
        if (self._via_bwrap and display is not None and self._files == 1 and self.zygote is not None
                and self.zygote.serves(self.limits)):  # (a zygote's child gets one file; a folder: a fresh worker)
            # the same worker, forked from a zygote under the same bubblewrap set-up: see WorkerZygote
            forked = self.zygote.spawn(policy, env, submission, self._stderr_path, self.limits)
        if forked is not None:
            if seccomp_fd is not None:
                os.close(seccomp_fd)
            self._proc, self._via_bwrap = forked, False  # its exit code comes from the zygote's waitpid
            self._worker_entry = forked.entry
        else:
            cmd = [*prefix, sys.executable, "-m", "labcheck.worker"]
            _prctl()  # loaded before the fork: _preexec may only call what is loaded
            self._cap = TaskCap()
            try:
                with open(self._stderr_path, "ab") as err:
                    self._proc = subprocess.Popen(
                        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=work,
                        env={**env, SANDBOX_ENV: json.dumps(policy)},
                        preexec_fn=self._preexec, start_new_session=True, close_fds=True,
                        pass_fds=() if seccomp_fd is None else (seccomp_fd,),
                    )
            finally:
                if seccomp_fd is not None:
                    os.close(seccomp_fd)
        # what was set up, until the worker says what it did (a submission that cannot load still ran confined)
        self.isolation = {"level": reached["level"], "launcher": reached["launcher"], "details": [],
                          "why_not_higher": reached["why_not_higher"]}
        self._await_ready()
        details = list(self.confinement) + (["forked from a zygote"] if forked is not None else [])
        level = reached["level"] if "audit hook" in details else "none"
        self.isolation = {"level": level, "launcher": reached["launcher"], "details": details,
                          "why_not_higher": reached["why_not_higher"]}

    def _reported(self, reply: dict) -> tuple[str, str]:
        """("Type: message", traceback) of the student's failure in `reply`, the worker's private copy of
        the submission named as the student's file."""
        texts = (f"{reply.get('type', 'Error')}: {reply.get('message', '')}", reply.get("traceback") or "")
        if self._display and self._worker_entry:
            texts = tuple(t.replace(self._worker_entry, self._display) for t in texts)
            if self._files > 1 and self._student_folder:  # the student's other modules, named as theirs
                copy_folder = str(Path(self._worker_entry).parent)
                texts = tuple(t.replace(copy_folder, self._student_folder) for t in texts)
        return texts

    def _copy_submission(self, scratch: Path) -> tuple[Path, str | None]:
        """The worker reads a private copy of the submission, never the original (which may sit among other
        students' files or in examples/, both hidden from it): its entry file and, for a folder, the
        student's other files beside it, at the same relative paths (the entry may import its own modules)."""
        from labcheck.submission import LinkRefused, submission_files

        try:
            entry, files = submission_files(self.submission, self.exercise)
        except LinkRefused as e:  # nothing a link points to is copied, run or quoted
            self._load_failure = SubmissionFailure("load_error", f"the submission was refused: {e}")
            raise self._load_failure from None
        except (OSError, ValueError):
            return self.submission, None  # the worker reports why it cannot load it
        folder = scratch / "submission"
        shutil.rmtree(folder, ignore_errors=True)
        for f in files:
            copy = folder / (f.relative_to(self.submission) if self.submission.is_dir() else f.name)
            copy.parent.mkdir(parents=True, exist_ok=True)
            with open(f, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NOFOLLOW)) as src, open(copy, "wb") as dst:
                shutil.copyfileobj(src, dst)  # (O_NOFOLLOW: a link swapped in since the check is not followed either)
        self._files = len(files)
        self._student_folder = str(entry.parent)
        return folder / (entry.relative_to(self.submission) if self.submission.is_dir() else entry.name), str(entry)

    def _await_ready(self) -> None:
        """Wait for the worker's first frame: the submission loaded, or why not (remembered)."""
        from labcheck import wire  # (imports torch: only where a worker answers)

        budget = self.limits.startup_timeout
        try:  # loading has a CPU deadline too (16 threads spinning at import slowed the students beside it)
            cpu_deadline = process_tree_cpu_seconds(self._proc.pid) + budget
            payload = self._read_reply(time.monotonic() + budget, cpu_deadline)
            reply = wire.decode(payload)
        except TimeoutError:
            self._kill()
            self._load_failure = SubmissionFailure(
                "load_error", f"the submission did not finish loading within {budget:.0f} s: does it run "
                "a training loop, an infinite loop or input() at module level? (only definitions belong there)")
            raise self._load_failure from None
        except (EOFError, BrokenPipeError, ConnectionResetError):
            message = self._crash_message("loading the submission")
            self._kill()
            self._load_failure = SubmissionFailure("load_error", f"the submission could not be loaded: {message}")
            raise self._load_failure from None
        except (wire.WireError, SubmissionFailure) as e:
            self._kill()
            self._load_failure = SubmissionFailure("load_error", f"the worker's first reply was unreadable ({e})")
            raise self._load_failure from None
        if isinstance(reply, dict) and reply.get("status") == "load_error":
            detail, tb = self._reported(reply)
            self._kill()
            self._load_failure = SubmissionFailure(
                "load_error", f"the submission could not be loaded: {detail}" + (f"\n{tb}" if tb else ""))
            raise self._load_failure
        if not (isinstance(reply, dict) and reply.get("status") == "ready"):
            self._kill()
            self._load_failure = SubmissionFailure("load_error", "the worker did not report ready")
            raise self._load_failure
        self.confinement = list(reply.get("confinement") or [])
        notes = reply.get("notes") if isinstance(reply.get("notes"), list) else []
        # shown to the student as they are, never judged: what of the submission did not load, and why
        self.load_notes = [n[:400] for n in notes[:20] if isinstance(n, str)]

    # -- calls ----------------------------------------------------------------------------------

    def stderr_tail(self, limit: int = 1500) -> str:
        if self._stderr_path is None or not self._stderr_path.exists():
            return ""
        data = self._stderr_path.read_bytes()[-limit:]
        return data.decode("utf-8", errors="replace").strip()

    def _read_reply(self, deadline: float, cpu_deadline: float | None = None) -> bytes:
        """The next frame's payload. TimeoutError when the wall clock passes `deadline` (monotonic) or the
        worker's CPU time passes `cpu_deadline` (process_tree_cpu_seconds of the worker)."""
        from labcheck import wire

        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        buf = bytearray()
        need = 8
        length = None
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                if len(buf) >= need:
                    if length is None:
                        (length,) = struct.unpack(">Q", bytes(buf[:8]))
                        limit = min(wire.MAX_MESSAGE_BYTES, self.limits.max_reply_mb * 1024 * 1024)
                        if length > limit:
                            raise SubmissionFailure(
                                "protocol", f"the submission's reply has {length / 2**20:.0f} MB, more than the "
                                f"{limit / 2**20:.0f} MB limit: does it return far larger tensors than asked?")
                        need = 8 + length
                        continue
                    return bytes(buf[8:need])
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                if cpu_deadline is None:
                    if not sel.select(timeout=remaining):
                        raise TimeoutError
                elif not sel.select(timeout=min(remaining, CPU_POLL_SECONDS)):
                    if process_tree_cpu_seconds(self._proc.pid) > cpu_deadline:
                        raise TimeoutError
                    continue
                chunk = os.read(fd, min(need - len(buf), 1 << 20))  # never past this frame: the next stays queued
                if not chunk:
                    raise EOFError
                buf += chunk

    def _crash_message(self, probe: str) -> str:
        proc = self._proc
        code = None
        if proc is not None:
            try:
                code = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
        if code is not None and code > 128 and self._via_bwrap:
            code = -(code - 128)  # bubblewrap's init reports a signal as exit status 128 + signal
        if code is None:
            what = "the worker process stopped answering"
        elif code < 0:
            name = _signal_name(code)
            hint = {"SIGKILL": f" (most likely it exceeded the memory limit of {self.limits.memory_mb} MB)",
                    "SIGXFSZ": f" (it wrote more than {self.limits.file_mb} MB to a file or to its output)",
                    }.get(name, "")
            what = f"the worker process was killed by {name}{hint}"
        else:
            what = f"the submission ended the worker process with exit code {code} (sys.exit/os._exit?)"
        tail = self.stderr_tail(600)
        return f"{what} while running {probe}" + (f"; last output:\n{tail}" if tail else "")

    def call(self, call: str, timeout: float | None = None, cpu_timeout: float | None = None, **kwargs):
        """Run `call` (labcheck.untrusted.calls.<exercise>) on the submission with these inputs; return its
        raw result or raise SubmissionFailure. Deadlines: `timeout` seconds of wall clock (at most
        Limits.timeout) and, if given, `cpu_timeout` CPU seconds of the worker, whichever comes first; a
        contract function that ran out of time before fails at once with the same message."""
        from labcheck import wire

        if self._load_failure is not None:
            raise self._load_failure
        if self._proc is None or self._proc.poll() is not None:
            self._kill()
            self._start()
        self.calls += 1
        token = secrets.token_hex(8)  # the reply must echo it: stray or forged frames are skipped
        request = wire.encode({"call": call, "kwargs": kwargs, "id": token, "hung": sorted(self.hung)})
        budget = self.limits.timeout if timeout is None else min(float(timeout), self.limits.timeout)
        deadline = time.monotonic() + budget
        cpu_deadline = None if cpu_timeout is None else process_tree_cpu_seconds(self._proc.pid) + cpu_timeout
        running = None  # the contract function the worker said it entered last
        try:
            assert self._proc is not None and self._proc.stdin is not None
            wire.write_frame(self._proc.stdin.fileno(), request)
            stray = 0
            while True:
                payload = self._read_reply(deadline, cpu_deadline)
                try:
                    reply = wire.decode(payload)
                except wire.WireError as e:
                    raise SubmissionFailure("protocol", f"{call}: unreadable reply from the worker ({e})") from None
                if isinstance(reply, dict) and reply.get("id") == token:
                    if reply.get("status") != "progress":
                        break
                    running = str(reply.get("function"))[:100]
                    continue
                stray += 1
                if stray >= MAX_STRAY_FRAMES:
                    raise SubmissionFailure("protocol", f"{call}: the worker sent {MAX_STRAY_FRAMES} frames that "
                                            "were not replies (does the submission write to file descriptors?)")
        except TimeoutError:
            self._kill()
            culprit = running or call
            cpu_used = cpu_deadline is not None and time.monotonic() < deadline
            limit = f"{cpu_timeout:.0f} s of CPU time" if cpu_used else f"{budget:.0f} s"
            message = (f"{call}: `{culprit}` did not return within {limit} (infinite loop? far too slow?); "
                       "later tests that call it fail at once with this message")
            self.hung[culprit] = message
            raise SubmissionFailure("timeout", message) from None
        except SubmissionFailure:
            self._kill()
            raise
        except (EOFError, BrokenPipeError, ConnectionResetError):
            message = self._crash_message(call)
            self._kill()
            raise SubmissionFailure("crash", message) from None
        if not isinstance(reply, dict):
            raise SubmissionFailure("protocol", f"{call}: malformed reply from the worker")
        status = reply.get("status")
        if status == "ok":
            return reply.get("value")
        if status == "error" and reply.get("type") == "KnownHang" and reply.get("function") in self.hung:
            raise SubmissionFailure("timeout", self.hung[reply.get("function")])
        detail, tb = self._reported(reply)
        if status == "load_error":
            self._load_failure = SubmissionFailure(
                "load_error", f"the submission could not be loaded: {detail}" + (f"\n{tb}" if tb else "")
            )
            self._kill()
            raise self._load_failure
        if status == "error" and reply.get("type") == "ContractError":
            raise SubmissionFailure("contract", f"{call}: {reply.get('message', '')}")
        if status == "error":
            raise SubmissionFailure("error", f"{call}: the submission raised {detail}" + (f"\n{tb}" if tb else ""))
        raise SubmissionFailure("protocol", f"{call}: unexpected reply status {status!r}")
