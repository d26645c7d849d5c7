"""labcheck's pytest plugin (entry point `pytest11: labcheck = labcheck.plugin`).

Options (group "labcheck"):
  --labcheck-submission PATH   grade this submission (.py, folder or .ipynb) instead of the reference
  --labcheck-exercise ID       run only this exercise's tests (required with --labcheck-submission)
  --labcheck-timeout S         wall-clock seconds per call into the submission
  --labcheck-startup-timeout S wall-clock seconds for the worker to load the submission
  --labcheck-memory-mb MB      memory limit of the submission's worker process
  --labcheck-results PATH      write a Gradescope results.json of the graded tests
  --labcheck-deny PATH         an extra path the submission may not read (repeatable)
  --labcheck-reference PATH    the reference module `lab.expect` runs (default: exercises/<id>/reference.py)
  --labcheck-min-isolation L   refuse to grade a submission below this confinement level
  --labcheck-expected-cache D  folder of the reference's cached answers (default: $LABCHECK_EXPECTED_CACHE
                               or ~/.cache/labcheck/expected; "none": no disk cache)
  --labcheck-answers PATH      take the reference's answers from this file (labcheck.answers), never run
                               the reference: `labcheck check` on a student's machine
  --labcheck-record-answers P  write every reference answer the session used to this file (labcheck handout)
  --labcheck-secret TEXT       the secret every graded input is drawn from (default: $LABCHECK_SECRET, else a
                               new one per session: labcheck.secret)
Markers: gpu (needs CUDA, skipped cleanly without it), slow, graded(points=...), public, exercise(id).

Graded tests take the `lab` fixture: `lab.call(probe, ...)` builds the probe's inputs here, has the
submission's sandboxed worker call its functions on them and derives the result here;
`lab.expect(probe, ...)` does the same with the reference in this process. The test compares the two,
so the grader computes every verdict (the trust boundary: `labcheck.untrusted`). Every input they
build is drawn from the session's secret (`lab.seed(label)`, `lab.rng(label)`, or the module-scoped
`draws` fixture), so no input repeats from one grading run to the next (labcheck.secret).

A grading failure is never the student's zero: a graded test that fails on labcheck's side (an exception
that is not a verdict: not an AssertionError, SubmissionFailure or pytest.fail, in a probe, a fixture, a
missing bands, data or reference file) is recorded as not graded (labcheck_failure; report.NOT_GRADED
for the student, the traceback in extra_data.labcheck.not_graded for the instructor). What fails inside
`lab.call` before the submission's data is back (the sandbox, the probe's inputs, the reference) is ours at
once (LabcheckError). Any other such exception, raised after the submission's data came back, first sends
the same test through once more with the reference answering every `lab.call`: if that run does not fail
the same way, the exception came from what the submission returned, and it is the student's (a contract
failure).

Each call's deadline follows the work: max(DEADLINE_FACTOR x the reference's CPU time for the same
call, DEADLINE_FLOOR) CPU seconds of the worker, read from /proc by the grader, so the verdict does
not depend on how loaded the machine is; --labcheck-timeout seconds of wall clock stay the cap (a call
that blocks without computing). A contract function that ran out of time once fails its later tests
at once (labcheck.sandbox).
"""
from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

import pytest

from labcheck import paths
from labcheck.exercises import EXERCISES, REGISTRY
from labcheck.sandbox import DEFAULT_MIN_ISOLATION, Limits, Sandbox, SubmissionFailure, isolation_level

PACKAGE_DIR = Path(__file__).resolve().parent  # labcheck's own code: an `assert` failing here is a bug of ours
DEADLINE_FACTOR = 20.0  # a call may use this many times the reference's CPU time for it ...
DEADLINE_FLOOR = 5.0  # ... but never less than these CPU seconds (first-call warm-up of torch's kernels)

MARKERS = (
    "gpu: needs a CUDA device; skipped cleanly when torch.cuda.is_available() is False",
    "slow: a long reproduction or band check; opt in with `pytest -m slow`",
    "graded(points=1): a contract test that counts towards a submission's grade",
    "public: a graded test that students may run before they submit (`labcheck check`); the others stay hidden",
    "exercise(id): the exercise a test belongs to (an id of `labcheck list`)",
)


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _exercise_id(text: str) -> str:
    """A registered exercise (labcheck.exercises), listed or internal such as `_selftest` (labcheck's own tests)."""
    if text in REGISTRY:
        return text
    raise ValueError(f"unknown exercise {text!r}; one of {', '.join(REGISTRY)}")


