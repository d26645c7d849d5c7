"""The worker process that holds one untrusted submission (run as `python -m labcheck.worker`).

The grader starts it through `labcheck.sandbox.Sandbox`, with resource limits already applied.
Here, before any student line runs, it
  1. moves the protocol to private file descriptors and points fd 1 at stderr, so a print
     cannot corrupt replies;
  2. imports torch, numpy and the exercise's probes (trusted code);
  3. reads the submission's source into memory, then installs an audit hook (which Python
     cannot remove) that refuses new processes, sockets, ctypes, and file access to the
     grader's reference, tests, examples, reports and other students' files;
  4. executes the submission and answers probe calls: {"probe": name, "kwargs": {...}} ->
     {"status": "ok", "value": ...} | {"status": "error", ...} | {"status": "load_error", ...}.
Replies are plain data (labcheck.wire); the grader computes every verdict itself.
"""
from __future__ import annotations

import ast
import importlib
import json
import os
import struct
import sys
import time
import traceback
import types
from pathlib import Path

SANDBOX_ENV = "LABCHECK_SANDBOX_POLICY"


# ---------------------------------------------------------------------------------------------
# Loading submissions: .py file, folder, or .ipynb (definitions only)

SAFE_NODES = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _is_constant_assignment(node: ast.stmt) -> bool:
    """`NAME = <literal>` (or annotated): kept from notebooks; anything that computes is dropped."""
    if isinstance(node, ast.Assign):
        targets, value = node.targets, node.value
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        targets, value = [node.target], node.value
    else:
        return False
    if not all(isinstance(t, ast.Name) for t in targets):
        return False
    try:
        ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def notebook_to_source(text: str) -> str:
    """Keep imports, defs, classes and constant assignments of every code cell; drop the rest.

    Cells that do not parse (e.g. IPython magics) are parsed line-group by line-group after
    removing `%`/`!` lines; training loops and prints never reach the worker.
    """
    nb = json.loads(text)
    kept: list[str] = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else str(src)
        src = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, SAFE_NODES) or _is_constant_assignment(node):
                kept.append(ast.get_source_segment(src, node) or ast.unparse(node))
    return "\n\n".join(kept) + "\n"


def submission_entry(path: Path, exercise: str) -> Path:
    """The file to execute: the path itself, or inside a folder <exercise>.py / submission.py / the only .py."""
    if path.is_file():
        return path
    if path.is_dir():
        for name in (f"{exercise}.py", "submission.py", f"{exercise}.ipynb", "__init__.py"):
            if (path / name).is_file():
                return path / name
        candidates = sorted(path.glob("*.py")) + sorted(path.glob("*.ipynb"))
        if len(candidates) == 1:
            return candidates[0]
        raise FileNotFoundError(
            f"folder {path} has no {exercise}.py or submission.py and {len(candidates)} candidate files"
        )
    raise FileNotFoundError(f"submission {path} does not exist")


def read_submission(path: Path, exercise: str) -> tuple[Path, str]:
    entry = submission_entry(path, exercise)
    text = entry.read_text(encoding="utf-8", errors="replace")
    if entry.suffix == ".ipynb":
        text = notebook_to_source(text)
    return entry, text


def execute_submission(entry: Path, source: str) -> types.ModuleType:
    """Run the source as a fresh module with a unique name (never on sys.path)."""
    name = f"labcheck_submission_{os.getpid()}_{int(time.time() * 1000)}"
    module = types.ModuleType(name)
    module.__file__ = str(entry)
    sys.modules[name] = module
    code = compile(source, str(entry), "exec")
    exec(code, module.__dict__)
    return module


# ---------------------------------------------------------------------------------------------
# The guard


