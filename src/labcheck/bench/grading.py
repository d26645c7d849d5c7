"""The grading benchmark of `labcheck bench` (issue #15 item 1): submissions per minute of a class of
copies of an exercise's bundled examples, graded the old way (a fresh process per submission, no
cache) and the new way (forked graders and workers, the expected-answer cache) in the same run, with
PASS/MISS against GRADING_TARGET and a check that every verdict is the same both ways.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

GRADING_TARGET = 5.0  # at least this many times the submissions per minute of one fresh process each
GRADING_CLASS_ENV = "LABCHECK_BENCH_GRADING_CLASS"  # class size of `labcheck bench`'s grading row; 0 skips it
DEFAULT_GRADING_CLASS = 20  # students in the benchmark class
GRADING_JOBS = 2  # graders in parallel, as `labcheck grade` defaults to


@dataclasses.dataclass
class GradingResult:
    """Submissions per minute of a class, graded the old way and the new way in the same run.

    baseline  `python -m pytest` per submission (grade.Options.grader="fresh") starting a fresh sandboxed
              worker (worker="fresh") with no cache of the reference's expected answers
              (--labcheck-expected-cache none): grading as it was
    pool      graders forked from the preloaded zygote (labcheck.gradepool), workers forked from a worker
              zygote per job (labcheck.untrusted.zygote), sharing a disk cache of expected answers that
              starts empty in this run (the first submissions fill it)
    Rates are wall clock (grading is several processes on every core), class size / seconds.
    """

    exercise: str
    class_size: int  # submissions graded by the pool
    baseline_size: int  # submissions graded the old way (one copy of each distinct example)
    jobs: int
    baseline_seconds: float
    pool_seconds: float
    mismatches: list[str]  # submissions whose per-test verdicts differ from the baseline's
    load_average: float | None = None

    @property
    def baseline_per_min(self) -> float:
        return 60.0 * self.baseline_size / self.baseline_seconds

    @property
    def pool_per_min(self) -> float:
        return 60.0 * self.class_size / self.pool_seconds

    @property
    def ratio(self) -> float:
        return self.pool_per_min / self.baseline_per_min

    @property
    def verdict(self) -> str:
        return "PASS" if self.ratio >= GRADING_TARGET and not self.mismatches else "MISS"

    def misses(self) -> list[str]:
        msgs = []
        if self.ratio < GRADING_TARGET:
            msgs.append(f"grading: {self.ratio:.1f}x the one-process-per-submission rate, target >= {GRADING_TARGET:g}x")
        if self.mismatches:
            msgs.append(f"grading: verdicts differ from the fresh-process grader for {', '.join(self.mismatches)}")
        return msgs

    def extra_info(self) -> dict:
        return {"exercise": self.exercise, "class_size": self.class_size, "baseline_size": self.baseline_size,
                "jobs": self.jobs, "submissions_per_min": round(self.pool_per_min, 2),
                "baseline_submissions_per_min": round(self.baseline_per_min, 2),
                "ratio_to_baseline": round(self.ratio, 2), "ratio_target": GRADING_TARGET,
                "ratio_verdict": self.verdict, "same_verdicts": not self.mismatches,
                "load_average_1min": self.load_average}


def grading_class(exercise: str, size: int, folder: Path) -> tuple[list, dict[str, str]]:
    """A class folder of `size` students, each a copy of a bundled example of `exercise`, round-robin.

    Returns (submissions as `labcheck grade CLASS/` finds them, student name -> example it copies).
    """
    from labcheck import grade

    examples = [sub.path for sub in grade.discover_examples(exercise)]
    if not examples:
        raise ValueError(f"{exercise} has no bundled examples to grade")
    folder.mkdir(parents=True, exist_ok=True)
    origin = {}
    for i in range(size):
        source = examples[i % len(examples)]
        name = f"student{i:03d}_{source.stem}"
        (folder / f"{name}.py").write_bytes(source.read_bytes())
        origin[name] = source.stem
    return grade.discover([folder], exercise), origin


def _verdicts(results: dict) -> tuple:
    return tuple(sorted((t["name"], t["status"], t["score"]) for t in results.get("tests", [])))


def grading_mismatches(baseline: dict[str, dict], pooled: dict[str, dict], origin: dict[str, str]) -> list[str]:
    """Students whose (test, status, points) differ from the baseline's grade of the example they copy."""
    reference = {origin[name]: _verdicts(res) for name, res in baseline.items()}
    return sorted(name for name, res in pooled.items()
                  if origin[name] in reference and _verdicts(res) != reference[origin[name]])


