"""What counts as a submission, and its source: the one place that knows the accepted file names
and how a notebook becomes the statements the grader runs.

    entry_names("width")         -> ("width.py", "submission.py", "width.ipynb", "__init__.py")
    submission_entry(path, "width")   the file to grade inside a folder
    read_submission(path, "width")    (entry, python source)
    read_notebook(text)               NotebookSource: the statements that run, in order, and what is left out, and why
    notebook_report(nb)               the same account in words, for the student (results.json `output`)

A .py file is executed as it is. A notebook is graded as the student ran it, by one rule:

  1. Reading. `nbformat` reads every notebook format version (1-4), converts it to v4 and validates it
     (problems are recorded, not fatal); IPython's own input transformer (what Jupyter runs before a cell)
     turns `%magics`, `!shell` lines and `x?` help into Python calls (`get_ipython().system(...)`); the
     bodies of `%%time` and `%%capture` cells are Python, other cell magics (`%%bash`, `%%writefile`) are
     not; a cell with a syntax error does not run (Jupyter would not run it either).
  2. Order. Code cells run in the order the student ran them: by their execution count (`In [12]`),
     ties in file order; a cell without a count (never run in the saved session) runs right after the
     cell above it in the file, so a notebook without counts runs top to bottom. As in the kernel, a later
     definition replaces an earlier one: a fixed function placed above its older version but run last is the
     one graded, with a note whenever run order and cell order disagree.
  3. What runs. Every top-level statement runs, in that order, statement by statement, except what only
     makes sense at a desk or on Colab, which is left out (listed for the student, never counted):
       - IPython magics and shell lines (`%matplotlib`, `!pip install`): IPython only;
       - anything that calls `input()` (nobody types at grading time) or `sys.exit()`;
       - data downloads (`download=True`) and Google Colab's `drive.mount`, `files.upload`;
       - top-level `for`/`while` loops (the training and evaluation loops);
       - output only: a bare value (`model`), `print`, `display`, plots (`plt.*`, `sns.*`, `.plot()`, ...);
       - a statement that uses a name only a left-out statement assigns.
     So module-level objects exist as they did for the student: `criterion = nn.CrossEntropyLoss()`,
     `device`, `transform = transforms.Compose(...)`, `model = MLP()`.
  4. Budgets. Imports, `def` and `class` run as in a .py file. Every other statement runs in the sandboxed
     worker under a CPU budget (labcheck.untrusted.loader: 2 s each, 15 s for the whole notebook, well
     inside the load's deadline); a statement that raises (a cell left with an error, data that is not
     there) or runs out of budget (a call that trains) is skipped with a note and costs nothing else: the
     rest of its cell and of the notebook still runs (the kernel would stop the cell; the grader does not
     hold one mistake against the rest). An import that fails binds a stand-in that only the functions
     using it fail on (labcheck.untrusted.loader.guard_top_level_imports), as in a .py file.
  5. Missing globals. A function that reads a global which only a left-out or failed statement assigns
     finds a placeholder: its first use raises NameError naming the global, its cell and why it is missing.
  6. Errors point at cells. Each statement is compiled with the file name "<notebook>, cell 7, In [12]"
     and the cell's own line numbers, so a traceback reads `"sgd.ipynb, cell 7, In [12]", line 3` and
     quotes the cell, never the notebook's JSON.

Where this runs: `read_notebook` parses only (nothing of the student's executes here), in the worker
before it is confined and in the grader for the report; labcheck.untrusted.loader executes the statements.
"""
from __future__ import annotations

import ast
import dataclasses
import symtable
import warnings
from pathlib import Path

