"""What counts as a submission, and its source: the one place that knows the accepted file names
and how a notebook becomes the Python the grader runs.

    entry_names("width")         -> ("width.py", "submission.py", "width.ipynb", "__init__.py")
    submission_entry(path, "width")   the file to grade inside a folder
    read_submission(path, "width")    (entry, python source)
    read_notebook(text)               NotebookSource: the kept source and what was dropped, and why

A .py file is executed as it is. A notebook is read the way Jupyter reads it and reduced to what is
safe to run at import:
  1. `nbformat` reads every notebook format version (1-4), converts it to v4 and validates it
     (problems are recorded, not fatal: a hand-edited notebook still grades);
  2. IPython's own input transformer (`TransformerManager`, what Jupyter runs before executing a
     cell) turns `%magics`, `!shell` lines and `x?` help into plain Python calls
     (`get_ipython().system(...)`); the cell bodies of `%%time` and `%%capture` are Python and are
     read as such, other cell magics (`%%bash`, `%%writefile`, ...) are dropped;
  3. of every code cell's top-level statements only imports, `def`, `class` and assignments of
     constants are kept (a constant: a literal, or arithmetic/conditions over literals and kept
     names, or one of SAFE_CALLS such as `torch.device(...)`). Training loops, prints, plots,
     `display(...)`, `input()` and magics never reach the worker. An import that fails at grading
     time (`google.colab`, `from scipy import random`) costs only the functions that use it, in a
     notebook as in a .py file (labcheck.untrusted.loader.guard_top_level_imports);
  4. a kept function or class that reads a module global which only a dropped cell assigns
     (a `model = Net()` or `X = load()` training cell) gets a placeholder for it: the first use of the
     name raises NameError naming the global, its cell and what to do, instead of "name 'X' is not
     defined".

Where this runs: inside the sandboxed worker, before the guard is installed (labcheck.worker);
nothing of the student's executes here, the notebook is only parsed.
"""
from __future__ import annotations

import ast
import builtins
import dataclasses
import symtable
import warnings
from pathlib import Path

SUBMISSION_SUFFIXES = (".py", ".ipynb")  # files that can be a submission on their own

SAFE_NODES = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
# Calls a notebook's constant assignment may make: cheap, no side effects, no data.
SAFE_CALLS = frozenset({"torch.device", "torch.cuda.is_available", "torch.cuda.device_count",
                        "torch.backends.mps.is_available", "range", "len", "int", "float", "str", "tuple"})
PYTHON_CELL_MAGICS = ("time", "capture")  # %%magics whose body is Python that runs once, as written
_CONSTANT_EXPRS = (ast.Constant, ast.Name, ast.Attribute, ast.Tuple, ast.List, ast.Set, ast.Dict, ast.BinOp,
                   ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call, ast.keyword, ast.Load,
                   ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.expr_context)


def entry_names(exercise: str) -> tuple[str, ...]:
    """File names that make a folder one submission, in the order they are looked for."""
    return (f"{exercise}.py", "submission.py", f"{exercise}.ipynb", "__init__.py")


def is_single_submission_folder(folder: Path, exercise: str) -> bool:
    return any((Path(folder) / n).is_file() for n in entry_names(exercise))


def expected_files_message(exercise: str) -> str:
    """What to tell a student whose upload has no gradable file ("expected sgd.py or a notebook")."""
    return f"expected {exercise}.py or a notebook ({exercise}.ipynb); also accepted: submission.py"


# ---------------------------------------------------------------------------------------------
# Notebooks


@dataclasses.dataclass
class Dropped:
    cell: str  # "cell 4 (In [7])": where the student finds it
    line: int  # line within the cell, 1-based
    code: str  # the statement's first line
    reason: str  # why it does not run at grading time


