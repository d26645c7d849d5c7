"""The starter files a student receives: the contract's names, signatures and descriptions with no body.

    starter.python_source(contract, reference_path)   -> the starter .py (text)
    starter.notebook(contract, reference_path)        -> the starter .ipynb (nbformat v4 node)

Every function of the contract becomes a stub that raises NotImplementedError, its docstring the
contract's description. A class gets the base class of the reference's class and the methods it
needs to be one (its dunder methods and `forward`), read from the reference's syntax tree: no line
of the reference's code is copied, only the `class Name(Base)` line and method signatures.
The notebook holds the same stubs, one cell per contract name after the exercise in our own words,
and ends with a cell that runs the public self-check (a `!` line: grading never runs it).
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

from labcheck.contracts import Contract, Entry

INDENT = " " * 4
STUB_MESSAGE = "{name}: not written yet (see CONTRACT.md)"


def check_command(exercise: str, file_name: str) -> str:
    """The self-check as a student types it (in a terminal, or after `!` in a notebook cell)."""
    return f"labcheck check {file_name} --exercise {exercise}"


def _docstring(text: str, indent: str, returns: str | None = None) -> str:
    body = text.strip().replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    if returns:
        body += f"\n\nReturns: {returns}"
    lines = body.splitlines()
    inner = "\n".join(indent + line if line else "" for line in lines[1:])
    return f'{indent}"""{lines[0]}' + (f"\n{inner}\n{indent}" if len(lines) > 1 else "") + '"""'


def _raise(name: str, indent: str) -> str:
    return f"{indent}raise NotImplementedError({STUB_MESSAGE.format(name=name)!r})"


def _reference_class(reference: Path | None, name: str) -> ast.ClassDef | None:
    if reference is None or not Path(reference).is_file():
        return None
    tree = ast.parse(Path(reference).read_text(encoding="utf-8"))
    return next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)


def _class_stub(entry: Entry, reference: Path | None) -> str:
    found = _reference_class(reference, entry.name)
    bases = ", ".join(ast.unparse(b) for b in found.bases) if found is not None else ""
    lines = [f"class {entry.name}({bases}):" if bases else f"class {entry.name}:",
             _docstring(entry.description, INDENT), "",
             f"{INDENT}def __init__(self{', ' + entry.args if entry.args else ''}):"]
    if bases:
        lines.append(f"{INDENT * 2}super().__init__()")
    lines.append(_raise(entry.name, INDENT * 2))
    methods = [n for n in (found.body if found is not None else [])
               if isinstance(n, ast.FunctionDef) and n.name != "__init__"
               and (n.name == "forward" or (n.name.startswith("__") and n.name.endswith("__")))]
    for method in methods:
        args = ast.unparse(method.args)
        returns = f" -> {ast.unparse(method.returns)}" if method.returns is not None else ""
        lines += ["", f"{INDENT}def {method.name}({args}){returns}:", _raise(f"{entry.name}.{method.name}", INDENT * 2)]
    return "\n".join(lines)


def _function_stub(entry: Entry) -> str:
    return "\n".join([f"def {entry.name}({entry.args}):", _docstring(entry.description, INDENT, entry.returns),
                      _raise(entry.name, INDENT)])


def stub(entry: Entry, reference: Path | None) -> str:
    """The stub of one contract name (a class or a function)."""
    return _class_stub(entry, reference) if entry.is_class else _function_stub(entry)


def python_source(contract: Contract, reference: Path | None, file_name: str) -> str:
    """The starter .py: a docstring on how it is checked and graded, the imports, a stub per contract name."""
    header = textwrap.dedent(f'''\
        """{contract.exercise}: {contract.title}. Your submission: fill in every function and class below.

        The exercise and the rules are in CONTRACT.md. Keep the names and signatures: the grader calls them.
        All of this file runs when it is graded: keep training and plots under `if __name__ == "__main__":`.

        Check your work before you submit (the public tests; more tests grade it after you submit):
            {check_command(contract.exercise, file_name)}
        """''')
    parts = [header, contract.imports] + [stub(e, reference) for e in contract.entries]
    return "\n\n\n".join(parts) + "\n"


def notebook(contract: Contract, reference: Path | None, file_name: str):
    """The starter notebook (nbformat v4): the exercise, the imports, one cell per contract name, the check."""
    import nbformat.v4 as nbf

    cells = [nbf.new_markdown_cell(f"# `{contract.exercise}`: {contract.title}\n\n{contract.exercise_text}\n\n"
                                   f"## What to implement\n\n{contract.rules}\n\n"
                                   "This notebook is graded as you ran it (cells in the order of their In [n]): "
                                   "training loops, plots, `!pip` lines, downloads and `input()` do not run at "
                                   "grading time, other module-level code gets 2 s each; so keep training inside "
                                   "functions, and make what your functions use (a criterion, a device) in a "
                                   "module-level statement or inside them."),
             nbf.new_code_cell(contract.imports)]
    for entry in contract.entries:
        cells.append(nbf.new_markdown_cell(f"### `{entry.signature}`\n\n{entry.description}"))
        cells.append(nbf.new_code_cell(stub(entry, reference)))
    cells.append(nbf.new_markdown_cell(
        "## Check your work\n\nSave the notebook, then run the cell below: it runs the public tests on this file "
        "with the diagnoses the grader gives. More tests grade your submission after you submit."))
    cells.append(nbf.new_code_cell(f"!{check_command(contract.exercise, file_name)}"))
    nb = nbf.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb
