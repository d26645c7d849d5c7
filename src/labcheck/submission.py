"""What counts as a submission, and its source: the one place that knows the accepted file names.

Trusted side: the grader resolves the entry file and turns a notebook into plain Python source
before anything of the student's runs; the worker only ever executes the resulting source.

    entry_names("width")         -> ("width.py", "submission.py", "width.ipynb", "__init__.py")
    submission_entry(path, "width")   the file to grade inside a folder
    read_submission(path, "width")    (entry, python source)
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

SUBMISSION_SUFFIXES = (".py", ".ipynb")  # files that can be a submission on their own


def entry_names(exercise: str) -> tuple[str, ...]:
    """File names that make a folder one submission, in the order they are looked for."""
    return (f"{exercise}.py", "submission.py", f"{exercise}.ipynb", "__init__.py")


def is_single_submission_folder(folder: Path, exercise: str) -> bool:
    return any((Path(folder) / n).is_file() for n in entry_names(exercise))


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
        for name in entry_names(exercise):
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