@dataclasses.dataclass
class NotebookSource:
    source: str  # the Python the worker executes
    nbformat: tuple[int, int]  # the version the file was written in
    dropped: list[Dropped]  # top-level statements that do not run at grading time
    missing_globals: dict[str, Dropped]  # global a kept function reads -> the dropped statement assigning it
    validation_errors: list[str]  # nbformat's schema complaints (recorded, not fatal)


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _is_constant_expr(value: ast.AST, known: set[str]) -> bool:
    """Literals, and arithmetic/conditions over literals, kept names and SAFE_CALLS: cheap and pure."""
    for node in ast.walk(value):
        if not isinstance(node, _CONSTANT_EXPRS):
            return False
        if isinstance(node, ast.Name) and node.id not in known:
            return False
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name not in SAFE_CALLS:
                return False
    return True


def _is_constant_assignment(node: ast.stmt, known: set[str] | None = None) -> bool:
    """`NAME = <constant expression>` (or annotated): kept from notebooks; anything else is dropped."""
    if isinstance(node, ast.Assign):
        targets, value = node.targets, node.value
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        targets, value = [node.target], node.value
    else:
        return False
    names = [t for t in targets if isinstance(t, ast.Name)]
    tuples = [t for t in targets if isinstance(t, ast.Tuple) and all(isinstance(e, ast.Name) for e in t.elts)]
    if len(names) + len(tuples) != len(targets):
        return False
    return _is_constant_expr(value, set(known or ()) | set(dir(builtins)))


def _bound_names(node: ast.stmt) -> set[str]:
    """Module-level names a top-level statement binds (imports, defs, assignment and loop targets)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"}
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
            names.add(sub.id)
    return names


def _cell_code(source: str) -> str | None:
    """A cell's source as the Python IPython would run, or None for a non-Python cell magic."""
    from IPython.core.inputtransformer2 import TransformerManager

    stripped = source.lstrip()
    if stripped.startswith("%%"):
        magic, _, body = stripped[2:].partition("\n")
        if (magic.split() or [""])[0] not in PYTHON_CELL_MAGICS:
            return None
        source = "\n" + body  # keeps line numbers those of the cell
    return TransformerManager().transform_cell(source)


def _read_nbformat(text: str):
    """nbformat's reader for every version (converted to v4) and its validation errors.

    A v4-shaped dict that nbformat cannot read as it is (no version, cells without `metadata`:
    hand-made or hand-edited) gets those keys filled in first, and that is recorded."""
    import json

    import nbformat
    from nbformat import reader

    errors: list[str] = []
    raw = reader.parse_json(text)
    cells = raw.get("cells") if isinstance(raw, dict) else None
    # v4 layout (cells with "source"), and not nbformat 1 (no version key, cells with "code"): fill in
    if isinstance(cells, list) and (raw.get("nbformat") == 4 or any(isinstance(c, dict) and "source" in c
                                                                   for c in cells)):
        top = {"nbformat": 4, "nbformat_minor": 0, "metadata": {}}  # what a v4 file always has
        missing = [k for k in top if k not in raw]
        for cell in raw["cells"]:
            if isinstance(cell, dict):
                missing += [k for k in ("metadata",) if k not in cell]
                cell.setdefault("metadata", {})
                if cell.get("cell_type") == "code":
                    cell.setdefault("outputs", [])
                    cell.setdefault("execution_count", None)
        for key, value in top.items():
            raw.setdefault(key, value)
        if missing:
            errors.append(f"not a complete notebook file (no {', '.join(sorted(set(missing)))}): read as nbformat 4")
        text = json.dumps(raw)
    version = reader.get_version(raw)
    with warnings.catch_warnings():  # nbformat warns about ids and minor versions it fills in
        warnings.simplefilter("ignore")
        nb = nbformat.convert(reader.reads(text), 4)
        try:
            nbformat.validate(nb)
        except nbformat.ValidationError as e:
            errors.append(str(e).splitlines()[0])
    return nb, version, errors


def _cell_label(index: int, cell) -> str:
    count = cell.get("execution_count")
    return f"cell {index + 1}" + (f" (In [{count}])" if isinstance(count, int) else "")


def _drop_reason(node: ast.stmt) -> str:
    if isinstance(node, (ast.For, ast.While, ast.AsyncFor)):
        return "a top-level loop (training code)"
    if "get_ipython()" in ast.unparse(node):
        return "an IPython magic or shell command"
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        return f"a top-level call ({_dotted(node.value.func) or 'expression'})"
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        return "a computed value (only constants are kept)"
    return "top-level code (only imports, def, class and constants are kept)"