def known_exercise(text) -> bool:
    try:
        return isinstance(text, str) and _exercise_id(text) == text
    except (ValueError, ImportError):
        return False


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("labcheck", "labcheck: reference checks and grading")
    group.addoption("--labcheck-submission", metavar="PATH", default=None,
                    help="grade this submission instead of the reference. Default: %(default)r")
    group.addoption("--labcheck-exercise", metavar="ID", default=None, type=_exercise_id,
                    help=f"only run this exercise's tests ({', '.join(EXERCISES)}). Default: %(default)r")
    group.addoption("--labcheck-timeout", metavar="S", type=_positive_float, default=Limits.timeout,
                    help="seconds per call into a submission. Default: %(default)r")
    group.addoption("--labcheck-startup-timeout", metavar="S", type=_positive_float, default=Limits.startup_timeout,
                    help="seconds a submission may take to load (imports, definitions). Default: %(default)r")
    group.addoption("--labcheck-memory-mb", metavar="MB", type=int, default=Limits.memory_mb,
                    help="memory limit of a submission's worker in MB. Default: %(default)r")
    group.addoption("--labcheck-results", metavar="PATH", default=None,
                    help="write a Gradescope results.json of the graded tests. Default: %(default)r")
    group.addoption("--labcheck-deny", metavar="PATH", action="append", default=[],
                    help="extra path a submission may not read (repeatable). Default: %(default)r")
    group.addoption("--labcheck-reference", metavar="PATH", default=None,
                    help="reference module for lab.expect instead of exercises/<id>/reference.py. Default: %(default)r")
    group.addoption("--labcheck-min-isolation", metavar="LEVEL", type=isolation_level, default=DEFAULT_MIN_ISOLATION,
                    help="refuse to grade a submission below this confinement level (none, hook-only, no-network, "
                         "whitelist-fs). Default: %(default)r")
    group.addoption("--labcheck-expected-cache", metavar="DIR", default=None,
                    help="folder of the reference's cached answers ('none': memory only). "
                         "Default: $LABCHECK_EXPECTED_CACHE or ~/.cache/labcheck/expected")
    group.addoption("--labcheck-answers", metavar="PATH", default=None,
                    help="the reference's answers as data (a handout's answers file); the reference never runs. "
                         "Default: %(default)r")
    group.addoption("--labcheck-record-answers", metavar="PATH", default=None,
                    help="write the reference answers this session used to PATH (needs --labcheck-exercise). "
                         "Default: %(default)r")
    group.addoption("--labcheck-secret", metavar="TEXT", default=None,
                    help="the secret every graded input is drawn from; fix it to reproduce a run. "
                         "Default: $LABCHECK_SECRET, else a new random one per session")


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    if config.getoption("--labcheck-submission") and not config.getoption("--labcheck-exercise"):
        raise pytest.UsageError("--labcheck-submission needs --labcheck-exercise")
    if config.getoption("--labcheck-answers") and config.getoption("--labcheck-record-answers"):
        raise pytest.UsageError("--labcheck-answers and --labcheck-record-answers are mutually exclusive")
    if config.getoption("--labcheck-record-answers") and not config.getoption("--labcheck-exercise"):
        raise pytest.UsageError("--labcheck-record-answers needs --labcheck-exercise")
    if config.getoption("--labcheck-submission"):
        from labcheck.grade import NO_GPU_ENV
        from labcheck.sandbox import check_min_isolation

        os.environ.update(NO_GPU_ENV)  # a grading session: neither it nor its worker uses a GPU (grade.NO_GPU_ENV)

        try:
            check_min_isolation(config.getoption("--labcheck-min-isolation"))
        except RuntimeError as e:
            raise pytest.UsageError(str(e)) from None
    state = LabcheckState(config)
    config._labcheck = state  # type: ignore[attr-defined]
    config.pluginmanager.register(state, "labcheck-state")


