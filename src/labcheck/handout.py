"""`labcheck handout ID --out DIR`: what students receive for an exercise, and nothing of its solution.

    DIR/README.md        how to work, check and submit
    DIR/CONTRACT.md      the student contract (exercises/<id>/CONTRACT.md)
    DIR/<id>.py          the starter as a Python file ...
    DIR/<id>.ipynb       ... and as a notebook (labcheck.starter): names, signatures, descriptions, no body
    DIR/check/           the public self-check that `labcheck check` runs (layout: labcheck.selfcheck)

The public tests are the contract tests marked `@pytest.mark.public`, copied as they are written (so
their messages are the grader's), without the hidden tests and without any helper or fixture that
only hidden tests use. Their expected values travel as data: the handout is built by running the
public tests on the reference with the plugin recording every answer the reference gave
(--labcheck-record-answers), then checked by running them again on the reference from the answers
alone, with the labcheck home pointed at the handout, where no reference exists: a public test that
needs the reference itself, or an answer the file lacks, fails the build.
"""
from __future__ import annotations

import ast
import hashlib
import json
import shutil
import sys
import tomllib
from pathlib import Path

import nbformat

from labcheck import contracts, paths, secret, starter
from labcheck.answers import versions
from labcheck.exercises import get
from labcheck.selfcheck import (
    ANSWERS, MANIFEST, PYTEST_INI, HandoutError, check_home, public_tests_file, run_public_tests,
)

PUBLIC_MARK = "public"  # @pytest.mark.public on a graded contract test


def _mark_names(node: ast.FunctionDef) -> set[str]:
    """The pytest marks on a test: `@pytest.mark.NAME` or `@pytest.mark.NAME(...)`."""
    names = set()
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Attribute) and ast.unparse(target.value) == "pytest.mark":
            names.add(target.attr)
    return names


def _names_used(node: ast.AST) -> set[str]:
    """Names a statement reads, and the parameters of a function (pytest fixtures are parameters)."""
    used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        used |= {a.arg for a in node.args.args + node.args.kwonlyargs}
    return used


def public_tests(source: str) -> tuple[str, list[str], list[str]]:
    """(the contract file with only its public tests, public test names, hidden test names).

    Top-level functions are kept when a public test or a kept module-level statement needs them,
    directly or through other kept functions; the rest (hidden tests, their helpers and fixtures) are
    cut out line for line, decorators included, so what stays reads exactly as written."""
    tree = ast.parse(source)
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    graded = [f for f in functions.values() if "graded" in _mark_names(f)]
    public = [f.name for f in graded if PUBLIC_MARK in _mark_names(f)]
    hidden = [f.name for f in graded if PUBLIC_MARK not in _mark_names(f)]
    todo = list(public)
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            todo += [n for n in _names_used(node) if n in functions]
    keep: set[str] = set()
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        todo += [n for n in _names_used(functions[name]) if n in functions and n not in keep]
    lines = source.splitlines(keepends=True)
    cut = set()
    for name, node in functions.items():
        if name not in keep:
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            cut |= set(range(first - 1, node.end_lineno))
    kept = "".join(line for i, line in enumerate(lines) if i not in cut)
    while "\n\n\n\n" in kept:
        kept = kept.replace("\n\n\n\n", "\n\n\n")
    return kept, public, hidden


