"""The worker's serve loop (untrusted side; run as `python -m labcheck.worker`).

Before any student line runs it
  1. moves the protocol to private file descriptors and points fd 1 at stderr, so a print cannot
     corrupt replies;
  2. imports torch, numpy and the exercise's calls (its calls.py, at the path the grader names);
  3. reads the submission's source, then confines itself (labcheck.untrusted.confine: mount hiding
     where bubblewrap is absent, seccomp, the audit hook);
  4. executes the submission (labcheck.untrusted.loader) and answers one reply per request:
     {"call": name, "kwargs": {...}, "id": token, "hung": [functions]} ->
     {"status": "ok", "value": ...} | {"status": "error", ...} | {"status": "load_error", ...},
     with {"status": "progress", "function": name} frames before it whenever a contract function is
     entered, so the grader can blame a hang on the function that was running.
Replies are raw data (labcheck.wire); the grader computes every verdict itself.
"""
from __future__ import annotations

import json
import os
import struct
import sys
import time

SANDBOX_ENV = "LABCHECK_SANDBOX_POLICY"


def _read_exact(fd: int, n: int) -> bytes:
    chunks, remaining = [], n
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _private_protocol_fds() -> tuple[int, int]:
    in_fd, out_fd = os.dup(0), os.dup(1)
    os.set_inheritable(in_fd, False)
    os.set_inheritable(out_fd, False)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # student prints go to the worker's stderr log, never into replies
    return in_fd, out_fd


def _confine(policy: dict) -> list[str]:
    from labcheck.untrusted import confine

    done = []
    if policy.get("mount_namespace"):
        try:
            done.append(confine.confine_filesystem(policy))
        except Exception as e:  # best effort: the layers below still apply
            done.append(f"confine_filesystem failed: {e}")
    try:
        done.append(confine.block_new_processes())
    except Exception as e:
        done.append(f"block_new_processes failed: {e}")
    drop = policy.get("drop_to")
    if drop:  # before the hook (which refuses setuid) and before any student line: then for good
        import resource

        resource.setrlimit(resource.RLIMIT_NPROC, (512, 512))  # counted for that user: threads and processes
        os.setgroups([])
        os.setgid(int(drop[1]))
        os.setuid(int(drop[0]))
        done.append(f"runs as uid {os.getuid()} (not root)")
    confine.install_guard(policy)
    done.append("audit hook")
    return done


def serve(policy: dict, in_fd: int, out_fd: int) -> None:
    """Load the submission `policy` names, confine this process, then answer requests on in_fd/out_fd."""
    from labcheck import wire
    from labcheck.untrusted import loader
    from labcheck.untrusted.calls import TRACKER, KnownHang, load_calls

    exercise = policy["exercise"]
    submission = policy["submission"]

    import numpy  # noqa: F401  (preloaded before the guard, which forbids ctypes)
    import torch

    torch.set_num_threads(int(policy.get("threads", 1)))
    calls = load_calls(exercise, policy["calls_path"])

    load_error = None
    entry_name = str(submission)
    try:
        from pathlib import Path

        entry, source = loader.read_source(Path(submission), exercise)
        entry_name = str(entry)
    except Exception as e:  # unreadable submission: every call reports it
        load_error = {"type": type(e).__name__, "message": str(e), "traceback": ""}
        source = None
    confinement = _confine(policy) if policy.get("guard", True) else []
    print("labcheck worker confinement: " + "; ".join(confinement), file=sys.stderr, flush=True)
    display = policy.get("display_name")
    max_reply = int(policy.get("max_reply_mb", 256)) * 2**20
    module = None
    notes: list[str] = []  # what did not load and why (shown to the student; never part of a verdict)
    if source is not None:
        try:
            module = loader.execute_submission(entry, source, notes)
        except BaseException as e:  # SyntaxError, SystemExit, KeyboardInterrupt alike: report, keep serving
            load_error = loader.failure(e, entry_name, display)

    # Tell the grader the submission is loaded (or why not), so loading has its own deadline.
    wire.write_frame(out_fd, wire.encode(
        {"status": "load_error", **load_error} if load_error else {"status": "ready", "confinement": confinement,
                                                                   "notes": notes}))

    current = {"id": None}

    def announce(function: str) -> None:
        wire.write_frame(out_fd, wire.encode({"status": "progress", "function": function, "id": current["id"]}))

    TRACKER.announce = announce
    while True:
        try:
            (length,) = struct.unpack(">Q", _read_exact(in_fd, 8))
            request = wire.decode(_read_exact(in_fd, length))
        except EOFError:
            return
        current["id"] = request.get("id")
        TRACKER.hung, TRACKER.last = frozenset(request.get("hung") or ()), None
        if load_error is not None:
            reply = {"status": "load_error", **load_error}
        else:
            reply = run_call(calls, module, request, entry_name, display, KnownHang)
        reply["id"] = request.get("id")
        try:
            payload = wire.encode(reply)
            if len(payload) > max_reply:
                mb = len(payload) / 2**20
                payload = None
                payload = wire.encode({"status": "error", "type": "ReplyTooLarge", "id": request.get("id"),
                                       "message": f"the submission's reply has {mb:.0f} MB, more than the "
                                       f"{max_reply / 2**20:.0f} MB limit: does it return far larger tensors "
                                       "than asked?", "traceback": ""})
        except BaseException as e:  # e.g. a tensor on the meta device, a list subclass whose __iter__ raises
            payload = wire.encode({"status": "error", "type": "UnsupportedResult", "id": request.get("id"),
                                   "message": "the submission returned data that cannot be checked: "
                                   f"{loader.safe_str(e)}", "traceback": ""})
        wire.write_frame(out_fd, payload)


def run_call(calls, module, request: dict, entry_name: str, display: str | None, known_hang) -> dict:
    from labcheck.untrusted import loader

    name = request.get("call")
    fn = calls.get(name)
    if fn is None:
        return {"status": "error", "type": "UnknownCall", "message": f"no call {name!r}", "traceback": ""}
    start = time.perf_counter()
    try:
        value = fn(module, **request.get("kwargs", {}))
    except known_hang as e:
        return {"status": "error", "type": "KnownHang", "function": e.function, "message": "", "traceback": ""}
    except BaseException as e:  # the student's exception (or sys.exit) is a per-test result, not a crash
        return {"status": "error", **loader.failure(e, entry_name, display), "seconds": time.perf_counter() - start}
    return {"status": "ok", "value": value, "seconds": time.perf_counter() - start}


def main() -> None:
    in_fd, out_fd = _private_protocol_fds()
    serve(json.loads(os.environ.get(SANDBOX_ENV, "{}")), in_fd, out_fd)
