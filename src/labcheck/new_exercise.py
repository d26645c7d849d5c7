"""`labcheck new ID`: write a new exercise folder from the template in labcheck/templates/exercise/.

The template is a whole, working exercise (a one-function contract, a reference with the common skeleton,
calls, probes, one graded test with its tolerance, the reference's tests, a correct and a buggy example):
`labcheck grade --examples --exercise ID` grades its examples as expected the moment it is written, and
the README's "Adding your own exercise" says what to change in each file.
"""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from labcheck import paths

ID_PATTERN = re.compile(r"[a-z][a-z0-9_]{1,30}")  # a folder name, a marker argument, part of module names


def template_files() -> list[tuple[str, str]]:
    """(path inside the folder, text with @ID@) of every template file."""
    root = resources.files("labcheck").joinpath("templates", "exercise")
    found = []

    def walk(node, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.is_dir():
                if child.name != "__pycache__":
                    walk(child, f"{prefix}{child.name}/")
            else:
                found.append((f"{prefix}{child.name}", child.read_text()))

    walk(root, "")
    return found


def write_exercise(exercise: str, root: Path | None = None) -> Path:
    """Write exercises/<exercise>/ (under `root`, default the checkout's exercises/); refuse an existing one."""
    if not ID_PATTERN.fullmatch(exercise):
        raise ValueError(f"exercise id {exercise!r}: lower-case letters, digits and _, starting with a letter")
    folder = Path(root or paths.exercises_dir()) / exercise
    if folder.exists():
        raise FileExistsError(f"{folder} exists already")
    for name, text in template_files():
        target = folder / name.removesuffix(".tmpl")  # (.tmpl: no tool takes the template for code of ours)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text.replace("@ID@", exercise))
    return folder


def main(args) -> int:
    try:
        folder = write_exercise(args.exercise, Path(args.root) if args.root else None)
    except (ValueError, FileExistsError) as e:
        print(f"labcheck new: {e}")
        return 2
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    print(f"labcheck new: wrote {folder}/: {', '.join(files)}")
    print(f"next: labcheck grade --examples --exercise {args.exercise}   (the template's examples, as expected)")
    print("then replace the softmax in CONTRACT.md, reference.py, calls.py, probes.py, test_contract.py and the "
          "examples with your exercise (README: 'Adding your own exercise')")
    return 0