def pytest_ini() -> str:
    """The repository's pytest settings (pyproject.toml), as the grader runs with them, in pytest.ini form."""
    settings = tomllib.loads((paths.repo_root() / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    lines = ["[pytest]"]
    for key, value in settings.items():
        if key in ("testpaths", "addopts"):  # the check names its one file and passes its own options
            continue
        values = value if isinstance(value, list) else [value]
        lines.append(f"{key} =" + "".join(f"\n    {v}" for v in values))
    return "\n".join(lines) + "\n"


def readme(exercise: str, title: str, manifest: dict) -> str:
    return f"""# `{exercise}`: {title}

What you have:

- `CONTRACT.md`: the exercise and what to implement (names, signatures, what each must do);
- `{exercise}.ipynb` and `{exercise}.py`: the same starter twice; work in the one you prefer;
- `check/`: the public tests and their expected answers (data), for the self-check below.

Check your work before you submit (needs labcheck {manifest['made_with']['labcheck']} and torch
{manifest['made_with']['torch']} installed, as the course's environment has them):

```bash
labcheck check {exercise}.ipynb --exercise {exercise}     # or {exercise}.py
```

It runs the {len(manifest['public_tests'])} public tests ({manifest['public_points']:g} of
{manifest['public_points'] + manifest['hidden_points']:g} points) on your file, with the messages the grader
gives. {manifest['hidden_tests']} more tests ({manifest['hidden_points']:g} points) grade your submission after you
submit: passing the public ones is necessary, not sufficient.

A notebook is graded as you ran it (cells in the order of their In [n]); its training loops, plots, `!pip`
lines, downloads and `input()` do not run at grading time, and other module-level code gets 2 s each. A .py
file runs whole: keep training and plots under `if __name__ == "__main__":`. Submit `{exercise}.ipynb` or
`{exercise}.py`.
"""


def _sha256_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def build(exercise: str, out: Path) -> Path:
    """Write the handout of `exercise` to `out` (HandoutError when its public check does not hold)."""
    ex = get(exercise)
    contract = contracts.read(exercise)
    out = Path(out)
    if (out / "check").exists():
        shutil.rmtree(out / "check")  # a rebuilt handout carries no stale answers
    out.mkdir(parents=True, exist_ok=True)
    (out / "CONTRACT.md").write_text(contract.markdown)
    (out / f"{exercise}.py").write_text(starter.python_source(contract, ex.reference_path, f"{exercise}.py"))
    nbformat.write(starter.notebook(contract, ex.reference_path, f"{exercise}.ipynb"), str(out / f"{exercise}.ipynb"))

    home = check_home(out)
    tests, public, hidden = public_tests(ex.contract_tests.read_text(encoding="utf-8"))
    if not public:
        raise HandoutError(f"{ex.contract_tests} marks no graded test @pytest.mark.{PUBLIC_MARK}")
    target = public_tests_file(home, exercise)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(tests)
    # What the public tests need of the exercise's folder, and nothing of its reference, examples or claims:
    # the registry entry, the tolerances, the worker's calls and the grader's probes (LABCHECK_HOME=home).
    for needed in (ex.folder / "exercise.py", ex.bands_path, ex.calls_path, ex.probes_path):
        copy = home / needed.relative_to(paths.repo_root())
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(needed, copy)
    (home / PYTEST_INI).write_text(pytest_ini())

    # The reference answers the public tests (recorded), then must pass them again from the answers alone.
    # The public tests draw their inputs from a secret of the handout's own (labcheck.secret), written in the
    # manifest for `labcheck check`: its answers are public, and they are no answer table for grading,
    # which draws other inputs from a secret of its own.
    reference = ex.reference_path
    handout_secret = secret.new_secret()
    recorded = run_public_tests(reference, exercise, home, ("--labcheck-record-answers", home / ANSWERS),
                                extra=("--labcheck-reference", str(reference)), secret=handout_secret)
    replayed = run_public_tests(reference, exercise, home, ("--labcheck-answers", home / ANSWERS),
                                secret=handout_secret)
    for stage, results in (("with the reference", recorded), ("from the answers alone", replayed)):
        failed = [f"{t['name']}: {t['output'][:300]}" for t in results["tests"] if t["status"] != "passed"]
        if failed or len(results["tests"]) != len(public):
            raise HandoutError(f"the reference fails public tests of {exercise} {stage}:\n" + "\n".join(failed))
    points = {t["name"]: t["max_score"] for t in recorded["tests"]}
    from labcheck.grade import planned_tests

    all_points = {t["name"]: t["max_score"] for t in planned_tests(ex.contract_tests)}
    manifest = {"exercise": exercise, "title": contract.title, "public_tests": public,
                "public_points": sum(points.values()), "hidden_tests": len(hidden),
                "hidden_points": sum(all_points[name] for name in hidden),
                "made_with": versions(), "secret": handout_secret, "sha256": _sha256_tree(home)}
    (home / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "README.md").write_text(readme(exercise, contract.title, manifest))
    return out


def main(args) -> int:
    try:
        out = build(args.exercise, Path(args.out or f"handout-{args.exercise}"))
    except (HandoutError, contracts.ContractFormatError, FileNotFoundError) as e:
        print(f"labcheck handout: {e}", file=sys.stderr)
        return 1
    manifest = json.loads((check_home(out) / MANIFEST).read_text())
    print(f"labcheck handout: {out} ({args.exercise}.ipynb, {args.exercise}.py, CONTRACT.md, check/: "
          f"{len(manifest['public_tests'])} public tests, {manifest['public_points']:g} points; "
          f"{manifest['hidden_tests']} hidden)")
    return 0
