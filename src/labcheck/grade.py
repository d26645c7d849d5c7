"""`labcheck grade`: grade submissions against an exercise's contract tests, one grader process each.

    labcheck grade alice.py bob.ipynb class_folder/ --exercise width --out runs/grades
    labcheck grade --examples [--exercise width] --out runs/demo

Each submission is graded by its own grader process,

    PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python -m pytest exercises/<id>/test_contract.py
        -p no:cacheprovider -p no:unraisableexception -p labcheck.plugin --noconftest -o addopts= -q
        --labcheck-submission S --labcheck-exercise ID --labcheck-results OUT/<name>/results.json

which in turn runs the student's code in a sandboxed worker (labcheck.sandbox). The grader
processes run in parallel (--jobs), each under an overall wall-clock cap; one that hangs or dies
still leaves a complete results.json (every graded test, 0 points where it did not finish, and
the reason). A finished results.json records the sha256 of the submission and of the contract
tests, so a second run skips what is already graded (resume) unless --fresh. Then
OUT/gradebook.csv, OUT/summary.md and a terminal summary are written from the results files.

Submissions: a .py file, a .ipynb (graded as the student ran it: labcheck.submission's rule, whose
account of what ran and what was left out heads results.json's `output`, so feedback.md), a folder
holding one submission (<id>.py, submission.py, <id>.ipynb or __init__.py), or a class folder whose
every entry (.py, .ipynb or sub-folder) is one submission.

A grading failure is never the student's zero. What goes wrong on labcheck's side (a graded test that
failed on an exception of ours: labcheck.plugin.labcheck_failure; contract tests that do not import; a
grader process that stopped for a reason other than the submission's time; a bug in this module) marks the
results not graded: report.NOT_GRADED for the student, extra_data.labcheck.not_graded with the details for
the instructor, "not graded" in gradebook.csv and summary.md, nothing in the LMS exports, and `labcheck
grade` lists them and exits with status 3.
"""
from __future__ import annotations

import ast
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from labcheck import gradepool, paths, report
from labcheck.exercises import EXERCISES, REGISTRY, get
from labcheck.roster import RosterError
from labcheck.sandbox import ZYGOTE_ENV, Limits, WorkerZygote
from labcheck.submission import SUBMISSION_SUFFIXES, is_single_submission_folder

NOT_GRADED_EXIT = 3  # `labcheck grade`'s exit status when labcheck failed to grade some submission

DEFAULT_TOTAL_TIMEOUT = 900.0  # seconds a whole submission may take, all tests together


@dataclasses.dataclass
class Submission:
    path: Path  # file or folder
    exercise: str
    name: str  # unique label; also its folder under OUT
    tests: Path  # the contract test file that grades it
    expected_failures: tuple[str, ...] | None = None  # bundled examples only
    deny: tuple[str, ...] = ()  # extra paths its worker may not read (e.g. the rest of the class folder)

    @property
    def out_name(self) -> str:
        return self.name


@dataclasses.dataclass
class Options:
    out: Path
    jobs: int = 2
    timeout: float = 60.0  # seconds per call into the submission
    memory_mb: int = 3072
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT
    fresh: bool = False
    python: str = sys.executable
    extra_pytest_args: tuple[str, ...] = ()
    quiet: bool = False
    min_isolation: str = "whitelist-fs"  # refuse to grade below this confinement (labcheck.sandbox.LEVELS)
    # How grader processes start: "fork" from a zygote with torch and pytest preloaded (labcheck.gradepool),
    # "fresh" as `python -m pytest` each (~6 s of imports per submission). $LABCHECK_GRADER overrides.
    grader: str = dataclasses.field(default_factory=lambda: os.environ.get("LABCHECK_GRADER") or "fork")
    # How sandboxed workers start: "fork" from a worker zygote (one per job, torch imported once, under the
    # same bubblewrap set-up; labcheck.untrusted.zygote), "fresh" as a new process each. $LABCHECK_WORKER overrides.
    worker: str = dataclasses.field(default_factory=lambda: os.environ.get("LABCHECK_WORKER") or "fork")
    # The secret every graded input of this class run is drawn from (labcheck.secret): None draws a new one
    # per run unless $LABCHECK_SECRET fixes it. Its graders share it (so they share the reference's answers);
    # no worker ever sees it.
    secret: str | None = None