SUBMISSION_SUFFIXES = (".py", ".ipynb")  # files that can be a submission on their own
PYTHON_CELL_MAGICS = ("time", "capture")  # %%magics whose body is Python that runs once, as written
IMPORT, DEFINITION, CODE = "import", "definition", "code"  # the kinds of statement that run (Statement.kind)
# Output only: calls that print, plot or display, by name, by the module their name was imported from, or as
# methods (`ax.plot(...)`, `df.hist()`, `fig.savefig(...)`).
OUTPUT_CALLS = frozenset({"print", "display", "pprint", "help", "clear_output", "imshow"})
OUTPUT_MODULES = ("matplotlib", "seaborn", "plotly", "IPython", "torchsummary", "torchviz", "PIL")
OUTPUT_METHODS = frozenset({"plot", "show", "imshow", "savefig", "hist", "scatter", "bar", "barh", "legend",
                            "title", "suptitle", "xlabel", "ylabel", "set_title", "set_xlabel", "set_ylabel",
                            "set_xticks", "set_yticks", "grid", "tight_layout", "subplot", "subplots", "figure",
                            "axis", "colorbar", "heatmap", "lineplot", "scatterplot", "barplot", "histplot",
                            "head", "tail", "describe", "info", "render", "display"})
EXIT_CALLS = frozenset({"sys.exit", "exit", "quit", "os._exit"})
COLAB_MODULES = ("google.colab",)  # drive.mount(...), files.upload(): Colab only
LISTED = 15  # left-out statements listed one by one in the student's report (all are in results.json)


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
    """A top-level statement (or cell) left out at grading time: listed for the student, never counted."""
    cell: str  # "cell 4, In [7]": where the student finds it
    line: int  # line within the cell, 1-based
    code: str  # the statement's first line
    reason: str  # why it does not run at grading time

    @property
    def where(self) -> str:
        return f"{self.cell}, line {self.line}"


@dataclasses.dataclass
class Statement:
    """One top-level statement of a notebook that runs at grading time (labcheck.untrusted.loader)."""
    cell: str  # "cell 7, In [12]" (also the statement's file name: "<notebook>, cell 7, In [12]")
    line: int  # its first line within the cell, 1-based (decorators included)
    code: str  # its source, preceded by line-1 empty lines so that compiled line numbers are the cell's
    kind: str  # IMPORT, DEFINITION or CODE (only CODE runs under a CPU budget)
    names: tuple[str, ...]  # module-level names it binds

    @property
    def where(self) -> str:
        return f"{self.cell}, line {self.line}"

    @property
    def first(self) -> str:
        return self.code.strip().splitlines()[0][:100]


@dataclasses.dataclass
class NotebookSource:
    statements: list[Statement]  # what runs, in run order
    cells: dict[str, str]  # cell label -> its text as the student wrote it (tracebacks quote it)
    nbformat: tuple[int, int]  # the version the file was written in
    dropped: list[Dropped]  # top-level statements and cells left out at grading time, in run order
    missing_globals: dict[str, Dropped]  # global a function reads -> the left-out statement assigning it
    missing_messages: dict[str, str]  # global -> the NameError its placeholder raises
    order_notes: list[str]  # where run order and cell order disagree (and which definition won)
    validation_errors: list[str]  # nbformat's schema complaints (recorded, not fatal)

    @property
    def source(self) -> str:
        """The statements that run, in run order, as one Python text headed by the placeholders of missing
        globals: to read, or to exec in one piece without budgets (the worker runs `statements` one by one)."""
        parts = []
        if self.missing_messages:
            parts.append("from labcheck.untrusted.loader import MissingGlobal as _LabcheckMissingGlobal\n"
                         + "\n".join(f"{name} = _LabcheckMissingGlobal({message!r})"
                                     for name, message in self.missing_messages.items()))
        parts += [f"# {s.where}\n{s.code.lstrip(chr(10))}" for s in self.statements]
        return "\n\n".join(parts) + "\n"

    def counts(self) -> dict[str, int]:
        return {kind: sum(s.kind == kind for s in self.statements) for kind in (IMPORT, DEFINITION, CODE)}


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _root(node: ast.AST) -> str | None:
    """The name a call chain starts from: `plt` in plt.gca().plot(x), `drive` in drive.mount(...)."""
    while True:
        if isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        else:
            return node.id if isinstance(node, ast.Name) else None


