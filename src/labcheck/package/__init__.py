"""Grading packages for the platforms where courses grade: one container per submission.

    labcheck package gradescope   --exercise sgd --out autograder.zip   (labcheck.package.gradescope)
    labcheck package prairielearn --exercise sgd --out questions/sgd    (labcheck.package.prairielearn)

Both carry the same two parts of a labcheck checkout (this module decides which files):
  - the environment: labcheck's package (pyproject.toml, README.md, src/labcheck) that setup.sh
    pip-installs next to the pinned torch and the data sets (templates/setup.sh);
  - the grading files: the exercise's reference (exercises/<id>/reference.py), its bands and tolerances
    (exercises/<id>/bands.json), its contract tests (exercises/<id>/test_contract.py), the
    repository's pytest settings (pyproject.toml; graders load no conftest.py) and CONFIG_NAME, this package's
    settings (visibility, limits). $LABCHECK_HOME points at them when grading.
Nothing else of the checkout goes in: no examples, no other exercise, no git history.

At grading time the platform's entry point (run_autograder, run.sh) calls `grade_upload`: find the
student's file in the upload folder (the names of labcheck.submission, with a clear message when
none fits), grade it exactly as `labcheck grade` does (its own grader process, the student's code
in the sandboxed worker; the reference, the contract tests, the results folder and the platform's
metadata are hidden from it), and return labcheck's results; each platform module turns them into
its own results.json. Nothing the student's process computes is trusted.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from labcheck import grade, paths, report, sandbox
from labcheck.exercises import REGISTRY, get
from labcheck.submission import entry_names, expected_files_message, submission_entry

CONFIG_NAME = "labcheck-package.json"  # the package's settings, next to the grading files
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")  # Gradescope's values
MAX_OUTPUT_CHARS = 8000  # per test: results files stay small (PrairieLearn's limit is 1 MB in all)


@dataclasses.dataclass
class PackageConfig:
    exercise: str  # the exercise id (labcheck.exercises)
    visibility: str = "visible"  # Gradescope: default visibility of every test
    test_visibility: dict[str, str] = dataclasses.field(default_factory=dict)  # test name -> visibility
    timeout: float = 60.0  # seconds per call into the submission
    memory_mb: int = 3072  # memory limit of the submission's worker, MB
    total_timeout: float = 540.0  # seconds for the whole submission (PrairieLearn allows 600 in all)
    # Lowest worker confinement to grade under (labcheck.sandbox.LEVELS). Platform containers run under
    # Docker's default seccomp profile, which forbids the namespaces of the higher levels; the
    # container per submission is then the outer boundary.
    min_isolation: str = "hook-only"
    built_from: dict = dataclasses.field(default_factory=dict)  # provenance: labcheck commit, file hashes

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    def write(self, folder: Path) -> None:
        (Path(folder) / CONFIG_NAME).write_text(self.to_json())

    @classmethod
    def read(cls, folder: Path) -> "PackageConfig":
        return cls(**json.loads((Path(folder) / CONFIG_NAME).read_text()))


# ---------------------------------------------------------------------------------------------
# Building


def template(name: str, **values: str) -> str:
    """A file of templates/ with its @KEY@ placeholders filled in."""
    text = resources.files("labcheck.package").joinpath("templates", name).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


def environment_files() -> list[tuple[Path, str]]:
    """(file, path in the bundle) of what `pip install` needs: labcheck's package, never the reference."""
    root = paths.repo_root()
    files = [(root / "pyproject.toml", "pyproject.toml"), (root / "README.md", "README.md")]
    for f in sorted((root / "src" / "labcheck").rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
            files.append((f, str(f.relative_to(root))))
    return files


def grading_files(exercise: str) -> list[tuple[Path, str]]:
    """(file, path in the bundle) of what grades `exercise`: its registry entry, calls, probes, reference, bands
    and contract tests (not its examples, claims or reference tests), and the pytest settings."""
    ex = get(exercise)
    root = paths.repo_root()
    needed = [ex.folder / "exercise.py", ex.calls_path, ex.probes_path, ex.reference_path, ex.bands_path,
              ex.contract_tests]
    files = [(root / "pyproject.toml", "pyproject.toml")] + [(f, str(f.resolve().relative_to(root))) for f in needed]
    missing = [str(f) for f, _ in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"cannot package {exercise!r}: missing {', '.join(missing)}")
    return files


def provenance(files: list[tuple[Path, str]]) -> dict:
    """The labcheck commit (when in a git checkout) and the sha256 of every packaged file."""
    try:
        commit = subprocess.run(["git", "-C", str(paths.repo_root()), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"labcheck_commit": commit, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "sha256": {arc: hashlib.sha256(f.read_bytes()).hexdigest() for f, arc in files}}


def graded_test_names(exercise: str) -> list[str]:
    """The graded tests of the exercise's contract file, in file order."""
    return [t["name"] for t in grade.planned_tests(REGISTRY[exercise].contract_tests)]


def make_config(exercise: str, visibility: str = "visible", hidden=(), after_due_date=(), after_published=(),
                timeout: float = 60.0, memory_mb: int = 3072, total_timeout: float = 540.0,
                min_isolation: str = "hook-only") -> PackageConfig:
    """Check the per-test visibility options against the contract's graded tests (ValueError names the bad one)."""
    get(exercise)
    if visibility not in VISIBILITIES:
        raise ValueError(f"visibility {visibility!r}: expected one of {', '.join(VISIBILITIES)}")
    known = graded_test_names(exercise)
    per_test: dict[str, str] = {}
    for value, names in (("hidden", hidden), ("after_due_date", after_due_date), ("after_published", after_published)):
        for name in names:
            if name not in known:
                raise ValueError(f"no graded test {name!r} in {exercise}'s contract; graded tests: {', '.join(known)}")
            if name in per_test:
                raise ValueError(f"test {name!r} given two visibilities ({per_test[name]}, {value})")
            per_test[name] = value
    return PackageConfig(exercise, visibility, per_test, timeout, memory_mb, total_timeout,
                         sandbox.isolation_level(min_isolation))


def copy_files(files: list[tuple[Path, str]], dest: Path) -> None:
    for f, arc in files:
        target = Path(dest) / arc
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)


# ---------------------------------------------------------------------------------------------
# Grading one upload (inside the platform's container)


@dataclasses.dataclass
class UploadResult:
    entry: Path | None  # the file that was graded, None when the upload has none we accept
    results: dict  # labcheck's results (Gradescope-shaped, see labcheck.report), every graded test
    notes: list[str]  # for the student: which file was graded (what of a notebook ran: the results' output)
    seconds: float  # wall clock of the whole grading


def find_entry(upload: Path, exercise: str) -> tuple[Path | None, list[str]]:
    """The file to grade in the upload folder, and notes for the student (or why there is none)."""
    upload = Path(upload)
    files = sorted(p for p in upload.rglob("*") if p.is_file() and "__MACOSX" not in p.parts) if upload.is_dir() else []
    listing = ", ".join(str(p.relative_to(upload)) for p in files[:20]) or "nothing"
    folder = upload
    subdirs = [p for p in upload.iterdir() if p.is_dir() and p.name != "__MACOSX"] if upload.is_dir() else []
    if upload.is_dir() and len(subdirs) == 1 and not any(p.is_file() for p in upload.iterdir()):
        folder = subdirs[0]  # a zip of a folder
    try:
        entry = submission_entry(folder, exercise)
    except FileNotFoundError:
        return None, [f"No gradable file: {expected_files_message(exercise)}. You submitted: {listing}."]
    notes = [f"Graded {entry.relative_to(upload)}."]
    if entry.name not in entry_names(exercise):
        notes.append(f"(Please name it {exercise}.py or {exercise}.ipynb next time.)")
    return entry, notes


def grade_upload(upload: Path, config: PackageConfig, hide: list[Path], python: str | None = None) -> UploadResult:
    """Grade the upload folder as `labcheck grade` would; `hide`: paths the student's code may not read."""
    start = time.monotonic()
    exercise = config.exercise
    entry, notes = find_entry(upload, exercise)
    if entry is None:
        tests = [{**t, "score": 0.0, "status": "failed", "output": notes[0]}
                 for t in grade.planned_tests(REGISTRY[exercise].contract_tests)]
        return UploadResult(None, report.gradescope_results(tests, output=notes[0]), notes, time.monotonic() - start)
    with tempfile.TemporaryDirectory(prefix="labcheck-package-") as tmp:
        sub = grade.Submission(entry, exercise, entry.stem, REGISTRY[exercise].contract_tests,
                               deny=tuple(str(Path(h).resolve()) for h in hide))
        opts = grade.Options(out=Path(tmp) / "out", jobs=1, timeout=config.timeout, memory_mb=config.memory_mb,
                             total_timeout=config.total_timeout, fresh=True, quiet=True,
                             min_isolation=config.min_isolation)
        if python:
            opts.python = python
        results = grade.grade_many([sub], opts)[sub.name]
    return UploadResult(entry, results, notes, time.monotonic() - start)


def entry_point(argv: list[str] | None, module: str, doc: str, root_env: str, root_default: str, what: str,
                run) -> int:
    """`python -m MODULE --root DIR`: what the platform's entry script runs; `run(root)` writes results.json."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", metavar="DIR", default=os.environ.get(root_env, root_default),
                        help=f"{what} (default: ${root_env} or {root_default})")
    args = parser.parse_args(argv)
    results = run(Path(args.root))
    print(f"labcheck: score {results.get('score', 0):g}; results in {Path(args.root) / 'results' / 'results.json'}")
    return 0


def clip(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    text = str(text or "")
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters)"


# ---------------------------------------------------------------------------------------------
# Command line: `labcheck package gradescope|prairielearn`


def add_parser(subparsers) -> None:
    """The `package` subcommand of the labcheck CLI."""
    from labcheck.exercises import EXERCISES

    p = subparsers.add_parser("package", help="build a Gradescope autograder zip or a PrairieLearn question")
    p.add_argument("platform", choices=("gradescope", "prairielearn"), metavar="PLATFORM",
                   help="gradescope (a zip) or prairielearn (a question folder)")
    p.add_argument("--exercise", choices=EXERCISES, metavar="ID", required=True, help=f"one of {', '.join(EXERCISES)}")
    p.add_argument("--out", metavar="PATH", default=None,
                   help="the zip (gradescope) or question folder (prairielearn) (default: autograder-ID.zip / pl-ID)")
    p.add_argument("--visibility", choices=VISIBILITIES, default="visible", metavar="V",
                   help=f"Gradescope: default visibility of every test, one of {', '.join(VISIBILITIES)} "
                        "(default: visible)")
    for flag, what in (("hidden", "never shown to students"), ("after-due-date", "shown after the due date"),
                       ("after-published", "shown once grades are published")):
        p.add_argument(f"--{flag}", action="append", default=[], metavar="TEST",
                       help=f"Gradescope: this graded test is {what}; repeatable (default: none)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="seconds per call (default: 60.0)")
    p.add_argument("--memory-mb", type=int, default=3072, metavar="MB", help="worker memory limit (default: 3072)")
    p.add_argument("--total-timeout", type=float, default=540.0, metavar="S",
                   help="seconds per submission, all tests together (default: 540.0)")
    p.add_argument("--min-isolation", metavar="LEVEL", default="hook-only",
                   help=f"lowest worker confinement to grade under, one of {', '.join(sandbox.LEVELS)}; platform "
                        "containers usually forbid the namespaces of the higher ones (default: hook-only)")
    p.add_argument("--image", metavar="NAME", default="YOUR_DOCKERHUB_USER/labcheck-grader",
                   help="PrairieLearn: the grading image built from OUT/image "
                        "(default: YOUR_DOCKERHUB_USER/labcheck-grader)")


def main(args) -> int:
    try:
        config = make_config(args.exercise, args.visibility, args.hidden, args.after_due_date, args.after_published,
                             args.timeout, args.memory_mb, args.total_timeout, args.min_isolation)
    except ValueError as e:
        print(f"labcheck package: {e}", file=sys.stderr)
        return 2
    if args.platform == "gradescope":
        from labcheck.package import gradescope

        out = gradescope.build(config, Path(args.out or f"autograder-{args.exercise}.zip"))
        print(f"labcheck package: {out} (upload it as the Gradescope autograder; "
              f"{len(graded_test_names(args.exercise))} graded tests)")
    else:
        from labcheck.package import prairielearn

        out = prairielearn.build(config, Path(args.out or f"pl-{args.exercise}"), args.image)
        print(f"labcheck package: {out} (copy it into your course's questions/; build and push the grading "
              f"image from {out / 'image'} and set its name in info.json)")
    return 0
