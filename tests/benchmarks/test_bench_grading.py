"""Grading throughput (opt in: `pytest -m benchmark`): submissions per minute of a class.

A class is N copies of one exercise's bundled examples (grading.grading_class). One benchmark round
grades the whole class with forked graders and the disk cache of expected answers (the way
`labcheck grade` grades now); before it, one copy of each distinct example is graded the old way
(`python -m pytest` per submission, no cache) in the same run, and extra_info holds both rates,
their ratio with PASS/MISS against grading.GRADING_TARGET, and whether every verdict is the same.
Grading a class takes seconds to minutes, so a round is the class itself (`rounds=1`, whatever
--benchmark-min-rounds says): the small class runs in CI's quick benchmark pass, the class of 20 is
`slow`. Same verdicts are always asserted; the speed target only with LABCHECK_BENCH_ENFORCE=1.
"""
import os

import pytest

from labcheck.bench import grading, results

SMALL_CLASS = 3  # the first three sgd examples: CI's quick pass
PARAMS = [pytest.param(SMALL_CLASS, id="class-3"),
          pytest.param(grading.DEFAULT_GRADING_CLASS, id="class-20", marks=pytest.mark.slow)]


@pytest.mark.benchmark(group="grading")
@pytest.mark.parametrize("class_size", PARAMS)
def test_grading_throughput(benchmark, tmp_path, class_size):
    subs, origin = grading.grading_class("sgd", class_size, tmp_path / "class")
    baseline_size = min(class_size, len(set(origin.values())))
    baseline_seconds, baseline = grading.grade_class(subs[:baseline_size], tmp_path / "baseline", "fresh", "none")
    rounds = iter(range(10**6))

    def grade_pool():
        i = next(rounds)  # a fresh report folder and an empty expected-answer cache every round
        return grading.grade_class(subs, tmp_path / f"pool-{i}", "fork", str(tmp_path / f"expected-{i}"))

    pool_seconds, pooled = benchmark.pedantic(grade_pool, rounds=1, iterations=1, warmup_rounds=0)
    mismatches = grading.grading_mismatches(baseline, pooled, origin)
    result = grading.GradingResult("sgd", class_size, baseline_size, grading.GRADING_JOBS, baseline_seconds,
                                 pool_seconds, mismatches,
                                 round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None)
    benchmark.extra_info.update(result.extra_info())
    assert not mismatches, result.misses()
    if results.enforce_targets():
        assert not result.misses(), "; ".join(result.misses())
