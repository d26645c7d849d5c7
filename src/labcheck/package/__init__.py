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

What the student sees (issue #26): Gradescope shows each test by its visibility, and its total score
only while every test is shown (its specification); a hidden test's points would still count in that
total, so `--hidden` refuses a test that carries points, and the results' top-level `output` never
holds a total, a count or a message of a test the student cannot see yet (gradescope.results_json).
PrairieLearn shows every test, its points and output as soon as a submission is graded, so any
visibility option is refused for it. An upload that cannot be parsed (a syntax error) is not
graded at all: `syntax_problem` names the student's own file, and PrairieLearn marks it
`gradable: false` (no attempt lost), as it does an upload without a gradable file and one whose
every test failed to load.

Where it runs (PLATFORMS): a container of the platform's default memory, CPUs and time. The
student's worker is limited to the container's memory less GRADER_RESERVE_MB (the grader's own
processes), so it runs out before the container does and the student reads why. One submission is
graded per container, by a fresh grader and a fresh worker (no zygotes: nothing to share them with).
The images install torch's CPU build (grading never uses a GPU, issue #25; the CUDA build's libraries
alone map about 0.5 GB) and only the exercise's data set, and fill the expected-answer cache when
they are built (`warm`), so a grading never runs the reference.
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
import json
import math
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
NOT_YET_SHOWN = ("hidden", "after_due_date", "after_published")  # a student may not see these when graded
MAX_OUTPUT_CHARS = 8000  # per test: results files stay small (PrairieLearn's limit is 1 MB in all)
# What the grader's own processes (the entry point, pytest with torch and the expected answers, the mapped
# libraries) need beside the student's worker, MiB. One sgd grading with torch's CPU build (labcheck bench's
# grading-memory row) peaked at 594 MiB: grader 285 anon, entry point 14, libraries 109 (shared with the
# worker), worker 187. A worker at its RLIMIT_DATA holds ~35 MiB less than the limit resident, so in 768 MB
# the tree stays near 408 + 384 - 35 = 757 MiB, and the worker's data (220 MiB at `import torch`, at most
# ~110 more for a correct example of any exercise, measured) fits its 384.
GRADER_RESERVE_MB = 384
# torch's CUDA build maps about 770 MiB of data at `import torch` (its CPU build 220 MiB): a worker of that
# environment (a developer's checkout grading a package locally) gets at least this much, and a note says so.
CUDA_BUILD_WORKER_MB = 2048
CALL_TIMEOUT_S = 60.0  # wall-clock cap of one call on one whole CPU (labcheck grade's --timeout)


@dataclasses.dataclass(frozen=True)
class Platform:
    """A platform's grading container as its documentation gives it, and where an instructor changes it."""

    name: str
    memory_mb: int  # a grading container's memory by default, MiB (Docker's "768m" is 768 MiB)
    cpus: float  # its CPUs by default
    timeout_s: int  # its default time for one submission, seconds
    max_timeout_s: int  # the most it allows, seconds
    where: str  # where an instructor changes them
    source: str  # where the numbers are documented


PLATFORMS = {
    "gradescope": Platform(
        "gradescope", 768, 0.5, 600, 2400,
        "the assignment's Settings page, Autograder settings (memory, CPUs, timeout)",
        "gradescope-autograders.readthedocs.io/en/latest/troubleshooting/ ('Our default memory limit is 768MB', "
        "'each autograder is allocated 1/2 of a virtual CPU', 'a default overall timeout of 10 minutes', "
        "at most 40)"),
    "prairielearn": Platform(
        "prairielearn", 2048, 0.9, 30, 600,
        "memory and CPUs are the grader host's, the same for every question; the timeout is info.json's "
        "externalGradingOptions.timeout (this package sets it)",
        "PrairieLearn's apps/grader-host/src/lib/config.ts (graderDockerMemory 2 GiB and no swap, CPU quota "
        "90000 of 100000 us) and docs/externalGrading.md (timeout: default 30 s, at most 600)"),
}

