"""Run probes against an untrusted submission in a separate, limited worker process.

    with Sandbox("alice.py", "width") as box:
        out = box.call("mlp_forward", seed=0, n=5)   # plain data, or SubmissionFailure

Isolation, outermost first:
  - its own process and session (killed as a group), a fresh scratch folder as cwd/HOME/TMPDIR,
    a clean environment; it dies with the grader (PR_SET_PDEATHSIG) and, where the OS allows, runs as
    PID 1 of its own PID namespace, so every process it might start dies with it and /proc shows no
    grader process;
  - resource limits: RLIMIT_DATA (memory), RLIMIT_FSIZE (files it writes), RLIMIT_CORE 0,
    RLIMIT_NPROC where not root, and a wall-clock timeout per call enforced from here;
  - no network: a fresh network namespace (`unshare -n`) where the OS allows it;
  - loading the submission has its own deadline (the worker reports "ready" or the load error
    first), and a submission that cannot load is remembered: its tests fail at once;
  - inside, an audit hook (labcheck.worker.install_guard) refusing processes, sockets, ctypes and
    the grader's files;
  - replies decoded by labcheck.wire (data only, never pickle) and judged here.
A failure of any kind becomes a SubmissionFailure for that one test; the next call starts a
fresh worker, unless the submission itself cannot load, which is remembered.
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
from labcheck.worker import SANDBOX_ENV


MAX_STRAY_FRAMES = 16  # frames without the call's token tolerated before the call fails


@dataclasses.dataclass
class Limits:
    timeout: float = 60.0  # seconds of wall clock per probe call
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
        self._proc: subprocess.Popen | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._stderr_path: Path | None = None
        self._load_failure: SubmissionFailure | None = None
        self._prctl = None
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

    def _start(self) -> None:
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="labcheck-worker-")
        scratch = Path(self._scratch.name)
        work = scratch / "cwd"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        self._stderr_path = scratch / "stderr.log"
        submission, display = self._copy_submission(scratch)
        prefix = isolation_prefix()
        if self.limits.network:
            prefix = tuple(f for f in prefix if f != "-n") if "-p" in prefix else ()
        policy = {
            "exercise": self.exercise,
            "submission": str(submission),
            "display_name": display,
            "deny": self.deny,
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
        for key in ("CUDA_VISIBLE_DEVICES", "LABCHECK_HOME", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            if key in os.environ:
                env[key] = os.environ[key]
        cmd = [*prefix, sys.executable, "-m", "labcheck.worker"]
        self._prctl = _prctl()
        with open(self._stderr_path, "ab") as err:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=work, env=env,
                preexec_fn=self._preexec, start_new_session=True, close_fds=True,
            )
        self._await_ready()

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

    def _read_reply(self, deadline: float) -> bytes:
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
                if remaining <= 0 or not sel.select(timeout=remaining):
                    raise TimeoutError
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

    def call(self, probe: str, **kwargs):
        """Run `probe` against the submission; return its value or raise SubmissionFailure."""
        if self._load_failure is not None:
            raise self._load_failure
        if self._proc is None or self._proc.poll() is not None:
            self._kill()
            self._start()
        self.calls += 1
        token = secrets.token_hex(8)  # the reply must echo it: stray or forged frames are skipped
        request = wire.encode({"probe": probe, "kwargs": kwargs, "id": token})
        budget = self.limits.timeout
        deadline = time.monotonic() + budget
        try:
            assert self._proc is not None and self._proc.stdin is not None
            wire.write_frame(self._proc.stdin.fileno(), request)
            for _ in range(MAX_STRAY_FRAMES):
                payload = self._read_reply(deadline)
                try:
                    reply = wire.decode(payload)
                except wire.WireError as e:
                    raise SubmissionFailure("protocol", f"{probe}: unreadable reply from the worker ({e})") from None
                if isinstance(reply, dict) and reply.get("id") == token:
                    break
            else:
                raise SubmissionFailure("protocol", f"{probe}: the worker sent {MAX_STRAY_FRAMES} frames that "
                                        "were not replies (does the submission write to file descriptors?)")
        except TimeoutError:
            self._kill()
            raise SubmissionFailure(
                "timeout", f"{probe}: the submission did not return within {budget:.0f} s (infinite loop? too slow?)",
            ) from None
        except SubmissionFailure:
            self._kill()
            raise
        except (EOFError, BrokenPipeError, ConnectionResetError):
            message = self._crash_message(probe)
            self._kill()
            raise SubmissionFailure("crash", message) from None
        if not isinstance(reply, dict):
            raise SubmissionFailure("protocol", f"{probe}: malformed reply from the worker")
        status = reply.get("status")
        if status == "ok":
            return reply.get("value")
        detail = f"{reply.get('type', 'Error')}: {reply.get('message', '')}"
        tb = reply.get("traceback") or ""
        if status == "load_error":
            self._load_failure = SubmissionFailure(
                "load_error", f"the submission could not be loaded: {detail}" + (f"\n{tb}" if tb else "")
            )
            self._kill()
            raise self._load_failure
        if status == "error" and reply.get("type") == "ContractError":
            raise SubmissionFailure("contract", f"{probe}: {reply.get('message', '')}")
        if status == "error":
            raise SubmissionFailure("error", f"{probe}: the submission raised {detail}" + (f"\n{tb}" if tb else ""))
        raise SubmissionFailure("protocol", f"{probe}: unexpected reply status {status!r}")
