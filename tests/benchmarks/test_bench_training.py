"""Throughput benchmarks of every exercise's training core (opt in: `pytest -m benchmark`).

One benchmark per case of labcheck.bench (an exercise model at the seed's batch size) and device.
pytest-benchmark times rounds of forward + backward + update steps on resident batches; every round
ends in core.synchronize(device) and the pedantic `setup` synchronizes before the clock starts, so
on CUDA a clock read always sees finished work. The rounds fill --benchmark-max-time (never fewer
than --benchmark-min-rounds). CUDA cases carry the `gpu` marker and skip cleanly without CUDA.

extra_info holds the machine-independent figures, measured in the same run: the ratio to the
seed-style loop (`ratio_to_seed_style`) and the fraction of this machine's sgemm peak
(`peak_fraction`), with PASS/MISS against the targets of issue #9. The targets are asserted only
with LABCHECK_BENCH_ENFORCE=1: a loaded shared runner must not turn a benchmark into a flaky test.
Torch threads: LABCHECK_BENCH_THREADS (default 1), recorded as `torch_threads`.
"""
import pytest

from labcheck import core
from labcheck.bench import builders, harness, results

PARAMS = [
    pytest.param(case, device, id=f"{case}-{device}", marks=(pytest.mark.gpu,) if device == "cuda" else ())
    for case in builders.CASE_NAMES
    for device in ("cpu", "cuda")
    if device in builders.CASES[case].devices
]


@pytest.fixture(scope="session")
def torch_threads():
    return harness.set_threads(harness.threads_from_env())


@pytest.fixture(scope="session")
def sgemm_peak(request, torch_threads):
    """peak(device, again=False) -> (GFLOP/s, n): the highest sgemm peak measured on `device` in this session;
    `again` measures once more. As `labcheck bench` takes the higher of before and after the cases: one
    measurement ranged 74-95 GFLOP/s on one machine in a day, and a low one flatters %peak."""
    seconds = float(request.config.getoption("benchmark_max_time"))
    cache = {}

    def peak(device, again=False):
        if device.type not in cache or again:
            measured = harness.sgemm_peak(device, seconds=seconds)
            cache[device.type] = max(cache.get(device.type, measured), measured)
        return cache[device.type]

    return peak


@pytest.mark.benchmark(group="training-core")
@pytest.mark.parametrize(("case", "device"), PARAMS)
def test_training_core(benchmark, request, case, device, torch_threads, sgemm_peak):
    max_time = float(request.config.getoption("benchmark_max_time"))
    min_rounds = int(request.config.getoption("benchmark_min_rounds"))
    work = builders.build(case, device)
    peak = sgemm_peak(work.device)
    seed_fastest = min(harness.time_rounds(work.seed.run, work.device, max_time, min_rounds))
    first_round = harness.time_rounds(work.core.run, work.device, seconds=0.0, min_rounds=1)[0]  # after a warm-up

    benchmark.pedantic(harness.timed(work.core.run, work.device), setup=lambda: core.synchronize(work.device),
                       rounds=harness.plan_rounds(first_round, max_time, min_rounds), warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: the core ran once, nothing was timed
        return
    stats = benchmark.stats.stats
    peak = sgemm_peak(work.device, again=True)  # before and after this case: the higher counts
    result = results.result_from(work, stats.min, stats.median, seed_fastest, peak)
    benchmark.extra_info.update(result.extra_info())
    if results.enforce_targets():
        assert not result.misses(), "; ".join(result.misses())
