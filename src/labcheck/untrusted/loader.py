"""Loading the one submission in the worker: read its source, execute it as a fresh module.

The module gets a unique name and is never put on sys.path, so nothing else can import it by accident.
A .py file runs as one module. A notebook runs statement by statement, in the order and by the rule of
`labcheck.submission` (read there, parsing only, before any student line runs): imports, `def` and
`class` as in a .py file; every other statement under a CPU budget (STATEMENT_CPU_SECONDS each,
NOTEBOOK_CPU_SECONDS in all, and wall-clock caps for statements that wait), well inside the load's deadline
(labcheck.sandbox.Limits.startup_timeout). A statement that raises or runs out of budget is skipped and
noted; the rest still runs. In both, a top-level import that fails binds a stand-in (MissingImport), so
only the functions using it fail. What did not run, and why, goes into `notes`: the worker's ready frame
carries them to results.json's `output` (so feedback.md).
"""
from __future__ import annotations

import __future__
import ast
import os
import signal
import sys
import time
import traceback
import types
from pathlib import Path

STATEMENT_CPU_SECONDS = 2.0  # CPU one module-level notebook statement may use (criterion = ..., model = MLP())
STATEMENT_WALL_SECONDS = 10.0  # ... and wall clock (a statement that waits without computing)
NOTEBOOK_CPU_SECONDS = 15.0  # CPU all of a notebook's module-level statements may use together
NOTEBOOK_WALL_SECONDS = 30.0  # ... and wall clock: with torch's import, well inside Limits.startup_timeout
REPEAT_SECONDS = 0.1  # a statement past its budget is interrupted again this often (it may catch one)


def read_source(submission: Path, exercise: str):
    """(entry file, program) of the private copy the grader placed in the scratch folder: a .py file's
    source, or a notebook as labcheck.submission.NotebookSource (the statements that run, in order)."""
    from labcheck.submission import read_notebook, submission_entry

    entry = submission_entry(submission, exercise)
    text = entry.read_text(encoding="utf-8", errors="replace")
    return entry, (read_notebook(text) if entry.suffix == ".ipynb" else text)


MISSING_IMPORT = "__labcheck_missing_import__"  # the module global the guarded imports call on failure


class _StandIn:
    """Stands for a name the submission's module could not bind: any use raises `error(message)`."""

    __slots__ = ("_message",)
    error: type = NameError

    def __init__(self, message: str):
        object.__setattr__(self, "_message", message)

    def _fail(self, *args, **kwargs):
        raise type(self).error(object.__getattribute__(self, "_message"))


class MissingImport(_StandIn):
    """Stands for what a top-level import could not bind (a module the grading environment does not have,
    `google.colab`, `torchsummary`, or a name a module no longer has, `from scipy import random`): any use
    raises ImportError naming the import, where it is and why, so only the functions that need it lose points."""

    __slots__ = ()
    error = ImportError
    __getattr__ = __setattr__ = __call__ = __getitem__ = __iter__ = __enter__ = _StandIn._fail

    def __repr__(self) -> str:
        return "<import that failed at grading time>"


class MissingGlobal(_StandIn):
    """Stands for a notebook global that only a left-out or failed statement assigns: any use raises
    NameError naming the global, its cell and why it is missing (labcheck.submission, rule 5)."""

    __slots__ = ()
    error = NameError
    _fail = _StandIn._fail
    __getattr__ = __setattr__ = __call__ = __bool__ = __index__ = __int__ = __float__ = __iter__ = _fail
    __len__ = __getitem__ = __setitem__ = __contains__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _fail
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _fail
    __floordiv__ = __rfloordiv__ = __pow__ = __rpow__ = __matmul__ = __rmatmul__ = __neg__ = __enter__ = _fail
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "<missing notebook global>"

    @classmethod
    def __torch_function__(cls, func, types=(), args=(), kwargs=None):
        for value in list(args) + list((kwargs or {}).values()):
            if isinstance(value, cls):
                value._fail()
        return NotImplemented


def guard_top_level_imports(tree: ast.Module, where=None) -> ast.Module:
    """Each top-level import statement, one name at a time, inside `try: ... except ImportError:` that binds a
    MissingImport instead (line numbers kept, so tracebacks still point at the student's lines). The same
    for a .py file and a notebook, as Jupyter would have run every other cell. `where(lineno)` says where the
    import is for the student ("line 3"; a notebook's "cell 2, In [2], line 3")."""
    where = where or (lambda lineno: f"line {lineno}")
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
                [ast.Constant(what), ast.Constant(where(node.lineno)), ast.Name("_labcheck_error", ast.Load())], []))
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


