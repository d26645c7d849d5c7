"""Loading the one submission in the worker: read its source, execute it as a fresh module.

The module gets a unique name and is never put on sys.path, so nothing else can import it by accident.
Notebooks are reduced to their definitions by `labcheck.submission` (parsing only, before any student
line runs).
"""
from __future__ import annotations

import ast
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


MISSING_IMPORT = "__labcheck_missing_import__"  # the module global the guarded imports call on failure


class MissingImport:
    """Stands for what a top-level import could not bind (a module the grading environment does not have,
    `google.colab`, `torchsummary`, or a name a module no longer has, `from scipy import random`): any use
    raises ImportError naming the import, its line and why, so only the functions that need it lose points."""

    __slots__ = ("_message",)

    def __init__(self, message: str):
        object.__setattr__(self, "_message", message)

    def _fail(self, *args, **kwargs):
        raise ImportError(object.__getattribute__(self, "_message"))

    __getattr__ = __setattr__ = __call__ = __getitem__ = __iter__ = __enter__ = _fail

    def __repr__(self) -> str:
        return "<import that failed at grading time>"


def guard_top_level_imports(tree: ast.Module) -> ast.Module:
    """Each top-level import statement, one name at a time, inside `try: ... except ImportError:` that binds a
    MissingImport instead (line numbers kept, so tracebacks still point at the student's lines). The same
    for a .py file and a notebook, as Jupyter would have run every other cell."""
    body = []
    for node in tree.body:
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or any(a.name == "*" for a in node.names) or (
                isinstance(node, ast.ImportFrom) and node.module == "__future__"):  # (must stay a bare statement)
            body.append(node)
            continue
        for alias in node.names:
            single = type(node)(names=[alias], **({"module": node.module, "level": node.level}
                                                 if isinstance(node, ast.ImportFrom) else {}))
            bound = (alias.asname or alias.name) if isinstance(node, ast.ImportFrom) else (
                alias.asname or alias.name.split(".")[0])
            what = (f"from {'.' * node.level}{node.module or ''} import {alias.name}"
                    if isinstance(node, ast.ImportFrom) else f"import {alias.name}")
            failed = ast.Assign(targets=[ast.Name(bound, ast.Store())], value=ast.Call(
                ast.Name(MISSING_IMPORT, ast.Load()),
                [ast.Constant(what), ast.Constant(node.lineno), ast.Name("_labcheck_error", ast.Load())], []))
            handler = ast.ExceptHandler(type=ast.Name("ImportError", ast.Load()), name="_labcheck_error",
                                        body=[failed])
            guarded = ast.Try(body=[single], handlers=[handler], orelse=[], finalbody=[])
            body.append(ast.fix_missing_locations(ast.copy_location(guarded, node)))
            for sub in ast.walk(guarded):
                ast.copy_location(sub, node)
    tree.body = body
    return tree


class OwnModules:
    """Finds the student's own modules (helpers.py, a package of theirs) in the folder of their copied entry
    file, first, as Python finds a script's neighbours: `import helpers` in sgd.py imports their helpers.py.
    Only that private copy's folder is searched (the rest of the class is never in it); modules already
    imported (torch, numpy, the worker's own) are not replaced."""

    def __init__(self, folder: str):
        self.folder = folder

    def find_spec(self, name, path=None, target=None):
        import importlib.machinery

        if path is not None or "." in name:
            return None  # a submodule: its package's own __path__ finds it
        return importlib.machinery.PathFinder.find_spec(name, [self.folder])


def execute_submission(entry: Path, source: str, notes: list[str] | None = None) -> types.ModuleType:
    """Run the source as a fresh module with a unique name (never on sys.path). A top-level import that
    fails binds a MissingImport and adds a line to `notes` (shown to the student) instead of failing it all."""
    name = f"labcheck_submission_{os.getpid()}_{int(time.time() * 1000)}"
    module = types.ModuleType(name)
    module.__file__ = str(entry)
    sys.modules[name] = module
    notes = notes if notes is not None else []

    def missing(what: str, line: int, error: ImportError) -> MissingImport:
        why = safe_str(error)
        notes.append(f"line {line}: `{what}` failed at grading time ({type(error).__name__}: {why}); the rest "
                     "was graded, and only a function that uses it fails")
        return MissingImport(f"`{what}` (line {line}) failed at grading time: {why}. The grading environment "
                             "does not have it; use torch, numpy or the standard library in graded functions")

    module.__dict__[MISSING_IMPORT] = missing
    sys.meta_path.insert(0, OwnModules(str(Path(entry).parent)))
    tree = guard_top_level_imports(ast.parse(source, str(entry)))
    code = compile(tree, str(entry), "exec")
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
        folder = os.path.dirname(entry) + "/"  # the submission's own files: the entry and its modules beside it
        own = [f for f in frames if f.filename == entry or f.filename.startswith(folder)]
        text = "".join(traceback.format_list(own[-5:])) if own else ""
        text += "".join(traceback.format_exception_only(type(exc), exc)).strip()
    except BaseException as e:  # a hostile exception whose __str__ raises
        text = f"{type(exc).__name__} (its message could not be shown: {type(e).__name__})"
    return text.replace(entry, display) if display else text


def failure(exc: BaseException, entry: str, display: str | None = None) -> dict:
    """A student's exception as plain data for the grader."""
    return {"type": type(exc).__name__, "message": safe_str(exc)[:2000],
            "traceback": student_traceback(exc, entry, display)[-4000:]}
