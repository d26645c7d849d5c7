"""Loading the one submission in the worker: read its source, execute it as a fresh module.

The module gets a unique name and is never put on sys.path, so nothing else can import it by accident.
Notebooks are reduced to their definitions by `labcheck.submission` (parsing only, before any student
line runs).
"""
from __future__ import annotations

import os
import sys
import time
import traceback
import types
from pathlib import Path


def read_source(submission: Path, exercise: str) -> tuple[Path, str]:
    """(entry file, Python source) of the private copy the grader placed in the scratch folder."""
    from labcheck.submission import read_submission

    return read_submission(submission, exercise)


def execute_submission(entry: Path, source: str) -> types.ModuleType:
    """Run the source as a fresh module with a unique name (never on sys.path)."""
    name = f"labcheck_submission_{os.getpid()}_{int(time.time() * 1000)}"
    module = types.ModuleType(name)
    module.__file__ = str(entry)
    sys.modules[name] = module
    code = compile(source, str(entry), "exec")
    exec(code, module.__dict__)
    return module


def safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except BaseException as e:
        return f"<message unavailable: {type(e).__name__}>"


def student_traceback(exc: BaseException, entry: str, display: str | None = None) -> str:
    """The traceback lines from the submission's own file (what a student can act on)."""
    try:
        frames = traceback.extract_tb(exc.__traceback__)
        own = [f for f in frames if f.filename == entry]
        text = "".join(traceback.format_list(own[-5:])) if own else ""
        text += "".join(traceback.format_exception_only(type(exc), exc)).strip()
    except BaseException as e:  # a hostile exception whose __str__ raises
        text = f"{type(exc).__name__} (its message could not be shown: {type(e).__name__})"
    return text.replace(entry, display) if display else text


def failure(exc: BaseException, entry: str, display: str | None = None) -> dict:
    """A student's exception as plain data for the grader."""
    return {"type": type(exc).__name__, "message": safe_str(exc)[:2000],
            "traceback": student_traceback(exc, entry, display)[-4000:]}