def grade_class(subs: list, out: Path, how: str, expected_cache: str, jobs: int = GRADING_JOBS
                ) -> tuple[float, dict[str, dict]]:
    """(wall seconds, results by submission name) of grading `subs` with graders and workers started
    `how` ("fresh" or "fork")."""
    from labcheck import grade

    opts = grade.Options(out=out, jobs=jobs, fresh=True, grader=how, worker=how,
                         extra_pytest_args=("--labcheck-expected-cache", expected_cache))
    start = time.perf_counter()
    results = grade.grade_many(subs, opts)
    return time.perf_counter() - start, results


def measure_grading(exercise: str = "sgd", class_size: int = DEFAULT_GRADING_CLASS, baseline_size: int | None = None,
                    jobs: int = GRADING_JOBS, workdir: Path | None = None) -> GradingResult:
    """Grade a class of `class_size` copies of `exercise`'s examples both ways (see GradingResult).

    The baseline grades the first `baseline_size` students (default: one of each distinct example,
    so both rates are over the same mix); every pool verdict must equal the baseline's verdict of the
    example it copies (same tests passed and failed, same points).
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="labcheck-bench-grading-", dir=workdir) as tmp:
        root = Path(tmp)
        subs, origin = grading_class(exercise, class_size, root / "class")
        distinct = len(set(origin.values()))
        baseline_size = min(class_size, baseline_size or distinct)
        baseline_seconds, baseline = grade_class(subs[:baseline_size], root / "baseline", "fresh", "none", jobs)
        pool_seconds, pooled = grade_class(subs, root / "pool", "fork", str(root / "expected"), jobs)
    mismatches = grading_mismatches(baseline, pooled, origin)
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return GradingResult(exercise, class_size, baseline_size, jobs, baseline_seconds, pool_seconds, mismatches, load)


def format_grading(res: GradingResult) -> str:
    same = "same verdicts" if not res.mismatches else f"{len(res.mismatches)} verdicts DIFFER"
    return (f"grading {res.exercise:10s} class {res.class_size:3d}, {res.jobs} jobs: {res.pool_per_min:6.1f} submissions/min"
            f" (forked graders and workers, expected-answer cache) vs {res.baseline_per_min:5.1f}/min (fresh process each, "
            f"{res.baseline_size} graded) = {res.ratio:4.1f}x  target >={GRADING_TARGET:g}x {res.verdict}; {same}")


def grading_class_size(args) -> int:
    size = getattr(args, "grading_class", None)
    if size is None:
        size = int(os.environ.get(GRADING_CLASS_ENV) or DEFAULT_GRADING_CLASS)
    return size



# ---------------------------------------------------------------------------------------------
# Memory of one grading on a platform (issue #26 item 3)

MEMORY_TARGET_MB = 768  # Gradescope's default container, MiB (labcheck.package.PLATFORMS): one grading must fit
MEMORY_ENV = "LABCHECK_BENCH_GRADING_MEMORY"  # "0" skips `labcheck bench`'s grading-memory row
PYTHON_ENV = "LABCHECK_BENCH_GRADING_PYTHON"  # the interpreter of the platform's environment (default: this one)


@dataclasses.dataclass
class MemoryResult:
    """Peak memory of grading one submission through the Gradescope package, the whole process tree counted
    as its container counts it (labcheck.bench.memory): the entry point, the grader, the student's worker.

    As on the platform: the package built by `labcheck package`, its expected-answer cache filled first (as
    setup.sh does), one submission (the exercise's examples/correct.py) graded by run_autograder with a fresh
    grader and worker and no bubblewrap (Docker's default seccomp profile refuses its namespaces). Only the
    torch build differs where this machine has another: the row says which build it measured."""

    exercise: str
    python: str  # the interpreter that graded (the platform's environment)
    torch: str  # its torch.__version__
    build: str  # "cpu" or "cuda" (torch.version.cuda)
    peak: object  # labcheck.bench.memory.Peak
    score: float
    max_score: float
    expected_computed: int | None  # reference answers computed while grading (0: the cache served them all)
    target_mb: float = MEMORY_TARGET_MB

    @property
    def verdict(self) -> str:
        return "PASS" if self.peak.total_mib <= self.target_mb and self.score == self.max_score > 0 else "MISS"

    def misses(self) -> list[str]:
        if self.verdict == "PASS":
            return []
        why = []
        if self.peak.total_mib > self.target_mb:
            why.append(f"peak {self.peak.total_mib:.0f} MiB > {self.target_mb:g} MB")
            if self.build == "cuda":
                why.append("torch's CUDA build maps its CUDA libraries in every process (the packages install the "
                           f"CPU build: measure that environment with {PYTHON_ENV}=<its python>)")
        if self.score != self.max_score or not self.max_score:
            why.append(f"the correct example scored {self.score:g}/{self.max_score:g}")
        return [f"grading memory ({self.exercise}): " + "; ".join(why)]

    def extra_info(self) -> dict:
        return {"exercise": self.exercise, "torch": self.torch, "build": self.build,
                "peak_mib": self.peak.total_mib, "anon_mib": self.peak.anon_mib, "file_mib": self.peak.file_mib,
                "target_mb": self.target_mb, "verdict": self.verdict, "expected_computed": self.expected_computed}


def torch_of(python: str) -> tuple[str, str]:
    """(torch.__version__, 'cpu' or 'cuda') of the interpreter `python`."""
    import subprocess

    out = subprocess.run([python, "-c", "import torch; print(torch.__version__, 'cuda' if torch.version.cuda else 'cpu')"],
                         capture_output=True, text=True, timeout=300).stdout.split()
    return (out[0], out[1]) if len(out) == 2 else ("?", "?")


def autograder_folder(zip_path: Path, root: Path, submission: Path, exercise: str) -> Path:
    """`root` laid out as Gradescope's /autograder: source/ (the zip, modes kept), run_autograder, the upload."""
    import shutil
    import stat
    import zipfile

    (root / "source").mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(root / "source")
        for info in zf.infolist():  # zipfile drops the mode bits; Gradescope keeps them
            mode = info.external_attr >> 16
            if mode:
                os.chmod(root / "source" / info.filename, stat.S_IMODE(mode))
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")  # as Gradescope's image build does
    (root / "submission").mkdir()
    shutil.copy(submission, root / "submission" / f"{exercise}.py")
    (root / "submission_metadata.json").write_text('{"id": 1, "users": []}')
    return root


def measure_package_memory(exercise: str = "sgd", python: str | None = None, workdir: Path | None = None,
                           submission: Path | None = None) -> MemoryResult:
    """Build `exercise`'s Gradescope package, fill its expected-answer cache, grade `submission` (default:
    examples/correct.py) through run_autograder and sample the process tree's memory (see MemoryResult)."""
    import json
    import subprocess
    import sys
    import tempfile

    import labcheck
    from labcheck import package
    from labcheck.bench import memory
    from labcheck.exercises import get
    from labcheck.package import gradescope

    python = python or os.environ.get(PYTHON_ENV) or sys.executable
    source = Path(labcheck.__file__).resolve().parents[1]  # this labcheck, for another interpreter too
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "LABCHECK_PYTHON": python, "LABCHECK_BWRAP": "", "LABCHECK_GRADER": "fresh", "LABCHECK_WORKER": "fresh"}
    env.pop("LABCHECK_EXPECTED_CACHE", None)  # the package's own cache, as run_autograder sets it
    version, build = torch_of(python)
    with tempfile.TemporaryDirectory(prefix="labcheck-bench-memory-", dir=workdir) as tmp:
        zip_path = gradescope.build(package.make_config(exercise), Path(tmp) / "autograder.zip")
        root = autograder_folder(zip_path, Path(tmp) / "autograder",
                                 Path(submission or get(exercise).examples_dir / "correct.py").resolve(), exercise)
        env["AUTOGRADER_ROOT"] = str(root)
        subprocess.run([python, "-m", "labcheck.package.gradescope", "--warm", "--root", str(root)],
                       env={**env, "LABCHECK_HOME": str(root / "source" / gradescope.CHECKOUT)}, check=True,
                       stdout=subprocess.DEVNULL)
        peak = memory.measure([str(root / "run_autograder")], env=env, cwd=str(root))
        results = json.loads((root / "results" / "results.json").read_text())
    meta = (results.get("extra_data") or {}).get("labcheck") or {}
    return MemoryResult(exercise, python, version, build, peak, float(results.get("score", 0)),
                        float(meta.get("max_score", 0)), meta.get("expected_computed"))


def format_memory(res: MemoryResult) -> str:
    from labcheck.bench.memory import format_peak

    cache = ("warm cache" if res.expected_computed == 0 else
             f"{res.expected_computed} reference answers computed" if res.expected_computed else "cache ?")
    return (f"grading memory {res.exercise}: peak {format_peak(res.peak)} grading one submission through the "
            f"Gradescope package ({res.score:g}/{res.max_score:g}, {cache}, {res.peak.seconds:.0f} s), torch "
            f"{res.torch} ({res.build} build)  target <={res.target_mb:g} MB {res.verdict}")


def grading_memory_enabled() -> bool:
    return os.environ.get(MEMORY_ENV, "1") != "0"
