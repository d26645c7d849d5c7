"""Run probes against an untrusted submission in a separate, limited worker process.

    with Sandbox("alice.py", "width") as box:
        out = box.call("mlp_forward", seed=0, n=5)   # plain data, or SubmissionFailure

Isolation, outermost first:
  - its own process and session (killed as a group), a fresh scratch folder as cwd/HOME/TMPDIR,
    a clean environment;
  - resource limits: RLIMIT_DATA (memory), RLIMIT_FSIZE (files it writes), RLIMIT_CORE 0,
    RLIMIT_NPROC where not root, and a wall-clock timeout per call enforced from here;
  - no network: a fresh network namespace (`unshare -n`) where the OS allows it;
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
import time
from pathlib import Path

from labcheck import paths, wire
from labcheck.worker import SANDBOX_ENV


@dataclasses.dataclass
class Limits:
    timeout: float = 60.0  # seconds of wall clock per probe call
    startup_timeout: float = 90.0  # seconds to import torch and execute the submission
    memory_mb: int = 3072  # RLIMIT_DATA of the worker; torch alone maps ~0.8 GB of data
    file_mb: int = 64  # largest file the worker may write (scratch only)
    threads: int = 1  # torch threads in the worker, so parallel grading stays fair
    network: bool = False  # True lets the worker keep the host's network namespace


class SubmissionFailure(AssertionError):
    """The submission failed a call: its message is what the student reads."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind  # load_error | error | timeout | crash | protocol


@functools.lru_cache(maxsize=1)
def _can_unshare_network() -> bool:
    exe = shutil.which("unshare")
    if not exe:
        return False
    try:
        return subprocess.run([exe, "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


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

    def _start(self) -> None:
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="labcheck-worker-")
        scratch = Path(self._scratch.name)
        work = scratch / "cwd"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        self._stderr_path = scratch / "stderr.log"
        policy = {
            "exercise": self.exercise,
            "submission": str(self.submission),
            "deny": self.deny,
            "allow_read": [str(self.submission)],
            "allow_write": [str(work)],
            "threads": self.limits.threads,
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
        cmd = [sys.executable, "-m", "labcheck.worker"]
        if not self.limits.network and _can_unshare_network():
            cmd = [shutil.which("unshare"), "-n", *cmd]
        with open(self._stderr_path, "ab") as err:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=work, env=env,
                preexec_fn=self._preexec, start_new_session=True, close_fds=True,
            )

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
                        if length > wire.MAX_MESSAGE_BYTES:
                            raise SubmissionFailure("protocol", "the worker sent a reply larger than 1 GiB")
                        need = 8 + length
                        continue
                    return bytes(buf[8:need])
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(timeout=remaining):
                    raise TimeoutError
                chunk = os.read(fd, max(need - len(buf), 1 << 16))
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
            hint = " (most likely it exceeded the memory limit of %d MB)" % self.limits.memory_mb if name == "SIGKILL" else ""
            what = f"the worker process was killed by {name}{hint}"
        else:
            what = f"the submission ended the worker process with exit code {code} (sys.exit/os._exit?)"
        tail = self.stderr_tail(600)
        return f"{what} while running {probe}" + (f"; last output:\n{tail}" if tail else "")

    def call(self, probe: str, **kwargs):
        """Run `probe` against the submission; return its value or raise SubmissionFailure."""
        if self._load_failure is not None:
            raise self._load_failure
        starting = self._proc is None or self._proc.poll() is not None
        if starting:
            self._kill()
            self._start()
        self.calls += 1
        request = wire.encode({"probe": probe, "kwargs": kwargs})
        budget = self.limits.timeout + (self.limits.startup_timeout if starting else 0.0)
        deadline = time.monotonic() + budget
        try:
            assert self._proc is not None and self._proc.stdin is not None
            wire.write_frame(self._proc.stdin.fileno(), request)
            payload = self._read_reply(deadline)
        except TimeoutError:
            self._kill()
            what = "did not finish loading or" if starting else "did not"
            raise SubmissionFailure(
                "timeout",
                f"{probe}: the submission {what} return within {budget:.0f} s (infinite loop? too slow?)",
            ) from None
        except (EOFError, BrokenPipeError, ConnectionResetError):
            message = self._crash_message(probe)
            self._kill()
            raise SubmissionFailure("crash", message) from None
        try:
            reply = wire.decode(payload)
        except wire.WireError as e:
            self._kill()
            raise SubmissionFailure("protocol", f"{probe}: unreadable reply from the worker ({e})") from None
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