PL_VISIBILITY_REFUSED = (
    "PrairieLearn shows the student every test of an externally graded question, with its points, message and "
    "output, as soon as the submission is graded (its results format, docs/externalGrading.md, has no "
    "visibility): a hidden or after-due-date test would be shown at once, so --visibility, --hidden, "
    "--after-due-date and --after-published are refused for it. Keep such tests out of the exercise's graded "
    "tests, or grade on Gradescope")


def worker_memory_mb(container_mb: int) -> int:
    """The student's worker's memory limit in a container of `container_mb`: what the grader leaves."""
    return container_mb - GRADER_RESERVE_MB


@dataclasses.dataclass
class PackageConfig:
    exercise: str  # the exercise id (labcheck.exercises)
    visibility: str = "visible"  # Gradescope: default visibility of every test
    test_visibility: dict[str, str] = dataclasses.field(default_factory=dict)  # test name -> visibility
    timeout: float = 60.0  # seconds per call into the submission
    memory_mb: int = worker_memory_mb(PLATFORMS["gradescope"].memory_mb)  # the worker's memory limit, MiB
    total_timeout: float = 540.0  # seconds for the whole submission (PrairieLearn allows 600 in all)
    # Lowest worker confinement to grade under (labcheck.sandbox.LEVELS). Platform containers run under
    # Docker's default seccomp profile, which forbids the namespaces of the higher levels; the
    # container per submission is then the outer boundary.
    min_isolation: str = "hook-only"
    built_from: dict = dataclasses.field(default_factory=dict)  # provenance: labcheck commit, file hashes
    platform: str = "gradescope"  # a key of PLATFORMS
    container_memory_mb: int = PLATFORMS["gradescope"].memory_mb  # the grading container's memory, MiB

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
                timeout: float | None = None, memory_mb: int | None = None, total_timeout: float = 540.0,
                min_isolation: str = "hook-only", platform: str = "gradescope",
                container_memory_mb: int | None = None) -> PackageConfig:
    """Check the options against the contract's graded tests and the platform (ValueError says what is wrong).

    Visibility: PrairieLearn refuses every option (PL_VISIBILITY_REFUSED); Gradescope refuses a test that
    would be `hidden` and carries points (it would count in the total score students see). Memory: the
    worker's limit (default: the container's less GRADER_RESERVE_MB) must leave the grader its share. Time:
    a call's wall-clock cap (default: CALL_TIMEOUT_S on one whole CPU, longer on the platform's share of one,
    where the same CPU seconds take longer) caps calls that block; their CPU time is limited on its own."""
    get(exercise)
    if platform not in PLATFORMS:
        raise ValueError(f"platform {platform!r}: expected one of {', '.join(PLATFORMS)}")
    if visibility not in VISIBILITIES:
        raise ValueError(f"visibility {visibility!r}: expected one of {', '.join(VISIBILITIES)}")
    points = {t["name"]: t["max_score"] for t in grade.planned_tests(REGISTRY[exercise].contract_tests)}
    known = list(points)
    per_test: dict[str, str] = {}
    for value, names in (("hidden", hidden), ("after_due_date", after_due_date), ("after_published", after_published)):
        for name in names:
            if name not in known:
                raise ValueError(f"no graded test {name!r} in {exercise}'s contract; graded tests: {', '.join(known)}")
            if name in per_test:
                raise ValueError(f"test {name!r} given two visibilities ({per_test[name]}, {value})")
            per_test[name] = value
    if platform == "prairielearn" and (per_test or visibility != "visible"):
        raise ValueError(PL_VISIBILITY_REFUSED)
    scoring_hidden = [f"{n} ({points[n]:g} points)" for n in known
                      if per_test.get(n, visibility) == "hidden" and points[n] > 0]
    if scoring_hidden:
        raise ValueError(
            f"hidden test(s) that carry points: {', '.join(scoring_hidden)}. Gradescope shows students their total "
            "score, and a hidden test's points count in it (its specification: hidden tests 'should only be used for "
            "tests which don't contribute points to the total'), so a student would see points that no visible test "
            "accounts for. Use --after-due-date TEST instead (the test is shown after the due date, and Gradescope "
            "shows no total score before then) or --after-published TEST")
    if timeout is None:
        timeout = round(CALL_TIMEOUT_S / min(PLATFORMS[platform].cpus, 1.0))
    container = int(container_memory_mb or PLATFORMS[platform].memory_mb)
    worker = int(memory_mb) if memory_mb is not None else worker_memory_mb(container)
    if worker <= 0 or worker + GRADER_RESERVE_MB > container:
        raise ValueError(
            f"the worker's memory limit ({worker} MB) must leave the grader {GRADER_RESERVE_MB} MB of the "
            f"{container} MB container (--container-memory-mb): at most {container - GRADER_RESERVE_MB} MB, or "
            "the container runs out first and the student sees no result at all")
    return PackageConfig(exercise, visibility, per_test, timeout, worker, total_timeout,
                         sandbox.isolation_level(min_isolation), platform=platform, container_memory_mb=container)


