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

from labcheck import isolation
from labcheck.isolation import (  # noqa: F401  (the names tests and other modules read as sandbox.X)
    BWRAP_ENV, DEFAULT_MIN_ISOLATION, DEVICES, LEVEL_HELP, LEVELS, SCRATCH_MB, SHM_MB, SYSTEM_LIBRARIES, TMP_MB,
    _bwrap_check, _seccomp_pipe, bwrap_command, bwrap_path, calls_path, check_min_isolation, default_deny,
    achievable_isolation, environment_paths, how_to_reach, isolation_level, isolation_prefix, private_devices,
    unprivileged_ids)
from labcheck.untrusted.serve import SANDBOX_ENV
from labcheck.workerproc import (  # noqa: F401
    MAX_TASKS, Limits, SubmissionFailure, TaskCap, _prctl, _process_table, _rlimits, _signal_name, _worker_env,
    process_tree_cpu_seconds)
from labcheck.zygote_client import ZYGOTE_ENV, ForkedWorker, WorkerZygote  # noqa: F401


MAX_STRAY_FRAMES = 16  # frames without the call's token tolerated before the call fails
CPU_POLL_SECONDS = 0.2  # how often a call's CPU time is read while it runs


class Sandbox:
    """One submission's worker, started confined (labcheck.isolation: bubblewrap, else unshare and the
    worker's own confinement; forked from a WorkerZygote where `labcheck grade` lends one), and the calls
    into it: `call` sends the grader's inputs and returns the raw reply or raises SubmissionFailure, under a
    wall-clock and a CPU deadline. `isolation` is the level it reached; `load_notes` what did not load."""

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
        reached = isolation.achievable_isolation()
        if self.limits.network:  # only labcheck's own tests ask for the host's network
            reached = {"level": "hook-only", "launcher": "none", "why_not_higher": "Limits(network=True)"}
        seccomp_fd = None
        self._via_bwrap = reached["launcher"] == "bwrap"
        if self._via_bwrap:
            seccomp_fd = _seccomp_pipe()
            prefix = bwrap_command(bwrap_path(), str(work), [str(submission.parent), calls_path(self.exercise)],
                                   seccomp_fd, str(scratch / "dev"))
        elif reached["launcher"].startswith("unshare"):
            prefix = isolation.isolation_prefix()
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
            os.chmod(scratch, 0o711)  # (TemporaryDirectory makes it 0700: traversable, never listable)
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
