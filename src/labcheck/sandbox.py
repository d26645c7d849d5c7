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
import struct
import subprocess
import sys
import tempfile
import secrets
import time
from pathlib import Path

from labcheck import paths, wire
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


def process_tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of process `root` and all its descendants (all their threads), read from
    /proc by the grader: the worker cannot forge it, and unlike wall time it does not grow with the load
    of the machine, so a CPU deadline gives the same verdict on an idle and on a busy machine."""
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
    import numpy
    import torch

    wanted = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
              str(Path(__file__).parent), os.path.dirname(sys.executable)}
    wanted |= {str(Path(m.__file__).parent) for m in (torch, numpy)}
    found = set()
    for p in wanted:
        for q in (os.path.abspath(p), os.path.realpath(p)):
            if os.path.exists(q):
                found.add(q)
    return tuple(_outermost(found))


SYSTEM_LIBRARIES = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32", "/lib", "/lib64", "/lib32", "/libx32")


def bwrap_command(exe: str, writable: str, readonly: list[str], seccomp_fd: int | None) -> list[str]:
    """bwrap's arguments (before the command): namespaces, then a file system made only of the system's
    shared libraries, `readonly` and the writable scratch `writable` (all at their host paths)."""
    cmd = [exe, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
           "--unshare-cgroup-try", "--disable-userns", "--die-with-parent", "--new-session",
           "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for lib in SYSTEM_LIBRARIES:
        if os.path.islink(lib):
            cmd += ["--symlink", os.readlink(lib), lib]
        elif os.path.isdir(lib):
            cmd += ["--ro-bind", lib, lib]
    for path in _outermost(set(readonly) | set(environment_paths())):
        cmd += ["--ro-bind", path, path]
    cmd += ["--bind", writable, writable, "--chdir", writable]
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
            cmd = bwrap_command(exe, scratch, [], fd) + [sys.executable, "-S", "-c", "import os; os.listdir('/')"]
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
    """What no submission may read: the reference (and its bands), tests, examples, git history."""
    root = paths.repo_root()
    return [str(paths.reference_dir()), str(paths.tests_dir()), str(paths.examples_dir()), str(root / ".git")]


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class Sandbox:
    def __init__(self, submission: str | os.PathLike, exercise: str, limits: Limits | None = None,
                 deny: list[str] | None = None):
        self.submission = Path(submission).resolve()
        self.exercise = exercise
        self.limits = limits or Limits()
        self.deny = default_deny() + [str(Path(d).resolve()) for d in (deny or [])]
        self.hung: dict[str, str] = {}  # contract function -> the timeout message it earned
        self.isolation: dict = {}  # level, launcher, details, why_not_higher: set when the worker is ready
        self._proc: subprocess.Popen | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._stderr_path: Path | None = None
        self._load_failure: SubmissionFailure | None = None
        self._prctl = None
        self._via_bwrap = False
        self.confinement: list[str] = []  # what the worker reported it could enforce (OS level)
        self.calls = 0

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

    def _preexec(self) -> None:
        import resource

        mem = self.limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (mem, mem))
        fsize = self.limits.file_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if os.geteuid() != 0:  # root ignores RLIMIT_NPROC; the audit hook refuses fork there
            resource.setrlimit(resource.RLIMIT_NPROC, (512, 512))
        if self._prctl is not None:  # PR_SET_PDEATHSIG: the worker dies if the grader dies
            self._prctl(1, signal.SIGKILL, 0, 0, 0)

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
        reached = achievable_isolation()
        if self.limits.network:  # only labcheck's own tests ask for the host's network
            reached = {"level": "hook-only", "launcher": "none", "why_not_higher": "Limits(network=True)"}
        seccomp_fd = None
        self._via_bwrap = reached["launcher"] == "bwrap"
        if self._via_bwrap:
            seccomp_fd = _seccomp_pipe()
            prefix = bwrap_command(bwrap_path(), str(work), [str(submission.parent)], seccomp_fd)
        elif reached["launcher"].startswith("unshare"):
            prefix = isolation_prefix()
        else:
            prefix = ()
        policy = {
            "exercise": self.exercise,
            "submission": str(submission),
            "display_name": display,
            "deny": self._effective_deny(work),
            "allow_read": [str(submission)],
            "allow_write": [str(work)],
            "threads": self.limits.threads,
            "max_reply_mb": self.limits.max_reply_mb,
            "mount_namespace": "--mount-proc" in prefix,
        }
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
            "TMPDIR": str(work),
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": str(self.limits.threads),
            "MKL_NUM_THREADS": str(self.limits.threads),
            SANDBOX_ENV: json.dumps(policy),
        }
        for key in ("CUDA_VISIBLE_DEVICES", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            if key in os.environ:
                env[key] = os.environ[key]
        cmd = [*prefix, sys.executable, "-m", "labcheck.worker"]
        self._prctl = _prctl()
        try:
            with open(self._stderr_path, "ab") as err:
                self._proc = subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=work, env=env,
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
        details = list(self.confinement)
        level = reached["level"] if "audit hook" in details else "none"
        self.isolation = {"level": level, "launcher": reached["launcher"], "details": details,
                          "why_not_higher": reached["why_not_higher"]}

    def _copy_submission(self, scratch: Path) -> tuple[Path, str | None]:
        """The worker reads a private copy of the submission's entry file, never the original
        (which may sit among other students' files or in examples/, both hidden from it)."""
        from labcheck.submission import submission_entry

        try:
            entry = submission_entry(self.submission, self.exercise)
        except (OSError, ValueError):
            return self.submission, None  # the worker reports why it cannot load it
        folder = scratch / "submission"
        folder.mkdir(exist_ok=True)
        copy = folder / entry.name
        shutil.copyfile(entry, copy)
        return copy, str(entry)

    def _await_ready(self) -> None:
        """Wait for the worker's first frame: the submission loaded, or why not (remembered)."""
        budget = self.limits.startup_timeout
        try:
            payload = self._read_reply(time.monotonic() + budget)
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
            detail = f"{reply.get('type', 'Error')}: {reply.get('message', '')}"
            tb = reply.get("traceback") or ""
            self._kill()
            self._load_failure = SubmissionFailure(
                "load_error", f"the submission could not be loaded: {detail}" + (f"\n{tb}" if tb else ""))
            raise self._load_failure
        if not (isinstance(reply, dict) and reply.get("status") == "ready"):
            self._kill()
            self._load_failure = SubmissionFailure("load_error", "the worker did not report ready")
            raise self._load_failure
        self.confinement = list(reply.get("confinement") or [])

    # -- calls ----------------------------------------------------------------------------------

    def stderr_tail(self, limit: int = 1500) -> str:
        if self._stderr_path is None or not self._stderr_path.exists():
            return ""
        data = self._stderr_path.read_bytes()[-limit:]
        return data.decode("utf-8", errors="replace").strip()

    def _read_reply(self, deadline: float, cpu_deadline: float | None = None) -> bytes:
        """The next frame's payload. TimeoutError when the wall clock passes `deadline` (monotonic) or the
        worker's CPU time passes `cpu_deadline` (process_tree_cpu_seconds of the worker)."""
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
        detail = f"{reply.get('type', 'Error')}: {reply.get('message', '')}"
        tb = reply.get("traceback") or ""
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