def visibility_of(config: PackageConfig, test_name: str) -> str:
    """The Gradescope visibility of a graded test (`test_x[param]` counts as `test_x`)."""
    return config.test_visibility.get(report.base_name(test_name), config.visibility)


def what_students_see(config: PackageConfig) -> list[str]:
    """In words, what a student is shown of a graded submission on the package's platform."""
    planned = grade.planned_tests(REGISTRY[config.exercise].contract_tests)
    total = sum(t["max_score"] for t in planned)
    if config.platform == "prairielearn":
        return [f"PrairieLearn shows a student every test ({len(planned)} tests, {total:g} points), its message and "
                "output, and the score as soon as the submission is graded; an upload that cannot be parsed, has "
                "no gradable file or loads no function is 'invalid, not gradable' (no attempt used)."]
    shown = [t for t in planned if visibility_of(config, t["name"]) == "visible"]
    later = {v: [t for t in planned if visibility_of(config, t["name"]) == v] for v in NOT_YET_SHOWN}
    if not any(later.values()):
        return [f"Gradescope shows a student every test ({len(planned)} tests, {total:g} points), its output and the "
                "total score as soon as the submission is graded."]
    lines = [f"Before the due date Gradescope shows a student {len(shown)} of the {len(planned)} tests "
             f"({sum(t['max_score'] for t in shown):g} of {total:g} points) with their output, the points of those "
             "tests, and no total score (it hides the total while a test is hidden until later); the results' "
             "output names no other test and counts none."]
    if later["after_due_date"]:
        lines.append(f"After the due date it also shows {', '.join(t['name'] for t in later['after_due_date'])} "
                     "and the total score.")
    if later["after_published"]:
        lines.append(f"Once grades are published it also shows {', '.join(t['name'] for t in later['after_published'])}.")
    if later["hidden"]:
        lines.append(f"It never shows {', '.join(t['name'] for t in later['hidden'])} (no points).")
    return lines


def settings_to_use(config: PackageConfig) -> list[str]:
    """The platform settings this package needs (memory, CPUs, timeout), as `labcheck package` prints them."""
    p = PLATFORMS[config.platform]
    needed_s = int(config.total_timeout) + 60  # the whole submission, plus the container's start and the reports
    if config.platform == "gradescope":
        memory = (f"memory: {config.container_memory_mb} MB"
                  + (" (Gradescope's default)" if config.container_memory_mb == p.memory_mb else
                     f" (raise it from Gradescope's default {p.memory_mb} MB)"))
        timeout = (f"timeout: at least {math.ceil(needed_s / 60)} min ({config.total_timeout:g} s of grading plus "
                   f"start-up; Gradescope's default {p.timeout_s // 60} min is "
                   f"{'enough' if needed_s <= p.timeout_s else 'NOT enough: raise it'})")
    else:
        memory = (f"memory: {config.container_memory_mb} MB, the grader host's (PrairieLearn's default "
                  f"{p.memory_mb} MB; not a per-question setting)")
        timeout = (f"timeout: {min(p.max_timeout_s, needed_s)} s in info.json (externalGradingOptions.timeout; "
                   f"PrairieLearn's default is {p.timeout_s} s, at most {p.max_timeout_s})")
    return [
        f"Settings for {config.platform} ({p.where}):",
        f"  {memory}; the student's worker is limited to {config.memory_mb} MB, the grader keeps "
        f"{config.container_memory_mb - config.memory_mb} MB (measure one grading: labcheck bench --exercise "
        f"{config.exercise}, its grading-memory row)",
        (f"  CPUs: 1 recommended ({p.cpus:g} by default: grading then takes about {1 / min(p.cpus, 1.0):.1f}x as "
         if config.platform == "gradescope" else f"  CPUs: {p.cpus:g}, the grader host's (grading takes about "
         f"{1 / min(p.cpus, 1.0):.1f}x as ") + f"long as on one whole CPU; each call is limited in CPU seconds, but "
        f"its wall clock is capped at {config.timeout:g} s)",
        f"  {timeout}",
        f"  (numbers from {p.source})",
    ]


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
    problem: str | None = None  # why nothing could be graded (no gradable file, a syntax error, nothing loaded),
    #                             naming the student's own file; PrairieLearn: not gradable
    unparsed_cells: str | None = None  # a notebook's cells with a syntax error (left out; PrairieLearn: not gradable)
    instructor_notes: list[str] = dataclasses.field(default_factory=list)  # the entry point's stdout only


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


