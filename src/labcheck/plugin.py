"""labcheck's pytest plugin (entry point `pytest11: labcheck = labcheck.plugin`).

Options (group "labcheck"):
  --labcheck-submission PATH   grade this submission (.py, folder or .ipynb) instead of the reference
  --labcheck-exercise ID       run only this exercise's tests (required with --labcheck-submission)
  --labcheck-timeout S         wall-clock seconds per call into the submission
  --labcheck-memory-mb MB      memory limit of the submission's worker process
  --labcheck-results PATH      write a Gradescope results.json of the graded tests
  --labcheck-deny PATH         an extra path the submission may not read (repeatable)
Markers: gpu (needs CUDA, skipped cleanly without it), slow, graded(points=...), exercise(id).

Graded tests take the `lab` fixture: `lab.call(probe, ...)` runs a probe against the submission
in its sandboxed worker, `lab.expect(probe, ...)` runs the same probe against the reference in
this process; the test compares the two and so the grader computes every verdict.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from labcheck import paths
from labcheck.sandbox import Limits, Sandbox, SubmissionFailure

MARKERS = (
    "gpu: needs a CUDA device; skipped cleanly when torch.cuda.is_available() is False",
    "slow: a long reproduction or band check; opt in with `pytest -m slow`",
    "graded(points=1): a contract test that counts towards a submission's grade",
    "exercise(id): the exercise a test belongs to (width, sgd, batchnorm, hyperparams, gradnorms)",
)


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("labcheck", "labcheck: reference checks and grading")
    group.addoption("--labcheck-submission", metavar="PATH", default=None,
                    help="grade this submission instead of the reference. Default: %(default)r")
    group.addoption("--labcheck-exercise", metavar="ID", default=None, choices=paths.EXERCISES,
                    help="only run this exercise's tests. Default: %(default)r")
    group.addoption("--labcheck-timeout", metavar="S", type=_positive_float, default=Limits.timeout,
                    help="seconds per call into a submission. Default: %(default)r")
    group.addoption("--labcheck-memory-mb", metavar="MB", type=int, default=Limits.memory_mb,
                    help="memory limit of a submission's worker in MB. Default: %(default)r")
    group.addoption("--labcheck-results", metavar="PATH", default=None,
                    help="write a Gradescope results.json of the graded tests. Default: %(default)r")
    group.addoption("--labcheck-deny", metavar="PATH", action="append", default=[],
                    help="extra path a submission may not read (repeatable). Default: %(default)r")


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    if config.getoption("--labcheck-submission") and not config.getoption("--labcheck-exercise"):
        raise pytest.UsageError("--labcheck-submission needs --labcheck-exercise")
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
                raise ValueError(f"graded mark can't have {sorted(unknown)} keyword arguments ({item.nodeid})")
        marker = item.get_closest_marker("exercise")
        if marker and (not marker.args or marker.args[0] not in paths.EXERCISES):
            raise ValueError(f"exercise mark needs one of {paths.EXERCISES} ({item.nodeid})")
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


class LabSession:
    """What a graded test sees as `lab`: the submission's sandbox and the in-process reference."""

    def __init__(self, state: "LabcheckState", exercise: str):
        self.state = state
        self.exercise = exercise
        submission = state.config.getoption("--labcheck-submission")
        self.submission = Path(submission) if submission else paths.reference_file(exercise)
        self.is_reference = submission is None
        self._sandbox: Sandbox | None = None
        self._reference = None
        self._expected: dict[str, object] = {}
        self.current_item: pytest.Item | None = None

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            cfg = self.state.config
            limits = Limits(timeout=cfg.getoption("--labcheck-timeout"), memory_mb=cfg.getoption("--labcheck-memory-mb"))
            deny = list(cfg.getoption("--labcheck-deny"))
            results = cfg.getoption("--labcheck-results")
            if results:
                deny.append(str(Path(results).resolve().parent))
            self._sandbox = Sandbox(self.submission, self.exercise, limits, deny=deny)
        return self._sandbox

    def call(self, probe: str, **kwargs):
        """The probe's result on the submission (raises SubmissionFailure: the test fails with it)."""
        return self.sandbox.call(probe, **kwargs)

    def reference_module(self):
        if self._reference is None:
            path = paths.reference_file(self.exercise)
            name = f"labcheck_reference_{self.exercise}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            self._reference = module
        return self._reference

    def expect(self, probe: str, **kwargs):
        """The probe's result on the reference, computed in this (trusted) process and cached."""
        from labcheck import repro, wire

        key = json.dumps([probe, wire.encode(kwargs).hex()])
        if key not in self._expected:
            probes = importlib.import_module(f"labcheck.probes.{self.exercise}")
            with repro.freeze_rng_state():
                value = probes.PROBES[probe](self.reference_module(), **kwargs)
            # Round-trip through the wire so expected and actual values have the same types.
            self._expected[key] = wire.decode(wire.encode(value))
        return self._expected[key]

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
        self.results: list[dict] = []

    def lab(self, exercise: str) -> LabSession:
        if exercise not in self.sessions:
            self.sessions[exercise] = LabSession(self, exercise)
        return self.sessions[exercise]

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        report = outcome.get_result()
        if call.excinfo is not None and isinstance(call.excinfo.value, SubmissionFailure):
            report.longrepr = f"[{call.excinfo.value.kind}] {call.excinfo.value}"
        if not item.get_closest_marker("graded"):
            return
        if report.when == "call" or (report.when == "setup" and not report.passed):
            self._record(item, report)

    def _record(self, item: pytest.Item, report: pytest.TestReport) -> None:
        max_score = points_of(item)
        if report.passed:
            score, status, output = max_score, "passed", ""
        else:
            fraction, note = item.stash.get(PARTIAL_KEY, (0.0, ""))
            score = round(max_score * fraction, 4)
            status = "skipped" if report.skipped else "failed"
            output = _short_message(report)
            if note:
                output = f"{note}\n{output}"
        self.results.append({
            "name": item.nodeid.split("::")[-1],
            "nodeid": item.nodeid,
            "exercise": exercise_of(item),
            "score": score,
            "max_score": max_score,
            "status": status,
            "output": output,
            "visibility": "visible",
        })

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        path = self.config.getoption("--labcheck-results")
        if path:
            from labcheck.report import gradescope_results

            Path(path).write_text(json.dumps(gradescope_results(self.results), indent=2) + "\n")


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


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> LabSession:
    """The exercise's LabSession; the test (or its module) needs an `exercise(id)` marker."""
    exercise = exercise_of(request.node)
    if exercise is None:
        raise pytest.UsageError(f"{request.node.nodeid} uses `lab` without an exercise(id) marker")
    session = request.config._labcheck.lab(exercise)
    session.current_item = request.node
    return session
