"""A worker that imported torch once and forks one child per submission in turn (untrusted side;
run as `python -m labcheck.worker --zygote`, started by labcheck.sandbox.WorkerZygote under bubblewrap).

A fresh worker spends ~1.8 s of CPU on bubblewrap, Python and `import torch` before a student line
runs: about half of what grading a small submission costs. The zygote pays that once per grading
slot. It runs no student code itself and never runs a torch kernel (fork would copy a broken thread
pool); per request it forks a child that becomes exactly the worker `python -m labcheck.worker`
would have been (labcheck.untrusted.serve), on the channel the grader passed in.

What one child can leave for the next student's child, and why it cannot:
  - processes: the child's own filter (confine.block_new_processes) refuses fork, exec and ptrace, and
    the grader kills the child by its pid when the submission is done; the zygote waits for it before
    it forks the next;
  - the zygote's memory: the zygote is not dumpable (no ptrace, /proc/PID/mem or pidfd_getfd from
    its children, which hold no capabilities: bwrap --cap-drop ALL);
  - files: everything writable in the sandbox (this folder, /tmp, /dev, /dev/shm) is put back as it
    was after each child, before the zygote answers, and so are the permissions of those folders, of
    what was in them and of every folder on the way to them (a child may `os.fchmod` them by
    descriptor, which no audit hook sees); the state is then read again, and anything that cannot be
    read or put back ends the zygote: it reports "not clean", never clean, and the grader starts a
    new one (the child after it is served by a fresh worker, never charged for it);
  - descriptors: the child closes the control socket before any student line runs.
A child that kills or stops the zygote only breaks its own grading (the grader then starts fresh).

Control messages (one JSON object per SOCK_SEQPACKET message on fd 0, descriptors as SCM_RIGHTS):
  zygote -> grader, once: {"status": "ready"}
  grader -> zygote: {"op": "spawn", "id": ID, "policy": {...}, "env": {...}, "suffix": ".py",
                     "rlimits": {name: bytes}} + [channel, stderr log, submission file]
  zygote -> grader: {"id": ID, "status": "forked", "entry": the child's copy of the file}; then, once the
                    child has ended and the files are put back:
                    {"id": ID, "status": "exited", "returncode": N (negative: signal), "clean": bool}
"""
from __future__ import annotations

import json
import os
import socket
import sys

CONTROL_FD = 0
MAX_MESSAGE = 1 << 16
WRITABLE_ROOTS = ("/tmp", "/dev/shm", "/dev")  # besides the zygote's own folder (its cwd)


def _send(sock: socket.socket, message: dict) -> None:
    sock.send(json.dumps(message).encode())


def _watched(folders) -> tuple[str, ...]:
    """The folders the next child depends on: the writable ones and every folder on the way to them from /,
    outermost first (a child may chmod any of them, by path or by descriptor)."""
    found = set()
    for folder in folders:
        parts = folder.rstrip("/").split("/")
        found |= {"/".join(parts[:i]) or "/" for i in range(1, len(parts) + 1)}
    return tuple(sorted(found, key=lambda p: (p.count("/"), p)))  # ("/" sorts before "/tmp": same depth, shorter)


def _state(folders: tuple[str, ...], writable: tuple[str, ...]) -> dict | None:
    """Each watched folder's permission bits, and the names and modes in each writable one; None when any
    of it cannot be read (a clean-up that cannot look is never clean)."""
    import stat

    try:
        state = {p: stat.S_IMODE(os.lstat(p).st_mode) for p in folders}
        for folder in writable:
            state[folder + "/*"] = {name: os.lstat(os.path.join(folder, name)).st_mode for name in os.listdir(folder)}
    except OSError:
        return None
    return state


def _put_back(kept: dict, folders: tuple[str, ...], writable: tuple[str, ...]) -> bool:
    """Restore the kept state: permissions first (outermost first, so each next one can be reached), then
    remove what was added to the writable folders; True only if the state then reads exactly as kept."""
    import shutil

    for path in folders:
        try:
            if os.lstat(path).st_mode & 0o7777 != kept[path]:
                os.chmod(path, kept[path])
        except OSError:
            pass
    for folder in writable:
        try:
            added = set(os.listdir(folder)) - set(kept[folder + "/*"])
        except OSError:
            continue
        for name in added:
            path = os.path.join(folder, name)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    for root, dirs, _ in os.walk(path):  # a child may have taken its own write permission away
                        for d in dirs:
                            if not os.path.islink(os.path.join(root, d)):
                                os.chmod(os.path.join(root, d), 0o700)
                    os.chmod(path, 0o700)
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
            except OSError:
                pass
        for name, mode in kept[folder + "/*"].items():  # what was there before: its permissions back
            try:
                path = os.path.join(folder, name)
                if os.lstat(path).st_mode != mode and not os.path.islink(path):
                    os.chmod(path, mode & 0o7777)
            except OSError:
                pass
    return _state(folders, writable) == kept