def _bound_names(node: ast.stmt) -> set[str]:
    """Module-level names a top-level statement binds (imports, defs, assignment and loop targets)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"}
    names, local = set(), set()
    for sub in _walk_here(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
            names.add(sub.id)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and sub is not node:
            names.add(sub.name)  # (a def inside an if/try at top level)
        elif isinstance(sub, ast.comprehension):
            local |= {n.id for n in ast.walk(sub.target) if isinstance(n, ast.Name)}
    return names - local


def _walk_here(node: ast.AST):
    """ast.walk without entering function, lambda or class bodies (what runs when the statement runs)."""
    todo = [node]
    while todo:
        sub = todo.pop()
        yield sub
        if sub is not node and isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            todo.extend(getattr(sub, "decorator_list", []))
            continue
        todo.extend(ast.iter_child_nodes(sub))


def _names_read(node: ast.stmt) -> list[str]:
    return sorted({n.id for n in _walk_here(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)})


def _cell_code(source: str) -> str | None:
    """A cell's source as the Python IPython would run, or None for a non-Python cell magic."""
    from IPython.core.inputtransformer2 import TransformerManager

    stripped = source.lstrip()
    if stripped.startswith("%%"):
        magic, _, body = stripped[2:].partition("\n")
        if (magic.split() or [""])[0] not in PYTHON_CELL_MAGICS:
            return None
        source = "\n" + body  # keeps line numbers those of the cell
    lines = source.splitlines(True)
    blank = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    # (IPython drops leading blank lines: put them back, so that line numbers stay the cell's)
    return "\n" * blank + TransformerManager().transform_cell("".join(lines[blank:]))


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


def _count(cell) -> int | None:
    count = cell.get("execution_count")
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def _cell_label(index: int, cell) -> str:
    """"cell 7, In [12]": the cell's place in the file (1-based, every kind of cell counts) and its count."""
    count = _count(cell)
    return f"cell {index + 1}" + (f", In [{count}]" if count is not None else "")


def run_order(cells: list) -> list[int]:
    """Indices of the code cells in the order they run: by execution count, ties in file order; a cell
    without a count right after the cell above it (so, without counts, top to bottom)."""
    keys, last = [], -1
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        count = _count(cell)
        if count is not None:
            last = count
            keys.append(((count, 0, index), index))
        else:
            keys.append(((last, 1, index), index))
    return [index for _, index in sorted(keys)]


def _segment(code: str, node: ast.stmt) -> tuple[int, str]:
    """(first line, source as written) of a top-level statement, decorators included (ast's segment of a
    def omits them), preceded by empty lines so that its line numbers are the cell's."""
    decorators = getattr(node, "decorator_list", [])
    first = min([node.lineno] + [d.lineno for d in decorators])
    text = "\n".join([f"@{ast.get_source_segment(code, d) or ast.unparse(d)}" for d in decorators]
                     + [ast.get_source_segment(code, node) or ast.unparse(node)])
    return first, "\n" * (first - 1) + text


def _aliases(node: ast.stmt, modules: tuple[str, ...]) -> set[str]:
    """Names an import statement binds to (things from) one of `modules`."""
    if isinstance(node, ast.Import):
        return {(a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith(modules)}
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(modules):
        return {a.asname or a.name for a in node.names if a.name != "*"}
    return set()


def _contains_loop(node: ast.stmt) -> bool:
    return any(isinstance(n, (ast.For, ast.While, ast.AsyncFor)) for n in _walk_here(node))


def _calls(node: ast.stmt) -> list[ast.Call]:
    return [n for n in _walk_here(node) if isinstance(n, ast.Call)]


def _output_only(node: ast.stmt, output_names: set[str]) -> bool:
    """A statement whose only effect is what the student sees: a shown value, a print, a plot."""
    if isinstance(node, ast.Expr):
        value = node.value
        if not isinstance(value, (ast.Call, ast.Await)):
            return True  # `model`, `x.shape`, a string: Jupyter shows the value, nothing else happens
        if isinstance(value, ast.Call):
            name = _dotted(value.func) or ""
            return (name in OUTPUT_CALLS or _root(value) in output_names
                    or (isinstance(value.func, ast.Attribute) and value.func.attr in OUTPUT_METHODS))
        return False
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Call):
        return _root(node.value) in output_names  # fig, ax = plt.subplots()
    return False