def install_guard(policy: dict) -> None:
    deny = [os.path.realpath(p) for p in policy.get("deny", [])]
    allow_read = [os.path.realpath(p) for p in policy.get("allow_read", [])]
    allow_write = [os.path.realpath(p) for p in policy.get("allow_write", [])] + ["/dev/null"]
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    forbidden = {
        "os.fork": "starting processes", "os.forkpty": "starting processes", "os.system": "starting processes",
        "os.exec": "starting processes", "os.posix_spawn": "starting processes", "os.spawn": "starting processes",
        "subprocess.Popen": "starting processes", "os.kill": "sending signals", "os.killpg": "sending signals",
        "signal.pthread_kill": "sending signals", "socket.connect": "network access",
        "socket.bind": "network access", "socket.getaddrinfo": "network access", "socket.sendto": "network access",
        "ctypes.dlopen": "loading native code", "ctypes.dlsym": "loading native code",
        "ctypes.cdata": "raw memory access", "sys.addaudithook": "changing the sandbox",
        "sys.setprofile": "changing the sandbox", "sys.settrace": "changing the sandbox",
        "os.setuid": "changing the sandbox", "os.chroot": "changing the sandbox",
    }
    path_events = {"os.remove", "os.rename", "os.rmdir", "os.truncate", "os.chmod", "os.chown", "os.link",
                   "os.symlink", "shutil.rmtree", "shutil.move", "shutil.copyfile", "os.utime", "os.mkdir"}

    def under(path: str, roots: list[str]) -> bool:
        return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)

    def check_path(raw, writing: bool) -> None:
        if isinstance(raw, int) or raw is None:
            return
        path = os.path.realpath(os.fsdecode(raw))
        if under(path, deny) and not under(path, allow_read):
            raise PermissionError(f"labcheck sandbox: access to {path} is not allowed")
        if writing and not under(path, allow_write):
            raise PermissionError(f"labcheck sandbox: writing {path} is not allowed (only the scratch folder)")

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, 0))[:3]
            writing = bool((flags or 0) & write_flags) or (isinstance(mode, str) and any(c in mode for c in "wax+"))
            check_path(path, writing)
        elif event in forbidden:
            raise PermissionError(f"labcheck sandbox: {forbidden[event]} is not allowed ({event})")
        elif event in path_events:
            for arg in args[:2]:
                if isinstance(arg, (str, bytes, os.PathLike)):
                    check_path(arg, writing=True)

    sys.addaudithook(hook)


# ---------------------------------------------------------------------------------------------
# The serving loop


def _read_exact(fd: int, n: int) -> bytes:
    chunks, remaining = [], n
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _student_traceback(exc: BaseException, entry: str) -> str:
    """The traceback lines from the submission's own file (what a student can act on)."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if f.filename == entry]
    text = "".join(traceback.format_list(own[-5:])) if own else ""
    return text + "".join(traceback.format_exception_only(type(exc), exc)).strip()


def serve() -> None:
    from labcheck import wire

    in_fd, out_fd = os.dup(0), os.dup(1)
    os.set_inheritable(in_fd, False)
    os.set_inheritable(out_fd, False)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # student prints go to the worker's stderr log, never into replies

    policy = json.loads(os.environ.get(SANDBOX_ENV, "{}"))
    exercise = policy["exercise"]
    submission = Path(policy["submission"])

    import numpy  # noqa: F401  (preloaded before the guard, which forbids ctypes)
    import torch

    torch.set_num_threads(int(policy.get("threads", 1)))
    probes = importlib.import_module(f"labcheck.probes.{exercise}")

    load_error = None
    entry_name = str(submission)
    try:
        entry, source = read_submission(submission, exercise)
        entry_name = str(entry)
    except Exception as e:  # unreadable submission: every call reports it
        load_error = {"type": type(e).__name__, "message": str(e), "traceback": ""}
        source = None
    if policy.get("guard", True):
        install_guard(policy)
    module = None
    if source is not None:
        try:
            module = execute_submission(entry, source)
        except BaseException as e:  # SyntaxError, SystemExit, KeyboardInterrupt alike: report, keep serving
            load_error = {"type": type(e).__name__, "message": str(e)[:2000],
                          "traceback": _student_traceback(e, entry_name)[-4000:]}

    while True:
        try:
            (length,) = struct.unpack(">Q", _read_exact(in_fd, 8))
            request = wire.decode(_read_exact(in_fd, length))
        except EOFError:
            return
        if load_error is not None:
            reply = {"status": "load_error", **load_error}
        else:
            reply = run_probe(probes, module, request, entry_name)
        try:
            payload = wire.encode(reply)
        except Exception as e:
            payload = wire.encode({"status": "error", "type": "UnsupportedResult",
                                   "message": f"the submission returned data that cannot be checked: {e}",
                                   "traceback": ""})
        wire.write_frame(out_fd, payload)


def run_probe(probes, module, request: dict, entry_name: str) -> dict:
    name = request.get("probe")
    fn = getattr(probes, "PROBES", {}).get(name)
    if fn is None:
        return {"status": "error", "type": "UnknownProbe", "message": f"no probe {name!r}", "traceback": ""}
    start = time.perf_counter()
    try:
        value = fn(module, **request.get("kwargs", {}))
    except BaseException as e:  # the student's exception (or sys.exit) is a per-test result, not a crash
        return {"status": "error", "type": type(e).__name__, "message": str(e)[:2000],
                "traceback": _student_traceback(e, entry_name)[-4000:],
                "seconds": time.perf_counter() - start}
    return {"status": "ok", "value": value, "seconds": time.perf_counter() - start}


if __name__ == "__main__":
    serve()