# ---------------------------------------------------------------------------------------------
# Finding submissions


def contract_file(exercise: str) -> Path:
    return REGISTRY[exercise].contract_tests


def _entries(folder: Path) -> list[Path]:
    """A class folder's submissions: its gradable files and folders, and its links (each graded as refused,
    with a message saying why: labcheck.submission.refuse_links)."""
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith((".", "_")) and p.name != "__init__.py":
            continue
        if p.suffix in SUBMISSION_SUFFIXES or (p.is_dir() and not p.is_symlink()) or (p.is_symlink() and p.is_dir()):
            out.append(p)
    return out


def _unique(name: str, taken: set[str]) -> str:
    """A report folder's name for a submission: no dot (every class file, gradebook.csv or index.html, has one,
    so `gradebook.csv.py` cannot take its place) and unique whatever the file system's case rules."""
    name = re.sub(r"[^A-Za-z0-9_\-]+", "_", name) or "submission"
    candidate, i = name, 2
    while candidate.lower() in taken:
        candidate, i = f"{name}-{i}", i + 1
    taken.add(candidate.lower())
    return candidate


def discover(items: list[str | os.PathLike], exercise: str, tests: Path | None = None) -> list[Submission]:
    """Expand files, single-submission folders and class folders into Submissions."""
    tests = Path(tests) if tests else contract_file(exercise)
    taken: set[str] = set()
    found: list[Submission] = []
    for item in items:
        path = Path(item)
        if path.is_dir() and not is_single_submission_folder(path, exercise):
            for entry in _entries(path):  # (absolute, not resolved: a link is graded as the refused link it is)
                found.append(Submission(entry.absolute(), exercise, _unique(entry.stem, taken), tests,
                                        deny=(str(path.resolve()),)))
        else:
            found.append(Submission(path.absolute(), exercise, _unique(path.stem, taken), tests))
    return found