def _segment(code: str, node: ast.stmt) -> str:
    """The statement's source as written, with its decorators (ast's segment of a def omits them)."""
    decorators = [f"@{ast.get_source_segment(code, d) or ast.unparse(d)}" for d in getattr(node, "decorator_list", [])]
    return "\n".join(decorators + [ast.get_source_segment(code, node) or ast.unparse(node)])


def _globals_read(source: str) -> dict[str, str]:
    """Implicit globals referenced inside every def/class of `source`: name -> the def that reads it."""
    found: dict[str, str] = {}

    def visit(table: symtable.SymbolTable, owner: str) -> None:
        for child in table.get_children():
            name = owner or child.get_name()
            for sym in child.get_symbols():
                if sym.is_referenced() and sym.is_global():
                    found.setdefault(sym.get_name(), name)
            visit(child, name)

    visit(symtable.symtable(source, "<notebook>", "exec"), "")
    return found


_PLACEHOLDER = '''
class _LabcheckMissingGlobal:
    """Stands for a global that only a dropped notebook cell assigns: any use raises NameError(message)."""
    __slots__ = ("_message",)

    def __init__(self, message):
        object.__setattr__(self, "_message", message)

    def _fail(self, *args, **kwargs):
        raise NameError(object.__getattribute__(self, "_message"))

    __getattr__ = __setattr__ = __call__ = __bool__ = __index__ = __int__ = __float__ = __iter__ = _fail
    __len__ = __getitem__ = __setitem__ = __contains__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _fail
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _fail
    __floordiv__ = __rfloordiv__ = __pow__ = __rpow__ = __matmul__ = __rmatmul__ = __neg__ = __enter__ = _fail
    __hash__ = None

    def __repr__(self):
        return "<missing notebook global>"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        for value in list(args) + list((kwargs or {}).values()):
            if isinstance(value, cls):
                value._fail()
        return NotImplemented
'''


def _missing_message(name: str, reader: str, where: Dropped) -> str:
    return (f"{name!r} is read by {reader}() but only assigned in notebook {where.cell}, line {where.line} "
            f"(`{where.code}`), {where.reason} that the grader does not run: only imports, def, class and "
            f"constants of a notebook run at grading time. Create {name} inside the function that needs it, "
            f"or pass it as an argument.")


def read_notebook(text: str) -> NotebookSource:
    """The notebook's definitions as Python source, and an account of everything left out."""
    nb, version, errors = _read_nbformat(text)
    kept: list[str] = []
    known: set[str] = set()  # names bound by kept statements, in cell order
    dropped: list[Dropped] = []
    assigned_in_dropped: dict[str, Dropped] = {}
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        label = _cell_label(index, cell)
        code = _cell_code(cell.source)
        if code is None:
            dropped.append(Dropped(label, 1, cell.source.strip().splitlines()[0], "a non-Python cell magic"))
            continue
        try:
            tree = ast.parse(code)
        except SyntaxError as e:
            dropped.append(Dropped(label, e.lineno or 1, (e.text or "").strip(), f"a syntax error ({e.msg})"))
            continue
        for node in tree.body:
            if isinstance(node, SAFE_NODES) or _is_constant_assignment(node, known):
                kept.append(f"# {label}\n" + _segment(code, node))
                known |= _bound_names(node)
                continue
            first = (ast.get_source_segment(code, node) or ast.unparse(node)).splitlines()[0][:80]
            drop = Dropped(label, node.lineno, first, _drop_reason(node))
            dropped.append(drop)
            for name in _bound_names(node):
                assigned_in_dropped.setdefault(name, drop)  # the first assignment is where to look
    source = "\n\n".join(kept) + "\n"
    missing: dict[str, Dropped] = {}
    placeholders = []
    for name, reader in sorted(_globals_read(source).items()):
        if name in known or name not in assigned_in_dropped:
            continue  # defined, or a builtin, or a plain student mistake (a NameError as usual)
        missing[name] = assigned_in_dropped[name]
        message = _missing_message(name, reader, missing[name])
        placeholders.append(f"{name} = _LabcheckMissingGlobal({message!r})")
    if placeholders:
        source = _PLACEHOLDER.lstrip() + "\n\n" + "\n".join(placeholders) + "\n\n" + source
    return NotebookSource(source, version, dropped, missing, errors)


