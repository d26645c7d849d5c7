"""The grader's side of a worker zygote (labcheck.untrusted.zygote): WorkerZygote starts one under the same
bubblewrap set-up as a fresh worker and asks it to fork one confined child per submission, ForkedWorker is such
a child seen from the grader (the part of subprocess.Popen's interface labcheck.sandbox.Sandbox uses).
"""
from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from labcheck.isolation import achievable_isolation, bwrap_command, bwrap_path, calls_path
from labcheck.workerproc import Limits, TaskCap, _children_of, _prctl, _rlimits, _worker_env


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