def _leave_out(node: ast.stmt, output_names: set[str], colab_names: set[str], available: set[str],
               left_out: dict[str, Dropped]) -> str | None:
    """Why a top-level statement does not run at grading time, or None when it runs."""
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return None  # imports and definitions always run
    calls = _calls(node)
    names = {_dotted(c.func) for c in calls}
    if any(n and n.startswith("get_ipython") for n in names):
        return "an IPython magic or shell command (`%`, `!`): it runs only in IPython"
    if "input" in names:
        return "it asks for input(): nobody types at grading time"
    if names & EXIT_CALLS:
        return "it ends the program (in Jupyter it only stops the cell)"
    if any(k.arg == "download" and not (isinstance(k.value, ast.Constant) and not k.value.value)
           for c in calls for k in c.keywords):
        return "it downloads data: the grader has no network and brings its own data"
    if any(_root(c) in colab_names for c in calls):
        return "Google Colab only (drive.mount, files.upload)"
    if _contains_loop(node):
        return "a top-level loop (training or evaluation): loops do not run at grading time"
    if _output_only(node, output_names):
        return "output only (a shown value, a print or a plot)"
    for name in _names_read(node):
        if name not in available and name in left_out:
            return f"it uses `{name}`, which only a left-out statement assigns ({left_out[name].where})"
    return None


def _globals_read(statements: list[Statement]) -> dict[str, list[str]]:
    """Implicit globals referenced inside the defs and classes that run: name -> the defs that read it."""
    found: dict[str, list[str]] = {}

    def visit(table: symtable.SymbolTable, owner: str) -> None:
        for child in table.get_children():
            name = owner or child.get_name()
            for sym in child.get_symbols():
                if sym.is_referenced() and sym.is_global():
                    readers = found.setdefault(sym.get_name(), [])
                    if name not in readers:
                        readers.append(name)
            visit(child, name)

    for s in statements:
        if s.kind == DEFINITION:
            try:
                visit(symtable.symtable(s.code, "<notebook>", "exec"), "")
            except SyntaxError:  # (symtable is stricter than ast in rare cases: nothing to learn there)
                continue
    return found


def missing_global_message(name: str, readers: list[str], where: str, code: str, why: str) -> str:
    """The NameError a function gets on reading a global that the notebook assigns only where it did not run."""
    used = ", ".join(f"{r}()" for r in readers[:4]) if readers else "your code"
    return (f"{name!r} (used by {used}) is only assigned in notebook {where} (`{code}`), which did not run "
            f"at grading time: {why}. Create {name} in a statement that runs (imports, def, class and "
            f"module-level objects such as `criterion = nn.CrossEntropyLoss()` do), inside the function that "
            f"needs it, or pass it as an argument.")


def read_notebook(text: str) -> NotebookSource:
    """The notebook's statements in the order they run, and an account of everything left out (module
    docstring: the rule)."""
    nb, version, errors = _read_nbformat(text)
    statements: list[Statement] = []
    cells: dict[str, str] = {}
    dropped: list[Dropped] = []
    output_names: set[str] = set()
    colab_names: set[str] = set()
    available: set[str] = set()  # names bound by statements that run, so far in run order
    left_out: dict[str, Dropped] = {}  # name -> the (last) left-out statement assigning it
    definitions: dict[str, list[tuple[int, str]]] = {}  # def/class name -> (file index, cell) in run order
    order = run_order(nb.cells)
    for index in order:
        cell = nb.cells[index]
        label = _cell_label(index, cell)
        if not cell.source.strip():
            continue
        cells[label] = cell.source
        code = _cell_code(cell.source)
        if code is None:
            dropped.append(Dropped(label, 1, cell.source.strip().splitlines()[0][:80],
                                   "a non-Python cell magic: it runs only in IPython"))
            continue
        try:
            tree = ast.parse(code)
        except SyntaxError as e:
            dropped.append(Dropped(label, e.lineno or 1, (e.text or "").strip()[:80],
                                   f"a syntax error ({e.msg}): the whole cell does not run, as in Jupyter"))
            continue
        for node in tree.body:
            output_names |= _aliases(node, OUTPUT_MODULES)
            colab_names |= _aliases(node, COLAB_MODULES)
            line, segment = _segment(code, node)
            bound = _bound_names(node)
            reason = _leave_out(node, output_names, colab_names, available, left_out)
            if reason is not None:
                written = cell.source.splitlines()[line - 1:line] or segment.strip().splitlines()
                drop = Dropped(label, line, written[0].strip()[:100], reason)  # as the student wrote it (`!pip`)
                dropped.append(drop)
                for name in bound - available:
                    left_out[name] = drop
                continue
            kind = (IMPORT if isinstance(node, (ast.Import, ast.ImportFrom)) else
                    DEFINITION if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else CODE)
            statements.append(Statement(label, line, segment, kind, tuple(sorted(bound))))
            available |= bound
            if kind == DEFINITION:
                definitions.setdefault(node.name, []).append((index, label))
    missing: dict[str, Dropped] = {}
    messages: dict[str, str] = {}
    for name, readers in sorted(_globals_read(statements).items()):
        if name in available or name not in left_out:
            continue  # defined, or a builtin, or a plain student mistake (a NameError as usual)
        missing[name] = where = left_out[name]
        messages[name] = missing_global_message(name, readers, where.where, where.code, where.reason)
    return NotebookSource(statements, cells, version, dropped, missing, messages,
                          _order_notes(nb.cells, order, definitions), errors)