def notebook_to_source(text: str) -> str:
    """The Python the worker runs for a notebook (see read_notebook)."""
    return read_notebook(text).source


# ---------------------------------------------------------------------------------------------
# Entry files


class LinkRefused(ValueError):
    """A symbolic link in an upload: never followed (it would grade, copy or quote what it points to)."""


def refuse_links(path: Path) -> None:
    """Raise LinkRefused naming the first symbolic link in the upload `path` (itself, or anything in it).

    A link is never followed out of a submission: `sgd.py -> exercises/sgd/reference.py` earned full marks with no
    code of its own, `bob/sgd.py -> ../alice.py` graded alice's code as bob's, and a link to /etc/passwd
    put its first line into the student's feedback. The message names the link, never its target."""
    import os

    path = Path(path)
    found = [path] if path.is_symlink() else []
    if not found and path.is_dir():
        for root, dirs, files in os.walk(path):  # (os.walk never descends into a link to a folder)
            found += [Path(root) / name for name in sorted(dirs + files) if (Path(root) / name).is_symlink()]
            if found:
                break
    if found:
        shown = found[0].name if found[0] == path else f"{path.name}/{found[0].relative_to(path)}"
        raise LinkRefused(f"{shown} is a symbolic link: labcheck grades the files you upload, never what a link "
                          "points to. Upload the file itself.")


def submission_entry(path: Path, exercise: str) -> Path:
    """The file to execute: the path itself, or inside a folder <exercise>.py / submission.py / the only .py.
    An upload holding a symbolic link anywhere is refused (refuse_links)."""
    refuse_links(path)
    if path.is_file():
        return path
    if path.is_dir():
        for name in entry_names(exercise):
            if (path / name).is_file():
                return path / name
        candidates = sorted(path.glob("*.py")) + sorted(path.glob("*.ipynb"))
        if len(candidates) == 1:
            return candidates[0]
        raise FileNotFoundError(
            f"folder {path} has no {exercise}.py or submission.py and {len(candidates)} candidate files "
            f"({expected_files_message(exercise)})"
        )
    raise FileNotFoundError(f"submission {path} does not exist")


MAX_FILES, MAX_BYTES = 200, 20 * 2**20  # what one submission folder may hold (its own modules, small data)
_SKIPPED = ("__pycache__", ".ipynb_checkpoints")  # what a notebook server or Python leaves beside the code


def submission_files(path: Path, exercise: str) -> tuple[Path, list[Path]]:
    """(entry, every file of the submission): for a folder, its entry and all its regular files (the student's
    own modules beside it, which the entry may import), hidden files and caches aside; for a file, itself.
    Links are refused (refuse_links); a folder over MAX_FILES files or MAX_BYTES is refused too."""
    entry = submission_entry(path, exercise)
    if not Path(path).is_dir():
        return entry, [entry]
    files = sorted(f for f in Path(path).rglob("*") if f.is_file() and not any(
        part.startswith(".") or part in _SKIPPED for part in f.relative_to(path).parts))
    size = sum(f.stat().st_size for f in files)
    if len(files) > MAX_FILES or size > MAX_BYTES:
        raise ValueError(f"the submission folder holds {len(files)} files, {size / 2**20:.1f} MB: at most "
                         f"{MAX_FILES} files and {MAX_BYTES // 2**20} MB (your code and the modules it imports)")
    return entry, files


def read_submission(path: Path, exercise: str) -> tuple[Path, str]:
    entry = submission_entry(path, exercise)
    text = entry.read_text(encoding="utf-8", errors="replace")
    if entry.suffix == ".ipynb":
        text = notebook_to_source(text)
    return entry, text