def _entry(scratch: str, request: dict) -> str:
    """The child's copy of the submission: named by its kind only (.py or .ipynb), never by the student."""
    suffix = str(request.get("suffix", ".py"))
    return os.path.join(scratch, "submission", "submission" + (suffix if suffix in (".py", ".ipynb") else ".py"))


def _child(control: socket.socket, request: dict, fds: list[int], scratch: str) -> None:
    """In the forked child: become the worker for this one submission (never returns)."""
    import resource

    from labcheck.untrusted import serve

    channel, stderr, submission = fds
    try:
        control.close()
        os.setsid()
        os.dup2(stderr, 2)
        os.close(stderr)
        for name, value in (request.get("rlimits") or {}).items():
            limit = getattr(resource, name)
            resource.setrlimit(limit, (int(value), int(value)))  # the zygote's own, or lower
        os.makedirs(os.path.join(scratch, "submission"))
        entry = _entry(scratch, request)
        with open(entry, "wb") as copy:  # the private copy the fresh worker would have been given
            while chunk := os.read(submission, 1 << 20):
                copy.write(chunk)
        os.close(submission)
        work = os.path.join(scratch, "cwd")
        os.makedirs(work)
        os.chdir(work)
        os.environ.clear()
        os.environ.update({**request["env"], "HOME": work, "TMPDIR": work})
        policy = {**request["policy"], "submission": entry,
                  "allow_read": [entry, request["policy"]["calls_path"]], "allow_write": [work],
                  "mount_namespace": False}
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)  # student prints go to this submission's log, never into replies
        os.set_inheritable(channel, False)
    except BaseException as e:
        try:
            print(f"labcheck zygote: could not prepare the child: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        finally:
            os._exit(70)
    try:
        serve.serve(policy, channel, channel)
    finally:
        os._exit(0)


def main() -> None:
    import ctypes

    import numpy  # noqa: F401  (what every child needs, imported once)
    import torch  # noqa: F401

    try:  # what nearly every student imports (each seed notebook does): 1.2 s of CPU once, not per child
        import torchvision  # noqa: F401
    except ImportError:
        pass

    from labcheck import wire  # noqa: F401
    from labcheck.untrusted import confine, loader, serve  # noqa: F401
    from labcheck.untrusted.calls import load_calls

    for exercise, path in json.loads(os.environ.get("LABCHECK_ZYGOTE_EXERCISES", "{}")).items():
        load_calls(exercise, path)  # (each child finds it loaded: serve's load_calls returns the same)
    PR_SET_DUMPABLE = 4
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise SystemExit("labcheck zygote: PR_SET_DUMPABLE refused")
    control = socket.socket(fileno=CONTROL_FD)
    home = os.getcwd()
    writable = (home, *WRITABLE_ROOTS)
    folders = _watched(writable)
    keep = _state(folders, writable)
    if keep is None:
        raise SystemExit("labcheck zygote: cannot read its own sandbox's folders")
    _send(control, {"status": "ready"})
    count = 0
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(control, MAX_MESSAGE, 3)
        except OSError:
            return
        if not data:
            return  # the grader closed the control socket
        request = json.loads(data)
        if request.get("op") != "spawn" or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            _send(control, {"id": request.get("id"), "status": "refused", "message": "malformed request"})
            continue
        count += 1
        scratch = os.path.join(home, f"child-{count}")
        pid = os.fork()
        if pid == 0:
            _child(control, request, fds, scratch)
        for fd in fds:
            os.close(fd)
        entry = _entry(scratch, request)
        _send(control, {"id": request["id"], "status": "forked", "entry": entry})
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        clean = _put_back(keep, folders, writable)
        _send(control, {"id": request["id"], "status": "exited", "returncode": code, "clean": clean})
        if not clean:
            return  # something a child left cannot be removed: the grader starts a new zygote