def _order_notes(cells: list, order: list[int], definitions: dict[str, list[tuple[int, str]]]) -> list[str]:
    """Where the run order (execution counts) differs from the cells' order, and which definition won."""
    notes = []
    ran = [i for i in order if cells[i].source.strip()]
    moved = [(a, b) for a, b in zip(ran, ran[1:]) if b < a]
    if moved:
        shown = "; ".join(f"{_cell_label(b, cells[b])} ran after {_cell_label(a, cells[a])}" for a, b in moved[:3])
        notes.append(f"Cells ran in the order you ran them (their In [n] counts), not top to bottom: {shown}"
                     + (f"; and {len(moved) - 3} more" if len(moved) > 3 else "") + ".")
    uncounted = [i for i in ran if _count(cells[i]) is None]
    if uncounted and len(uncounted) < len(ran):
        notes.append(f"{len(uncounted)} cell(s) have no In [n] (not run in the saved notebook): each ran right after "
                     f"the cell above it ({', '.join(f'cell {i + 1}' for i in uncounted[:5])}).")
    for name, places in definitions.items():
        if len(places) > 1 and places[-1][0] != max(i for i, _ in places):
            others = ", ".join(label for _, label in places[:-1])
            notes.append(f"`{name}` is defined more than once: graded is the one in {places[-1][1]}, which you ran "
                         f"last (as your kernel did), not the one lower in the notebook ({others}).")
    return notes


def notebook_report(nb: NotebookSource, listed: int = LISTED) -> list[str]:
    """What of the notebook ran and what was left out, and why, for the student: results.json's `output`
    (so feedback.md) and the platform packages. What failed while running is the worker's to say
    (labcheck.untrusted.loader)."""
    counts = nb.counts()
    lines = [f"Notebook (nbformat {nb.nbformat[0]}.{nb.nbformat[1]}) graded as you ran it: {len(nb.statements)} "
             f"top-level statements run ({counts[IMPORT]} imports, {counts[DEFINITION]} definitions, {counts[CODE]} "
             f"other statements such as module-level objects, each under a small CPU budget)"
             + (f"; {len(nb.dropped)} left out (listed, not counted):" if nb.dropped else ".")]
    lines += [f"- {d.where}: `{d.code}`: {d.reason}" for d in nb.dropped[:listed]]
    if len(nb.dropped) > listed:
        lines.append(f"- and {len(nb.dropped) - listed} more (results.json: extra_data.labcheck.notebook)")
    lines += nb.order_notes
    for name, where in nb.missing_globals.items():
        lines.append(f"{name!r} is used by your functions but only assigned in {where.where} (`{where.code}`), which "
                     "did not run: tests that use it fail with a NameError saying so.")
    lines += [f"Notebook problem: {e}" for e in nb.validation_errors]
    return lines


def notebook_account(nb: NotebookSource) -> dict:
    """The same account as data (results.json: extra_data.labcheck.notebook)."""
    return {"nbformat": list(nb.nbformat), "ran": nb.counts(),
            "left_out": [dataclasses.asdict(d) for d in nb.dropped], "order": list(nb.order_notes),
            "missing_globals": sorted(nb.missing_globals), "problems": list(nb.validation_errors)}


def notebook_to_source(text: str) -> str:
    """The Python a notebook amounts to (NotebookSource.source)."""
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