def _new_module(entry: Path, notes: list[str]) -> types.ModuleType:
    name = f"labcheck_submission_{os.getpid()}_{int(time.time() * 1000)}"
    module = types.ModuleType(name)
    module.__file__ = str(entry)
    sys.modules[name] = module

    def missing(what: str, where: str, error: ImportError) -> MissingImport:
        why = safe_str(error)
        notes.append(f"{where}: `{what}` failed at grading time ({type(error).__name__}: {why}); the rest "
                     "was graded, and only a function that uses it fails")
        return MissingImport(f"`{what}` ({where}) failed at grading time: {why}. The grading environment "
                             "does not have it; use torch, numpy or the standard library in graded functions")

    module.__dict__[MISSING_IMPORT] = missing
    sys.meta_path.insert(0, OwnModules(str(Path(entry).parent)))  # the student's own modules, first
    return module


def execute_submission(entry: Path, program, notes: list[str] | None = None) -> types.ModuleType:
    """Run the program (read_source's: a .py file's source or a notebook's statements) as a fresh module with
    a unique name (never on sys.path). A top-level import that fails binds a MissingImport and adds a line to
    `notes` (shown to the student) instead of failing it all; so does a notebook statement that fails."""
    notes = notes if notes is not None else []
    module = _new_module(entry, notes)
    if not isinstance(program, str):
        execute_notebook(entry, program, module, notes)
        return module
    tree = guard_top_level_imports(ast.parse(program, str(entry)))
    code = compile(tree, str(entry), "exec")
    exec(code, module.__dict__)
    return module


# ---------------------------------------------------------------------------------------------
# Notebooks: statement by statement, each guarded, computed ones under a budget


class StatementTimeout(BaseException):
    """Raised inside a notebook statement past its budget. A BaseException, so the student's
    `except Exception:` does not swallow it; a bare `except:` may, and is interrupted again."""


class _Budget:
    """CPU (ITIMER_PROF) and wall-clock (ITIMER_REAL) limits for one statement at a time. The timers repeat
    after they expire until the statement ends; the handler raises only in the student's frames, never in
    this file's own bookkeeping, so disarming cannot be interrupted."""

    def __init__(self):
        self.armed = False
        self.previous = None

    def __enter__(self) -> "_Budget":
        try:
            self.previous = {s: signal.signal(s, self._expired) for s in (signal.SIGPROF, signal.SIGALRM)}
        except (ValueError, OSError, AttributeError):  # not the main thread, or no such signals: no budgets
            self.previous = None
        return self

    def _expired(self, signum, frame) -> None:
        if self.armed and (frame is None or frame.f_code.co_filename != __file__):
            raise StatementTimeout("CPU" if signum == signal.SIGPROF else "wall clock")

    def run(self, code, namespace: dict, cpu: float | None, wall: float | None) -> None:
        if cpu is None or self.previous is None:
            exec(code, namespace)
            return
        self.armed = True
        try:
            signal.setitimer(signal.ITIMER_PROF, max(cpu, 0.01), REPEAT_SECONDS)
            signal.setitimer(signal.ITIMER_REAL, max(wall or cpu, 0.01), REPEAT_SECONDS)
            exec(code, namespace)
        finally:
            self.disarm()

    def disarm(self) -> None:
        self.armed = False
        if self.previous is not None:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.setitimer(signal.ITIMER_REAL, 0)

    def __exit__(self, *exc) -> None:
        self.disarm()
        for sig, handler in (self.previous or {}).items():
            signal.signal(sig, handler)