def notebook_notes(entry: Path) -> list[str]:
    """What of a notebook does not run at grading time (parsed here; nothing of it executes)."""
    try:
        nb = read_notebook(entry.read_text(encoding="utf-8", errors="replace"))
    except Exception as e:  # the worker reports the same failure as the load error of every test
        return [f"The notebook could not be read: {type(e).__name__}: {e}"]
    notes = [f"Notebook (nbformat {nb.nbformat[0]}.{nb.nbformat[1]}): only imports, def, class and constants run "
             f"at grading time; {len(nb.dropped)} other top-level statement(s) were left out."]
    for name, where in nb.missing_globals.items():
        notes.append(f"- {name!r} is used by your functions but only assigned in {where.cell} (`{where.code}`), "
                     "which does not run: tests that use it fail with a NameError.")
    notes += [f"- notebook problem: {e}" for e in nb.validation_errors]
    return notes


def syntax_problem(entry: Path, shown: str) -> tuple[str | None, bool]:
    """(what in the student's file cannot be parsed, whether that leaves nothing to grade), naming the file as
    `shown` (the name the student gave it). Nothing of the file runs here: it is only parsed. A .py with a
    syntax error loads nothing; a notebook's cell with one is left out, the other cells still graded."""
    if entry.suffix == ".ipynb":
        try:
            nb = read_notebook(entry.read_text(encoding="utf-8", errors="replace"))
        except Exception as e:  # not a notebook at all: nothing of it can load
            return f"{shown} could not be read as a notebook: {type(e).__name__}: {e}", True
        bad = [d for d in nb.dropped if d.reason.startswith("a syntax error")]
        if not bad:
            return None, False
        return "\n".join(f"{shown}, {d.cell}, line {d.line}: {d.reason[2:]}" + (f": {d.code}" if d.code else "")
                         for d in bad), False
    try:
        compile(entry.read_bytes(), shown, "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as e:
        where = f"{shown}, line {e.lineno}" if e.lineno else shown
        lines = [f"{where}: {type(e).__name__}: {e.msg}"]
        if e.text and e.text.strip():
            lines.append("    " + e.text.rstrip("\n").lstrip())
            if e.offset:
                indent = len(e.text) - len(e.text.lstrip())
                lines.append("    " + " " * max(0, e.offset - 1 - indent) + "^")
        return "\n".join(lines), True
    except ValueError as e:  # e.g. null bytes
        return f"{shown}: {e}", True
    return None, False


def load_failure(results: dict) -> str | None:
    """The load error when every graded test failed because the submission did not load, else None."""
    tests = results.get("tests") or []
    outputs = [str(t.get("output", "")) for t in tests]
    if tests and all(t.get("status") != "passed" for t in tests) and all(o.startswith("[load_error]") for o in outputs):
        return outputs[0][len("[load_error]"):].strip()
    return None


def torch_build() -> str:
    """'cpu', 'cuda' or 'missing': the build of the torch this interpreter imports, read from its files
    (torch itself is not imported: the entry point stays small)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return "missing"
    return "cuda" if any((Path(spec.origin).parent / "lib").glob("libtorch_cuda*.so")) else "cpu"


def _failed_everywhere(exercise: str, message: str) -> dict:
    tests = [{**t, "score": 0.0, "status": "failed", "output": message}
             for t in grade.planned_tests(REGISTRY[exercise].contract_tests)]
    return report.gradescope_results(tests, output=message)


def grade_upload(upload: Path, config: PackageConfig, hide: list[Path], python: str | None = None,
                 parse_errors_grade: bool = True) -> UploadResult:
    """Grade the upload folder as `labcheck grade` would; `hide`: paths the student's code may not read.
    `parse_errors_grade=False`: a notebook with cells Python cannot parse is not graded either (PrairieLearn
    calls it not gradable; Gradescope grades the other cells).

    One submission per container: a fresh grader and a fresh worker (no zygote would serve a second one;
    $LABCHECK_GRADER / $LABCHECK_WORKER override), the worker limited to config.memory_mb."""
    start = time.monotonic()
    exercise = config.exercise
    upload = Path(upload)
    entry, notes = find_entry(upload, exercise)
    if entry is None:
        return UploadResult(None, _failed_everywhere(exercise, notes[0]), notes, time.monotonic() - start,
                            problem=notes[0])
    shown = str(entry.relative_to(upload))
    problem, fatal = syntax_problem(entry, shown)
    if fatal:
        message = f"{shown} could not be parsed, so nothing of it was graded:\n{problem}"
        return UploadResult(entry, _failed_everywhere(exercise, message), [f"Received {shown}."] + notes[1:],
                            time.monotonic() - start, problem=message)
    if problem and not parse_errors_grade:
        return UploadResult(entry, _failed_everywhere(exercise, problem), notes, time.monotonic() - start,
                            unparsed_cells=problem)
    if entry.suffix == ".ipynb":
        notes += notebook_notes(entry)
    instructor = []
    memory_mb = config.memory_mb
    if torch_build() == "cuda" and memory_mb < CUDA_BUILD_WORKER_MB:
        memory_mb = CUDA_BUILD_WORKER_MB
        instructor.append(f"labcheck: this environment has torch's CUDA build, which maps ~770 MiB of data at import: "
                          f"the worker's limit was raised from {config.memory_mb} to {memory_mb} MB, and one grading "
                          "needs about 1.4 GB; the package's setup.sh installs the CPU build")
    with tempfile.TemporaryDirectory(prefix="labcheck-package-") as tmp:
        sub = grade.Submission(entry, exercise, entry.stem, REGISTRY[exercise].contract_tests,
                               deny=tuple(str(Path(h).resolve()) for h in hide))
        opts = grade.Options(out=Path(tmp) / "out", jobs=1, timeout=config.timeout, memory_mb=memory_mb,
                             total_timeout=config.total_timeout, fresh=True, quiet=True,
                             min_isolation=config.min_isolation,
                             grader=os.environ.get("LABCHECK_GRADER") or "fresh",
                             worker=os.environ.get("LABCHECK_WORKER") or "fresh")
        if python:
            opts.python = python
        results = grade.grade_many([sub], opts)[sub.name]
    failure = load_failure(results)
    if failure is not None:
        failure = failure.replace(str(upload.resolve()) + os.sep, "").replace(str(upload) + os.sep, "")
        failure = f"{shown} could not be loaded, so no test could run:\n{failure}"
    if problem:  # a notebook's cells that cannot be parsed were left out; the rest was graded
        notes.append(f"Cells left out because Python cannot parse them (what they define is missing):\n{problem}")
    return UploadResult(entry, results, notes, time.monotonic() - start, problem=failure,
                        unparsed_cells=problem, instructor_notes=instructor)


def warm(home: Path, cache: Path, python: str = sys.executable) -> dict:
    """Fill the expected-answer cache `cache` for the package whose grading files are in `home`: run its
    contract tests against the reference, as grading runs them (the reference in a worker for `lab.call`,
    in this process for `lab.expect`), storing every answer a grading asks for. Returns labcheck's
    results; RuntimeError when the reference fails a test (the image could not grade correctly)."""
    home, cache = Path(home), Path(cache)
    config = PackageConfig.read(home)
    contract = REGISTRY[config.exercise].contract_tests
    memory_mb = max(config.memory_mb, CUDA_BUILD_WORKER_MB) if torch_build() == "cuda" else config.memory_mb
    env = {**os.environ, **grade.GRADER_ENV, **grade.NO_GPU_ENV, "LABCHECK_HOME": str(home)}
    with tempfile.TemporaryDirectory(prefix="labcheck-warm-") as tmp:
        out = Path(tmp) / "results.json"
        cmd = [python, "-m", "pytest", str(contract), *grade.GRADER_PYTEST_ARGS, "--labcheck-exercise", config.exercise,
               "--labcheck-expected-cache", str(cache), "--labcheck-results", str(out),
               "--labcheck-timeout", str(config.timeout), "--labcheck-memory-mb", str(memory_mb)]
        proc = subprocess.run(cmd, cwd=home, env=env, capture_output=True, text=True)
        results = json.loads(out.read_text()) if out.is_file() else {}
    lost = [t["name"] for t in results.get("tests", []) if t.get("status") != "passed"]
    if proc.returncode != 0 or lost or not results.get("tests"):
        raise RuntimeError(f"the reference of {config.exercise} did not pass its own contract tests here "
                           f"({', '.join(lost) or 'no results'}); this environment cannot grade it:\n"
                           + (proc.stdout + proc.stderr)[-3000:])
    return results


def entry_point(argv: list[str] | None, module: str, doc: str, root_env: str, root_default: str, what: str,
                run, warm_paths) -> int:
    """`python -m MODULE --root DIR`: what the platform's entry script runs; `run(root)` writes results.json.
    `--warm`: fill the expected-answer cache instead (at image build); `warm_paths(root)` -> (home, cache)."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", metavar="DIR", default=os.environ.get(root_env, root_default),
                        help=f"{what} (default: ${root_env} or {root_default})")
    parser.add_argument("--warm", action="store_true",
                        help="fill the expected-answer cache by running the contract tests on the reference "
                             "(once, when the image is built), grade nothing (default: False)")
    args = parser.parse_args(argv)
    if args.warm:
        home, cache = warm_paths(Path(args.root))
        os.environ["LABCHECK_HOME"] = str(home)  # the registry finds the package's exercise there
        from labcheck import exercises

        exercises.refresh()
        start = time.monotonic()
        try:
            results = warm(home, cache)
        except RuntimeError as e:
            print(f"labcheck: {e}", file=sys.stderr)
            return 1
        print(f"labcheck: expected answers of {len(results['tests'])} graded tests stored in {cache} "
              f"(the reference scored {results.get('score', 0):g}/{results.get('max_score', 0):g}, "
              f"{time.monotonic() - start:.0f} s)")
        return 0
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
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help=f"wall-clock seconds per call (default: {CALL_TIMEOUT_S:g} over the platform's share of a CPU: "
                        "Gradescope 120, PrairieLearn 67)")
    p.add_argument("--container-memory-mb", type=int, default=None, metavar="MB",
                   help="the grading container's memory as set on the platform (default: the platform's, "
                        + ", ".join(f"{k} {v.memory_mb}" for k, v in PLATFORMS.items()) + ")")
    p.add_argument("--memory-mb", type=int, default=None, metavar="MB",
                   help=f"the student's worker's memory limit (default: the container's less {GRADER_RESERVE_MB}, "
                        "the grader's share)")
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
                             args.timeout, args.memory_mb, args.total_timeout, args.min_isolation,
                             platform=args.platform, container_memory_mb=args.container_memory_mb)
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
              f"image from {out / 'image'} and set its name in info.json; then fill the expected answers once: "
              f"docker run --rm -v \"{(out / 'tests').resolve()}:/grade/tests\" {args.image} /grade/tests/run.sh --warm)")
    print("\n".join(settings_to_use(config)))
    print("What students see: " + " ".join(what_students_see(config)))
    return 0