def expected_failures(path: Path) -> tuple[str, ...] | None:
    """The example's EXPECTED_FAILURES constant, read with ast (the file is never executed here)."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "EXPECTED_FAILURES"
                                                for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return None
            return tuple(str(v) for v in value)
    return None


def discover_examples(exercise: str | None = None) -> list[Submission]:
    """exercises/<id>/examples/*.py for every exercise (or one) that has a contract test file."""
    found = []
    for ex in [exercise] if exercise else list(EXERCISES):
        folder = REGISTRY[ex].examples_dir
        if not folder.is_dir() or not contract_file(ex).is_file():
            continue
        for f in sorted(folder.glob("*.py")):
            if f.name.startswith("_"):
                continue
            found.append(Submission(f.resolve(), ex, f"{ex}/{f.stem}", contract_file(ex),
                                    expected_failures=expected_failures(f)))
    return found


# ---------------------------------------------------------------------------------------------
# Fingerprints (resume)


def sha256_of(path: Path) -> str:
    """The submission's content: a file's bytes, or a folder's files by relative name. A link counts as a link
    (its name), never as what it points to."""
    h = hashlib.sha256()
    path = Path(path)
    if path.is_symlink():
        h.update(b"<link>")
    elif path.is_dir():
        files = sorted(Path(root) / name for root, dirs, names in os.walk(path) for name in names + [
            d for d in dirs if (Path(root) / d).is_symlink()])
        for f in (f for f in files if "__pycache__" not in f.parts):
            h.update(str(f.relative_to(path)).encode() + b"\0")
            h.update(b"<link>" if f.is_symlink() else hashlib.sha256(f.read_bytes()).digest())
    elif path.is_file():
        h.update(path.read_bytes())
    else:
        h.update(b"<missing>")
    return h.hexdigest()


def grader_fingerprint(sub: Submission) -> str:
    """The exercise's whole folder, labcheck's grading code and the contract tests this submission ran:
    a change in any invalidates old grades (labcheck.exercises.Exercise.fingerprint)."""
    h = hashlib.sha256(get(sub.exercise).fingerprint().encode())
    h.update(sha256_of(sub.tests).encode())
    return h.hexdigest()


def results_path(sub: Submission, out: Path) -> Path:
    return Path(out) / sub.out_name / "results.json"


def load_results(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_finished(sub: Submission, out: Path) -> bool:
    data = load_results(results_path(sub, out))
    meta = ((data or {}).get("extra_data") or {}).get("labcheck") or {}
    return (meta.get("finished") is True and meta.get("sha256") == sha256_of(sub.path)
            and meta.get("grader_sha256") == grader_fingerprint(sub)
            and not meta.get("not_graded"))  # labcheck's failure: graded again by the next run


# ---------------------------------------------------------------------------------------------
# Graded tests of a contract file without running it (fallback when the grader process died early)


def planned_tests(tests: Path) -> list[dict]:
    """Names and points of the graded tests, read from the contract file's source with ast."""
    try:
        tree = ast.parse(Path(tests).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return []
    planned = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.name.startswith("test"):
            continue
        for dec in node.decorator_list:
            if isinstance(dec, ast.Call) and getattr(dec.func, "attr", None) == "graded":
                points = 1.0
                for kw in dec.keywords:
                    if kw.arg == "points":
                        try:
                            points = float(ast.literal_eval(kw.value))
                        except (ValueError, TypeError):
                            pass
                if dec.args:
                    try:
                        points = float(ast.literal_eval(dec.args[0]))
                    except (ValueError, TypeError):
                        pass
                planned.append({"name": node.name, "max_score": points})
    return planned


def _complete(results: dict | None, sub: Submission, reason: str | None) -> dict:
    """Every graded test present with score/max_score/status/output; unfinished ones at 0 with `reason`."""
    tests = list((results or {}).get("tests") or [])
    if not tests:
        tests = [{"name": t["name"], "score": 0.0, "max_score": t["max_score"], "status": "failed",
                  "output": "", "visibility": "visible", "not_run": True} for t in planned_tests(sub.tests)]
    fixed = []
    for t in tests:
        t = dict(t)
        t.setdefault("visibility", "visible")
        t.setdefault("output", "")
        t["max_score"] = float(t.get("max_score") or 0.0)
        t["score"] = float(t.get("score") or 0.0)
        not_run = t.pop("not_run", False) or str(t["output"]).startswith("not run")
        if not_run or t.get("status") not in ("passed", "failed", "skipped"):
            t["score"] = 0.0
            t["status"] = "failed"
            t["output"] = f"not run: {reason or 'the grading session ended before this test ran'}"
        fixed.append(t)
    return report.gradescope_results(fixed, output=reason or "")


# ---------------------------------------------------------------------------------------------
# Grading one submission


_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()
_INTERRUPTED = threading.Event()  # set on Ctrl-C: unfinished submissions write no results.json


class Interrupted(Exception):
    """Grading was interrupted; this submission stays ungraded (a later run resumes it)."""


# A grader's pytest session loads only what grading needs: the labcheck plugin, no other installed plugin
# (GRADER_ENV), not the repository's conftest.py (it imports hypothesis for the property tests) and not the
# suite's addopts (markers of plugins that are not loaded). Measured in a grader forked with torch loaded:
# pytest's start fell from 1.6 s to 0.5 s of CPU per submission, most of it hypothesis, which pytest
# assertion-rewrote (and, writing no bytecode, recompiled) in every grader. No labcheck grader module uses
# `assert`, so not rewriting them changes no feedback. Nor does pytest's unraisableexception plugin run: it
# calls gc.collect() twice at the end of a session, 0.24 s of CPU with torch's heap (22% of a grader's CPU
# for the sgd contract, profiled), to turn exceptions raised in __del__ into warnings; a grade must not
# depend on a grader-side finalizer anyway.
GRADER_PYTEST_ARGS = ("-p", "no:cacheprovider", "-p", "no:unraisableexception", "-p", "labcheck.plugin",
                      "--noconftest", "-o", "addopts=", "-q")
GRADER_ENV = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
# Grading never uses a GPU (issue #25). Every expected answer, replay and tolerance is computed in the grader
# on the CPU (tolerances come from float32 error there), and a grade must not depend on the machine that gave
# it; so a student's `device = 'cuda' if torch.cuda.is_available() else 'cpu'` picks the CPU in the worker, as
# on a machine without a GPU. Graders and workers get an empty CUDA_VISIBLE_DEVICES (the sandbox passes the
# variable on to the worker); at whitelist-fs the sandbox's /dev has no GPU device file either, so code that
# resets the variable still finds none.
NO_GPU_ENV = {"CUDA_VISIBLE_DEVICES": ""}


@contextlib.contextmanager
def without_gpu():
    """os.environ with NO_GPU_ENV while graders and worker zygotes start (each copies it), as it was after."""
    before = {key: os.environ.get(key) for key in NO_GPU_ENV}
    os.environ.update(NO_GPU_ENV)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def grader_command(sub: Submission, opts: Options, results: Path) -> list[str]:
    cmd = [opts.python, "-m", "pytest", str(sub.tests), *GRADER_PYTEST_ARGS,
           "--labcheck-submission", str(sub.path), "--labcheck-exercise", sub.exercise,
           "--labcheck-results", str(results), "--labcheck-timeout", str(opts.timeout),
           "--labcheck-memory-mb", str(opts.memory_mb), "--labcheck-min-isolation", opts.min_isolation]
    for d in sub.deny:
        cmd += ["--labcheck-deny", d]
    cmd += ["--labcheck-deny", str(Path(opts.out).resolve())]
    return cmd + list(opts.extra_pytest_args)


def _stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGINT first (pytest then finishes its report and stops the worker), SIGKILL after `grace`."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 10.0)):
        try:
            gradepool.signal_group(proc.pid, sig)
        except PermissionError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class WorkerZygotes:
    """One worker zygote per job (labcheck.sandbox.WorkerZygote), lent to one grader process at a time:
    each submission's worker is then forked from one that imported torch already. A zygote that a
    grader may have left in an unknown state (the grader did not end normally, a child is still
    alive, a message is unread) is closed, and the next grader gets a new one."""

    def __init__(self, opts: Options, exercises: set[str], prestart: int = 0):
        self.limits = Limits(timeout=opts.timeout, memory_mb=opts.memory_mb)
        self.exercises = tuple(sorted(exercises))
        self._free: list[WorkerZygote] = []
        self._lock = threading.Lock()
        # launched now, from this (long-lived) thread: they import torch while the graders' forkserver does
        self._starting = [z for z in (WorkerZygote.launch(self.limits, self.exercises) for _ in range(prestart)) if z]

    def borrow(self):
        """A live zygote, or None where none can start (no bubblewrap: graders start fresh workers)."""
        with self._lock:
            starting = self._starting.pop() if self._starting else None
        if starting is not None and starting.wait_ready():
            return starting
        with self._lock:
            zygote = self._free.pop() if self._free else None
        if zygote is None or not zygote.alive():
            if zygote is not None:
                zygote.close()
            zygote = WorkerZygote.start(self.limits, self.exercises)
        return zygote

    def give_back(self, zygote, grader_ended_normally: bool) -> None:
        if zygote is None:
            return
        if not (grader_ended_normally and zygote.idle()):
            zygote.close()
            return
        with self._lock:
            self._free.append(zygote)

    def close(self) -> None:
        with self._lock:
            free, self._free = self._free, []
            starting, self._starting = self._starting, []
        for zygote in free + starting:
            zygote.close()


def notebook_notes(sub: Submission) -> tuple[dict | None, list[str]]:
    """(account as data, lines for the student) of a notebook submission: what runs at grading time, what is
    left out and why (labcheck.submission.notebook_report; parsed here, nothing of it executes). The platform
    packages show the same lines, since they grade through grade_one."""
    from labcheck.submission import notebook_account, notebook_report, read_notebook, submission_entry

    try:
        entry = submission_entry(Path(sub.path), sub.exercise)
    except (OSError, ValueError):  # refused or missing: the tests say why
        return None, []
    if entry.suffix != ".ipynb":
        return None, []
    try:
        nb = read_notebook(entry.read_text(encoding="utf-8", errors="replace"))
    except Exception as e:  # the worker reports the same failure as the load error of every test
        return None, [f"The notebook could not be read: {type(e).__name__}: {e}"]
    return notebook_account(nb), notebook_report(nb)


def grade_one(sub: Submission, opts: Options, zygotes: WorkerZygotes | None = None) -> dict:
    """Grade `sub` in its own grader process; always returns (and writes) a complete results dict."""
    out_dir = Path(opts.out) / sub.out_name
    out_dir.mkdir(parents=True, exist_ok=True)
    results_file = out_dir / "results.json"
    partial_file = out_dir / "grader-results.json"
    partial_file.unlink(missing_ok=True)
    log_file = out_dir / "grader.log"
    sha = sha256_of(sub.path)
    start = time.monotonic()
    reason = None
    ours = False  # the reason is labcheck's failure, not the submission's (results not graded)
    if not sub.tests.is_file():
        reason = f"no contract tests for exercise {sub.exercise!r} ({sub.tests})"
        code = None
        ours = True
    else:
        env = dict(os.environ)
        env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
        env["PYTHONUNBUFFERED"] = "1"
        env.update(GRADER_ENV)
        env.update(_RUN_ENV)  # this class run's secret (and its expected-answer cache): _grade_many
        zygote = zygotes.borrow() if zygotes is not None else None
        code = None
        with open(log_file, "wb") as log:
            if opts.grader == "fork":
                proc = gradepool.launch(grader_command(sub, opts, partial_file), log_file, paths.repo_root(), env,
                                        zygote=zygote)
            else:
                pass_fds = ()
                if zygote is not None:
                    env[ZYGOTE_ENV] = WorkerZygote.announcement(zygote.control.fileno(), zygote.handoff())
                    pass_fds = (zygote.control.fileno(),)
                proc = subprocess.Popen(grader_command(sub, opts, partial_file), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, cwd=paths.repo_root(), env=env,
                                        start_new_session=True, pass_fds=pass_fds)
            with _LIVE_LOCK:
                _LIVE.add(proc)
            try:
                code = proc.wait(timeout=opts.total_timeout)
            except subprocess.TimeoutExpired:
                _stop(proc)
                code = None
                reason = (f"the submission exceeded the total grading time of {opts.total_timeout:.0f} s "
                          "(infinite loops or very slow code in several functions?)")
            finally:
                with _LIVE_LOCK:
                    _LIVE.discard(proc)
                if zygotes is not None:
                    zygotes.give_back(zygote, code in (0, 1))
        if reason is None and code not in (0, 1):
            tail = log_file.read_text(errors="replace")[-1500:].strip()
            what = {2: "was interrupted", 3: "hit an internal error", 4: "was called wrongly",
                    5: "collected no graded tests"}.get(code, f"stopped with exit code {code}")
            reason = f"the grader process {what}; its last output:\n{tail}"
            ours = True  # (the submission runs in its own worker: it cannot stop the grader)
    if _INTERRUPTED.is_set():
        partial_file.unlink(missing_ok=True)
        raise Interrupted(sub.name)
    partial = load_results(partial_file)
    graded_by = ((partial or {}).get("extra_data") or {}).get("labcheck") or {}
    isolation, load_notes = graded_by.get("isolation"), list(graded_by.get("load_notes") or [])
    results = _complete(partial, sub, reason)
    # for the student: the notebook's account (what ran, what was left out and why), then what the worker said
    # while loading, or why grading stopped (not when that is ours: the instructor's details stay in extra_data)
    notebook, notebook_lines = notebook_notes(sub)
    said = reason if reason and not ours else str((partial or {}).get("output") or "")
    results["output"] = "\n\n".join(part for part in ("\n".join(notebook_lines), said) if part)
    results["execution_time"] = round(time.monotonic() - start, 2)
    results["extra_data"] = {"labcheck": {
        "finished": True, "exercise": sub.exercise, "submission": str(sub.path), "sha256": sha,
        "grader_sha256": grader_fingerprint(sub), "tests": str(sub.tests), "grader_exit_code": code,
        "expected_failures": list(sub.expected_failures) if sub.expected_failures is not None else None,
        "isolation": isolation, "load_notes": load_notes, "notebook": notebook,
        # reference answers this grading computed (0: every one came from the expected-answer cache)
        "expected_computed": graded_by.get("expected_computed"),
        "inputs": graded_by.get("inputs"),  # which secret the inputs came from (labcheck.secret.secret_id)
    }}
    unchecked = graded_by.get("not_graded") if isinstance(graded_by.get("not_graded"), dict) else None
    if ours:
        report.mark_not_graded(results, [], [reason] + list((unchecked or {}).get("details") or []))
    elif unchecked:
        report.mark_not_graded(results, list(unchecked.get("tests") or []), list(unchecked.get("details") or []))
    report.write_json_atomic(results_file, results)
    partial_file.unlink(missing_ok=True)
    return results


_RUN_ENV: dict[str, str] = {}  # what every grader of the running class run gets in its environment


def grade_many(subs: list[Submission], opts: Options, progress=None) -> dict[str, dict]:
    """Grade in parallel (opts.jobs grader processes); skip finished ones unless opts.fresh. No grader or
    worker sees a GPU (NO_GPU_ENV). Every grader of the run draws its inputs from one secret (opts.secret,
    else $LABCHECK_SECRET, else a new one: labcheck.secret); a new one's reference answers are cached for
    this run only (their inputs never come again) and removed after it."""
    from labcheck import secret
    from labcheck.probes.expected import CACHE_ENV, default_folder

    value, source = secret.resolve(opts.secret)
    run_env = {secret.SECRET_ENV: value}
    run_cache = None
    if source == "drawn" and not any(str(a).startswith("--labcheck-expected-cache") for a in opts.extra_pytest_args):
        run_cache = default_folder() / "runs" / secret.secret_id(value)
        run_env[CACHE_ENV] = str(run_cache)
    _RUN_ENV.clear()
    _RUN_ENV.update(run_env)
    try:
        with without_gpu():
            return _grade_many(subs, opts, progress)
    finally:
        _RUN_ENV.clear()
        if run_cache is not None:
            shutil.rmtree(run_cache, ignore_errors=True)


def _grade_many(subs: list[Submission], opts: Options, progress=None) -> dict[str, dict]:
    done: dict[str, dict] = {}
    todo = []
    for sub in subs:
        if not opts.fresh and is_finished(sub, opts.out):
            done[sub.name] = load_results(results_path(sub, opts.out))
            if progress:
                progress(sub, done[sub.name], resumed=True)
        else:
            todo.append(sub)
    _INTERRUPTED.clear()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, opts.jobs))
    if todo and opts.grader == "fork":
        gradepool.start_server()
    zygotes = (WorkerZygotes(opts, {sub.exercise for sub in todo}, prestart=min(len(todo), max(1, opts.jobs)))
               if opts.worker == "fork" else None)
    try:
        futures = {pool.submit(grade_one, sub, opts, zygotes): sub for sub in todo}
        for fut in concurrent.futures.as_completed(futures):
            sub = futures[fut]
            try:
                done[sub.name] = fut.result()
            except Interrupted:
                continue
            except Exception as e:  # a bug of ours must not cost the other submissions their grades
                import traceback

                res = _complete(None, sub, None)
                done[sub.name] = report.mark_not_graded(res, [], [
                    f"labcheck could not grade this submission: {type(e).__name__}: {e}\n{traceback.format_exc()}"])
            if progress:
                progress(sub, done[sub.name], resumed=False)
    except KeyboardInterrupt:
        # Stop the running graders; what finished keeps its results.json, the rest is graded next time.
        _INTERRUPTED.set()
        pool.shutdown(wait=False, cancel_futures=True)
        with _LIVE_LOCK:
            live = list(_LIVE)
        for proc in live:
            _stop(proc, grace=5.0)
        raise
    finally:
        if zygotes is not None:
            zygotes.close()
    pool.shutdown()
    return done


# ---------------------------------------------------------------------------------------------
# Command line


def read_roster(args):
    """The --roster CSV as a labcheck.roster.Roster, or None without one."""
    if not getattr(args, "roster", None):
        return None
    from labcheck import roster

    return roster.read_csv(args.roster)


def write_lms_exports(out: Path, rows: list[dict], assignment: str) -> None:
    """OUT/lms/{canvas,moodle,brightspace}.csv (labcheck.lms), and who the roster does not name."""
    from labcheck import lms

    try:
        written, unmatched = lms.write_all(Path(out) / "lms", rows, assignment)
    except ValueError as e:
        print(f"labcheck grade: no LMS exports: {e}", file=sys.stderr)
        return
    print(f"labcheck grade: LMS imports of '{assignment}' in {Path(out) / 'lms'} ({', '.join(written)})")
    if unmatched:
        print(f"labcheck grade: {len(unmatched)} submission(s) not in the roster, left out of the LMS files: "
              f"{', '.join(unmatched)}", file=sys.stderr)


def _progress(sub: Submission, res: dict, resumed: bool) -> None:
    tag = "resumed" if resumed else "graded"
    print(f"  {tag:8s} {sub.name:40s} {res.get('score', 0):g}/{res.get('max_score', 0):g}", flush=True)


class Progress:
    """Submissions done: a tqdm bar (done/total, elapsed, ETA) on a terminal, one line each in a log,
    nothing with --quiet. Called as grade_many's `progress`."""

    def __init__(self, total: int, quiet: bool = False, stream=None):
        stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.bar = None
        if not quiet and stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="submission", file=stream, dynamic_ncols=True)

    def __call__(self, sub: Submission, res: dict, resumed: bool) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{sub.name} {res.get('score', 0):g}/{res.get('max_score', 0):g}", refresh=False)
            self.bar.update(1)
        elif not self.quiet:
            _progress(sub, res, resumed)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(args) -> int:
    examples = bool(getattr(args, "examples", False))
    if not examples and not args.exercise:
        print("labcheck grade: --exercise is required (unless --examples)", file=sys.stderr)
        return 2
    if not examples and not args.submissions:
        print("labcheck grade: give at least one SUBMISSION (or --examples)", file=sys.stderr)
        return 2
    absent = [str(s) for s in args.submissions if not Path(s).exists()]
    if absent and not examples:  # a typo must not become a 0-point row of the gradebook
        print(f"labcheck grade: no such submission: {', '.join(absent)} (nothing graded)", file=sys.stderr)
        return 2
    opts = Options(out=Path(args.out), jobs=args.jobs, timeout=args.timeout, memory_mb=args.memory_mb,
                   fresh=args.fresh, total_timeout=getattr(args, "total_timeout", None) or DEFAULT_TOTAL_TIMEOUT,
                   min_isolation=getattr(args, "min_isolation", None) or "whitelist-fs")
    if getattr(args, "grader", None):
        opts.grader = args.grader
    if getattr(args, "worker", None):
        opts.worker = args.worker
    from labcheck.sandbox import check_min_isolation

    try:
        reached = check_min_isolation(opts.min_isolation)
    except RuntimeError as e:
        print(f"labcheck grade: {e}", file=sys.stderr)
        return 2
    print(f"labcheck grade: worker isolation {reached['level']} ({reached['launcher']})"
          + (f"; not higher because {reached['why_not_higher']}" if reached["why_not_higher"] else ""), flush=True)
    if examples:
        subs = discover_examples(args.exercise)
        if args.submissions:
            print("labcheck grade: --examples grades the bundled examples only; ignoring SUBMISSION arguments")
        missing = [ex for ex in ([args.exercise] if args.exercise else EXERCISES)
                   if not contract_file(ex).is_file()]
        if missing:
            print(f"labcheck grade: no contract tests yet for {', '.join(missing)} (skipped)")
    else:
        subs = discover(args.submissions, args.exercise)
    if not subs:
        print("labcheck grade: nothing to grade", file=sys.stderr)
        return 2
    try:
        roster = read_roster(args)
    except (OSError, RosterError) as e:
        print(f"labcheck grade: roster: {e}", file=sys.stderr)
        return 2
    opts.out.mkdir(parents=True, exist_ok=True)
    print(f"labcheck grade: {len(subs)} submission(s), {opts.jobs} in parallel, reports in {opts.out}", flush=True)
    start = time.monotonic()
    progress = Progress(len(subs), quiet=bool(getattr(args, "quiet", False)))
    try:
        results = grade_many(subs, opts, progress=progress)
    except KeyboardInterrupt:
        print(f"\nlabcheck grade: interrupted; run the same command again to resume (reports in {opts.out})",
              file=sys.stderr)
        return 130
    finally:
        progress.close()
    rows = report.rows(subs, results, roster)
    report.write_gradebook(opts.out / "gradebook.csv", rows)
    if roster is not None:  # a submission labcheck failed to grade has no grade to export
        write_lms_exports(opts.out, [r for r in rows if not r["not_graded"]],
                          getattr(args, "assignment", None) or f"labcheck {args.exercise}")
    summary = report.summary_markdown(rows, examples=examples)
    (opts.out / "summary.md").write_text(summary)
    print()
    print(report.summary_terminal(rows, examples=examples))
    from labcheck import dashboard

    index = dashboard.write(opts.out)  # from the results.json files: the same after a resumed run
    print(f"\n{len(subs)} graded in {time.monotonic() - start:.0f} s; gradebook {opts.out / 'gradebook.csv'}, "
          f"summary {opts.out / 'summary.md'}" + (f", dashboard {index}" if index else ""))
    failed = [r for r in rows if r["not_graded"]]
    if failed:  # never a silent 0: the instructor must see these and grade them again
        print(f"\nlabcheck grade: NOT GRADED, grading failed on our side for {len(failed)} submission(s) (their "
              f"students were told; details in {opts.out / 'summary.md'} and each results.json's "
              "extra_data.labcheck.not_graded):", file=sys.stderr)
        for r in failed:
            first = next(iter(r["not_graded_details"]), "").strip().splitlines()
            print(f"  {r['name']}: {first[0][:160] if first else '(no details)'}", file=sys.stderr)
        return NOT_GRADED_EXIT
    if examples:
        return 0 if all(r["expectation_met"] for r in rows) else 1
    return 0