def _future_flags(tree: ast.Module) -> int:
    flags = 0
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            for alias in node.names:
                feature = getattr(__future__, alias.name, None)
                flags |= getattr(feature, "compiler_flag", 0)
    return flags


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def execute_notebook(entry: Path, nb, module: types.ModuleType, notes: list[str]) -> None:
    """Run a NotebookSource's statements in `module` (labcheck.submission's rule): each compiled with the file
    name "<entry>, cell 7, In [12]" and the cell's line numbers (tracebacks name and quote the cell), each
    guarded; the statements that are neither imports nor definitions under the budgets above."""
    import linecache

    from labcheck.submission import CODE, IMPORT, missing_global_message

    for label, text in nb.cells.items():  # what a traceback quotes: the cell as the student wrote it
        lines = text.splitlines(True)
        linecache.cache[f"{entry}, {label}"] = (len(text), None, lines or ["\n"], f"{entry}, {label}")
    namespace = module.__dict__
    flags, cpu_left, wall_left = 0, NOTEBOOK_CPU_SECONDS, NOTEBOOK_WALL_SECONDS
    unrun: list = []  # computed statements after the notebook's budget was spent
    with _Budget() as budget:
        for st in nb.statements:
            filename = f"{entry}, {st.cell}"
            limited = st.kind == CODE
            if limited and (cpu_left <= 0.05 or wall_left <= 0.05):
                unrun.append(st)
                continue
            try:
                tree = ast.parse(st.code, filename)
                if st.kind == IMPORT:
                    tree = guard_top_level_imports(tree, lambda lineno, cell=st.cell: f"{cell}, line {lineno}")
                code = compile(tree, filename, "exec", flags=flags, dont_inherit=True)
                flags |= _future_flags(tree)
            except SyntaxError as e:  # (read_notebook parsed it: only a future import out of place gets here)
                notes.append(f"{st.where}: `{st.first}` could not run ({_short(safe_str(e))}); left out")
                continue
            cpu0, wall0 = time.process_time(), time.monotonic()
            cpu, wall = (min(STATEMENT_CPU_SECONDS, cpu_left), min(STATEMENT_WALL_SECONDS, wall_left)) if limited \
                else (None, None)
            failure = None
            try:
                budget.run(code, namespace, cpu, wall)
            except StatementTimeout as e:
                budget.disarm()
                failure = (f"was stopped after {cpu if str(e) == 'CPU' else wall:.3g} s of {e} (module-level "
                           f"statements of a notebook get {STATEMENT_CPU_SECONDS:g} s of CPU each at grading time, "
                           f"{NOTEBOOK_CPU_SECONDS:g} s in all: training and evaluation belong in functions)")
            except BaseException as e:  # the student's exception, SystemExit, KeyboardInterrupt alike
                budget.disarm()
                failure = f"raised {type(e).__name__}: {_short(safe_str(e))}"
            finally:
                if limited:
                    cpu_left -= time.process_time() - cpu0
                    wall_left -= time.monotonic() - wall0
            if failure is None:
                continue
            notes.append(f"{st.where}: `{st.first}` {failure}; left out, the rest of the notebook ran")
            for name in st.names:
                if name not in namespace:
                    namespace[name] = MissingGlobal(missing_global_message(
                        name, [], st.where, st.first, f"it {failure}"))
    if unrun:
        notes.append(f"{len(unrun)} later module-level statement(s) did not run: the notebook's "
                     f"{NOTEBOOK_CPU_SECONDS:g} s of CPU ({NOTEBOOK_WALL_SECONDS:g} s of wall clock) for module-level "
                     f"code were used up (first: {unrun[0].where}, `{unrun[0].first}`)")
        for st in unrun:
            for name in st.names:
                if name not in namespace:
                    namespace[name] = MissingGlobal(missing_global_message(
                        name, [], st.where, st.first, "the notebook's time for module-level code was used up"))
    for name, message in nb.missing_messages.items():
        if name not in namespace:
            namespace[name] = MissingGlobal(message)


def safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except BaseException as e:
        return f"<message unavailable: {type(e).__name__}>"


def _own_frame(filename: str, entry: str) -> bool:
    """A frame of the submission: its file, one of its notebook's cells ("<entry>, cell 7, In [12]"), or one of
    the student's own modules beside the entry (a submission folder's helpers.py)."""
    return filename == entry or filename.startswith(entry + ", cell ") or filename.startswith(
        os.path.dirname(entry) + "/")


def student_traceback(exc: BaseException, entry: str, display: str | None = None) -> str:
    """The traceback lines from the submission's own file or cells (what a student can act on)."""
    try:
        frames = traceback.extract_tb(exc.__traceback__)
        own = [f for f in frames if _own_frame(f.filename, entry)]
        text = "".join(traceback.format_list(own[-5:])) if own else ""
        text += "".join(traceback.format_exception_only(type(exc), exc)).strip()
    except BaseException as e:  # a hostile exception whose __str__ raises
        text = f"{type(exc).__name__} (its message could not be shown: {type(e).__name__})"
    return text.replace(entry, display) if display else text


def failure(exc: BaseException, entry: str, display: str | None = None) -> dict:
    """A student's exception as plain data for the grader."""
    return {"type": type(exc).__name__, "message": safe_str(exc)[:2000],
            "traceback": student_traceback(exc, entry, display)[-4000:]}
