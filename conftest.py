"""Repository-wide pytest setup: hypothesis profiles and the band-check fixture (the labcheck plugin loads
by entry point)."""
import os

import pytest
from hypothesis import HealthCheck, settings

# Profiles chosen by HYPOTHESIS_PROFILE; CI gets "ci" automatically.
settings.register_profile("dev", max_examples=25, deadline=None)
# ci: a fixed, derandomized budget of 100 examples per property; the four properties whose counterexamples
# are rare get 600 (tests/strategies.py: rare_counterexamples, with the measurement behind it).
settings.register_profile(
    "ci", max_examples=100, deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# thorough: explore afresh each run (no example database), as a property must hold beyond CI's examples
settings.register_profile("thorough", max_examples=500, deadline=None, database=None)
settings.load_profile(os.getenv("HYPOTHESIS_PROFILE", "ci" if os.getenv("CI") else "dev"))

# Graded inputs are drawn from a secret per grading run (labcheck.secret); labcheck's own tests fix it, so that
# every run of the suite grades the same inputs (and reuses the reference's cached answers). A test that needs
# other inputs passes --labcheck-secret or sets the variable itself (tests/test_replay.py).
os.environ.setdefault("LABCHECK_SECRET", "labcheck's own tests")


def pytest_configure(config):
    """Under pytest-xdist each worker gets its share of the cores for torch, and so do the processes it starts
    ($OMP_NUM_THREADS, unless set). With torch's default of a thread per core, `-n 2` ran four busy threads on
    the 2-core machine: the default suite took 5 m 00 s to 5 m 32 s, and 4 m 24 s with one thread each."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1 and os.environ.get("PYTEST_XDIST_WORKER"):
        share = str(max(1, (os.cpu_count() or 1) // workers))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, share)
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def _skip_without_bands(exercise: str, budget: str, source: str) -> None:
    from labcheck import bands

    if not bands.has_bands(exercise, budget, source):
        pytest.skip(bands.missing_band_message(exercise, budget, source))


def _band_test(exercise: str, budget: str, result: dict) -> None:
    """The budget's band test on a run's result: every band its band_tests entry selects (false-failure
    probability <= bands.FAMILY_FALSE_FAILURE as a whole), each metric looked up on its own data source."""
    from labcheck import bands
    from labcheck.exercises import get

    _skip_without_bands(exercise, budget, result["data_source"])
    metrics = get(exercise).load_reference().band_metrics(result)
    bands.check_all(exercise, budget, metrics, result["data_source"], result.get("metric_sources"))


@pytest.fixture
def within_bands():
    """within_bands(exercise, budget, result): skips (naming the command that measures them) when `exercise`
    has no `budget` bands for the result's data source on this machine, else runs the budget's band test."""
    return _band_test


@pytest.fixture
def check_bands():
    """check_bands(exercise, budget, source, run) -> run's result: skips (naming the command that measures
    them) when `exercise` has no `budget` bands for `source` on this machine, else calls run(flags) with the
    budget's flags and the held-out seed and runs the budget's band test on its result."""
    from labcheck import bands, study
    from labcheck.exercises import get

    def check(exercise: str, budget: str, source: str, run):
        _skip_without_bands(exercise, budget, source)
        result = run([*study.budget_flags(budget), "--seed", str(bands.HELD_OUT_SEED)])
        _band_test(exercise, budget, result)
        return result

    return check


@pytest.fixture(scope="module")
def worker_zygote():
    """A worker zygote (labcheck.sandbox.WorkerZygote) for the module's sandboxes, as `labcheck grade` lends one."""
    from labcheck.sandbox import Limits, WorkerZygote

    zygote = WorkerZygote.start(Limits(), ("_selftest",))
    if zygote is None:
        pytest.skip("no bubblewrap here: workers are never forked from a zygote")
    yield zygote
    zygote.close()