def pytest_unconfigure(config: pytest.Config) -> None:
    state = getattr(config, "_labcheck", None)
    if state is not None:
        state.close()


def exercise_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("exercise")
    return marker.args[0] if marker and marker.args else None


def points_of(item: pytest.Item) -> float:
    marker = item.get_closest_marker("graded")
    return float(marker.kwargs.get("points", marker.args[0] if marker.args else 1)) if marker else 0.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("graded")
        if marker:
            unknown = set(marker.kwargs) - {"points"}
            if unknown:
                raise pytest.UsageError(f"graded mark can't have {sorted(unknown)} keyword arguments ({item.nodeid})")
        marker = item.get_closest_marker("exercise")
        if marker and (not marker.args or not known_exercise(marker.args[0])):
            raise pytest.UsageError(f"exercise mark needs one of {tuple(REGISTRY)} ({item.nodeid})")
    wanted = config.getoption("--labcheck-exercise")
    grading = config.getoption("--labcheck-submission") is not None
    if not wanted and not grading:
        return
    keep, drop = [], []
    for item in items:
        ok = (not wanted or exercise_of(item) == wanted) and (not grading or item.get_closest_marker("graded"))
        (keep if ok else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs CUDA: torch.cuda.is_available() is False on this machine")


class LabcheckError(Exception):
    """labcheck's own failure while grading (the sandbox, a probe's inputs, the reference): never a verdict."""


def labcheck_failure(exc: BaseException) -> bool:
    """Whether a graded test's exception is labcheck's failure, not a verdict on the submission. Verdicts:
    SubmissionFailure (the submission failed a call, raised, hung, crashed), an AssertionError of the test
    (its asserts, torch.testing, pytest.approx) and pytest.fail/skip/xfail. Anything else raised in the grader
    process is ours (a probe's bug, a missing file, a fixture that broke), and so is a bare `assert` failing
    inside labcheck's own package (its grader code has none by design; bands.BandError is a verdict)."""
    if isinstance(exc, SubmissionFailure):
        return False
    if isinstance(exc, (pytest.fail.Exception, pytest.skip.Exception, pytest.xfail.Exception)):
        return False
    if isinstance(exc, AssertionError):  # (bands.BandError, a subclass raised in the package, is a verdict)
        frames = traceback.extract_tb(exc.__traceback__)
        return type(exc) is AssertionError and bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(
            PACKAGE_DIR)
    return True


class ReferenceLab:
    """`lab` with the reference answering every `lab.call` (LabcheckState.pytest_pyfunc_call): the same graded
    test, run on the reference's own results, to tell labcheck's failures from the submission's."""

    is_reference = True

    def __init__(self, session: "LabSession"):
        self._session = session

    def call(self, probe: str, **kwargs):
        return self._session.expect(probe, **kwargs)

    def partial(self, fraction: float, note: str = "") -> None:
        pass

    @property
    def submission(self) -> Path:
        return self._session.reference_path()

    def __getattr__(self, name: str):
        return getattr(self._session, name)


class LabSession:
    """What a graded test sees as `lab`: the submission's sandbox and the in-process reference."""

    def __init__(self, state: "LabcheckState", exercise: str):
        self.state = state
        self.exercise = exercise
        submission = state.config.getoption("--labcheck-submission")
        self._submission = Path(submission) if submission else None
        self.is_reference = submission is None
        self._sandbox: Sandbox | None = None
        self._reference = None
        self.current_item: pytest.Item | None = None
        self.draws = state.draws.scoped(exercise)
        self.last_call_seconds: float | None = None  # wall-clock seconds of the last call into the worker

    def seed(self, *labels) -> int:
        """A seed drawn from this run's secret (labcheck.secret): the same labels give the same seed within a
        run, and a run with another secret gives another one."""
        return self.draws.seed(*labels)

    def rng(self, *labels):
        """A random.Random drawn from this run's secret, for sizes, learning rates, subsets."""
        return self.draws.rng(*labels)

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            cfg = self.state.config
            limits = Limits(timeout=cfg.getoption("--labcheck-timeout"), memory_mb=cfg.getoption("--labcheck-memory-mb"),
                            startup_timeout=cfg.getoption("--labcheck-startup-timeout"))
            deny = list(cfg.getoption("--labcheck-deny"))
            if self.state.expected.folder is not None:
                deny.append(str(self.state.expected.folder))
            from labcheck.probes.expected import default_folder

            deny.append(str(default_folder()))  # every run's answers, whichever folder this run uses
            self._sandbox = Sandbox(self.submission, self.exercise, limits, deny=deny)
        return self._sandbox

    @property
    def probes(self):
        return REGISTRY[self.exercise].probes()

    def call(self, probe: str, **kwargs):
        """The probe's result on the submission (raises SubmissionFailure: the test fails with it). What fails
        before the submission's data is back (the probe's inputs, the reference's answer, the sandbox itself)
        is labcheck's failure (LabcheckError); only deriving the result from that data can be the student's."""
        try:
            spec = self.probes[probe]
            inputs = spec.inputs(**kwargs)
            _, cpu_seconds = self._reference_raw(spec, inputs)
            cpu_deadline = max(DEADLINE_FACTOR * cpu_seconds, DEADLINE_FLOOR)
            start = time.monotonic()
            raw = self.sandbox.call(spec.call, cpu_timeout=cpu_deadline, **inputs)
            self.last_call_seconds = time.monotonic() - start  # measured here: a bound on any time the call reports
        except (SubmissionFailure, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:
            raise LabcheckError(f"lab.call({probe!r}) failed before the submission's result was back: "
                                f"{type(e).__name__}: {e}") from e
        return spec.result(raw, inputs, spec.arguments(**kwargs))

    @property
    def submission(self) -> Path:
        """The graded file: --labcheck-submission, or the reference itself by default."""
        return self._submission if self._submission is not None else self.reference_path()

    def reference_path(self) -> Path:
        if self.state.answers is not None:
            raise RuntimeError("this test needs the reference itself, but the self-check has only its answers "
                               "(--labcheck-answers): it cannot be a public test")
        override = self.state.config.getoption("--labcheck-reference")
        return Path(override).resolve() if override else REGISTRY[self.exercise].reference_path

    def reference_module(self):
        if self._reference is None:
            override = self.state.config.getoption("--labcheck-reference")
            self._reference = (paths.import_by_path(self.reference_path(), f"labcheck_reference_{self.exercise}")
                               if override else REGISTRY[self.exercise].load_reference())
        return self._reference

    def _reference_raw(self, spec, inputs: dict):
        """(raw result, CPU seconds) of the probe's call on the reference, in this (trusted) process; cached."""
        from labcheck import repro, wire

        sent = wire.encode(inputs)
        if self.state.answers is not None:
            return self.state.answers.get(spec.call, sent)
        key = self.state.expected.key(REGISTRY[self.exercise].fingerprint(), self.reference_path(), spec.call, sent)

        def compute():
            with repro.freeze_rng_state():
                return spec.call_function()(self.reference_module(), **wire.decode(sent))

        raw, seconds = self.state.expected.get_or_compute(key, compute)
        if self.state.recording is not None:
            self.state.recording.put(spec.call, sent, raw, seconds)
        return raw, seconds

    def expect(self, probe: str, **kwargs):
        """The probe's result on the reference, computed in this (trusted) process and cached."""
        spec = self.probes[probe]
        inputs = spec.inputs(**kwargs)
        raw, _ = self._reference_raw(spec, inputs)
        return spec.result(raw, inputs, spec.arguments(**kwargs))

    def partial(self, fraction: float, note: str = "") -> None:
        """Award this fraction of the test's points even though it fails (a measured degree)."""
        if self.current_item is not None:
            self.current_item.stash[PARTIAL_KEY] = (max(0.0, min(1.0, float(fraction))), note)

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()


PARTIAL_KEY = pytest.StashKey[tuple]()


class LabcheckState:
    """All session state of the plugin, registered as a plugin itself (as pytest-benchmark does)."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.sessions: dict[str, LabSession] = {}
        self.results: list[dict] = []  # graded tests in the order they ran
        self.planned: dict[str, dict] = {}  # nodeid -> entry, every collected graded test (results.json)
        self.not_graded: dict[str, str] = {}  # nodeid -> what went wrong on labcheck's side (for the instructor)
        self.collection_errors: list[str] = []  # a contract file that did not import: nothing can be graded
        from labcheck.probes.expected import ExpectedCache, default_folder

        folder = config.getoption("--labcheck-expected-cache")
        self.expected = ExpectedCache(None if folder == "none" else (folder or default_folder()))
        from labcheck.answers import AnswerBook

        answers, record = config.getoption("--labcheck-answers"), config.getoption("--labcheck-record-answers")
        self.answers = AnswerBook.read(answers) if answers else None  # the reference's answers as data
        self.recording = AnswerBook(config.getoption("--labcheck-exercise")) if record else None
        from labcheck import secret

        self.secret, self.secret_source = secret.resolve(config.getoption("--labcheck-secret"))
        if config.getoption("--labcheck-submission"):
            os.environ.pop(secret.SECRET_ENV, None)  # a grader process: nothing it starts later inherits it
        self.draws = secret.Draws(self.secret)  # every graded input comes from here
        self.secret_id = secret.secret_id(self.secret)

    def lab(self, exercise: str) -> LabSession:
        if exercise not in self.sessions:
            self.sessions[exercise] = LabSession(self, exercise)
        return self.sessions[exercise]

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()

    @pytest.hookimpl(wrapper=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function):
        """A graded test that failed on what looks like labcheck's side runs again with the reference answering
        its calls: if that run does not fail the same way, the exception came from what the submission returned
        (a list where a tensor belongs, a missing key), and it becomes a SubmissionFailure."""
        try:
            return (yield)
        except BaseException as exc:
            lab = pyfuncitem.funcargs.get("lab")
            no_rerun = isinstance(exc, (LabcheckError, KeyboardInterrupt, SystemExit))  # ours for sure, or a stop
            if no_rerun or not (isinstance(lab, LabSession) and not lab.is_reference and labcheck_failure(exc)
                                and pyfuncitem.get_closest_marker("graded")):
                raise
            args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
            args["lab"] = ReferenceLab(lab)
            try:
                pyfuncitem.obj(**args)
                again = None
            except BaseException as e:
                again = e
            if again is not None and labcheck_failure(again):
                raise  # it fails the same way without the submission: ours (the first exception, as it was)
            raise SubmissionFailure("contract", f"the grader could not check what your code returned "
                                    f"({type(exc).__name__}: {exc}); the reference's results pass this test: "
                                    "compare the types, shapes and keys your function returns with the "
                                    "contract") from None

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        report = outcome.get_result()
        if call.excinfo is not None and isinstance(call.excinfo.value, SubmissionFailure):
            report.longrepr = f"[{call.excinfo.value.kind}] {call.excinfo.value}"
        if not item.get_closest_marker("graded"):
            return
        if report.when == "call" or (report.when == "setup" and not report.passed):
            ours = None  # what went wrong on labcheck's side, for the instructor
            if call.excinfo is not None and not report.passed and not report.skipped and labcheck_failure(
                    call.excinfo.value):
                exc = call.excinfo.value
                ours = (f"{item.nodeid} ({report.when}): {type(exc).__name__}: {exc}\n"
                        + "".join(traceback.format_exception(exc)))[-6000:]
            self._record(item, report, ours)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collection_errors.append(f"collecting {report.nodeid}:\n{report.longreprtext}"[-6000:])

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Plan every graded test as 'not run', so a results file is complete even if grading stops early."""
        for item in session.items:
            if item.get_closest_marker("graded"):
                self.planned[item.nodeid] = self._entry(item, 0.0, "failed", "not run", not_run=True)
        self._write()

    def _entry(self, item: pytest.Item, score: float, status: str, output: str, not_run: bool = False) -> dict:
        entry = {
            "name": item.nodeid.split("::")[-1],
            "nodeid": item.nodeid,
            "exercise": exercise_of(item),
            "score": score,
            "max_score": points_of(item),
            "status": status,
            "output": output,
            "visibility": "visible",
        }
        if not_run:
            entry["not_run"] = True
        return entry

    def _record(self, item: pytest.Item, report: pytest.TestReport, ours: str | None = None) -> None:
        max_score = points_of(item)
        if ours is not None:  # never the student's zero: no score, a word for them, the details for the instructor
            from labcheck.report import NOT_GRADED

            score, status, output = 0.0, "failed", f"not graded: {NOT_GRADED}"
            self.not_graded[item.nodeid] = ours
        elif report.passed:
            score, status, output = max_score, "passed", ""
        else:
            fraction, note = item.stash.get(PARTIAL_KEY, (0.0, ""))
            score = round(max_score * fraction, 4)
            status = "skipped" if report.skipped else "failed"
            output = _without_explanation(_short_message(report))
            if note:
                output = f"{note}\n{output}"
        entry = self._entry(item, score, status, output)
        self.results.append(entry)
        self.planned[item.nodeid] = entry
        self._write()

    def _write(self, final: bool = False) -> None:
        path = self.config.getoption("--labcheck-results")
        if not path:
            return
        from labcheck.report import gradescope_results, mark_not_graded, write_json_atomic

        tests = []
        for entry in self.planned.values():
            if entry.get("not_run"):
                entry = {**entry, "output": "not run: the grading session ended before this test"
                         if final else "not run (yet)"}
            tests.append(entry)
        notes = self.load_notes()
        results = gradescope_results(tests, output="Loading your code:\n" + "\n".join(f"- {n}" for n in notes)
                                     if notes else "")
        results["extra_data"] = {"labcheck": {"isolation": self.isolation(), "load_notes": notes,
                                              "expected_computed": self.expected.computed,
                                              "inputs": self.secret_id}}
        if self.not_graded or self.collection_errors:
            names = [self.planned[n]["name"] for n in self.not_graded if n in self.planned]
            mark_not_graded(results, [] if self.collection_errors else names,
                            self.collection_errors + list(self.not_graded.values()))
        write_json_atomic(path, results)

    def isolation(self) -> dict | None:
        """The confinement the submission's worker reached (the weakest over the exercises graded)."""
        from labcheck.sandbox import LEVELS

        reached = [s._sandbox.isolation for s in self.sessions.values() if s._sandbox is not None and s._sandbox.isolation]
        return min(reached, key=lambda i: LEVELS.index(i["level"])) if reached else None

    def load_notes(self) -> list[str]:
        """What of the submission did not load, as its workers reported it (for the student, never a verdict)."""
        return [n for s in self.sessions.values() if s._sandbox is not None for n in s._sandbox.load_notes]

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self._write(final=True)
        if self.recording is not None:
            self.recording.write(self.config.getoption("--labcheck-record-answers"))


def _without_explanation(text: str) -> str:
    """A graded test's message without pytest's explanation of a failed assert ("assert False / + where False =
    close(...)"), which prints the compared values, the expected ones too: feedback says what to fix in the
    test's own words (max difference, where), never the reference's answers wholesale."""
    head, sep, _ = text.partition("\nassert ")
    return head if sep and head.startswith("AssertionError") else text


def _short_message(report: pytest.TestReport, limit: int = 3000) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, str):
        text = longrepr
    elif hasattr(longrepr, "reprcrash") and longrepr.reprcrash is not None:
        text = longrepr.reprcrash.message
    elif isinstance(longrepr, tuple) and len(longrepr) == 3:  # skip: (path, line, reason)
        text = str(longrepr[2])
    else:
        text = str(longrepr)
    return text[:limit]


@pytest.fixture(scope="module")
def draws(request: pytest.FixtureRequest):
    """This run's draws (labcheck.secret.Draws) under the module's exercise: for module-scoped fixtures that
    build graded inputs (data subsets, trained parameters); tests use `lab.seed` / `lab.rng`, the same draws."""
    exercise = exercise_of(request.node)
    if exercise is None:
        raise pytest.UsageError(f"{request.node.nodeid} uses `draws` without an exercise(id) marker")
    return request.config._labcheck.draws.scoped(exercise)


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> LabSession:
    """The exercise's LabSession; the test (or its module) needs an `exercise(id)` marker."""
    exercise = exercise_of(request.node)
    if exercise is None:
        raise pytest.UsageError(f"{request.node.nodeid} uses `lab` without an exercise(id) marker")
    session = request.config._labcheck.lab(exercise)
    session.current_item = request.node
    return session
