"""Fast checks of labcheck.bench's logic (default run); the timings themselves are in tests/benchmarks/.

FLOP counts against hand counts, the seed-style and resident loops computing the same updates,
the clock discipline (a synchronize before every clock read), round planning, PASS/MISS verdicts,
`labcheck bench`'s table, and one pytester run of the benchmark module (marker, gpu skip, extra_info).
"""
import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from labcheck import paths
from labcheck.bench import builders, command, fallbacks, grading, harness, memory, results, workload
from labcheck.exercises import get
from bench_fixtures import restore_threads, small_split  # noqa: F401  (fixtures)

MINIBATCH_CASES = [name for name, c in builders.CASES.items() if c.dataset is not None and c.exercise != "width"]
# The fast path (float32 numpy, BLAS sger) and the seed's autograd loop round differently.
PER_SAMPLE_UPDATES = {"rtol": 1e-4, "atol": 1e-7}
# A (m, d*d) @ (d*d,) product in torch against the seed's per-measurement numpy sums.
SENSING_UPDATES = {"rtol": 1e-4, "atol": 1e-6}
# Read at collection, before pytester points HOME at its temporary directory: an inner pytest run with
# an empty cache would rebuild the compiled step (~30 s) and decode the data set again.
USER_CACHE = paths.cache_root()


def test_mlp_step_flops_is_the_hand_count_for_the_lab3_mlp():
    # forward 2*128*(784*100 + 100*100 + 100*10) = 22,886,400; dW the same;
    # dX for layers 2 and 3 only: 2*128*(100*100 + 100*10) = 2,816,000.
    layers = [(784, 100), (100, 100), (100, 10)]
    assert workload.mlp_step_flops(layers, 128) == 22_886_400 * 2 + 2_816_000
    assert workload.mlp_step_flops(layers, 128, input_requires_grad=True) == 3 * 22_886_400


def test_linear_layers_reads_the_models_in_order():
    assert workload.linear_layers(fallbacks.FALLBACKS["hyperparams"].build_net(128)) == [(784, 128), (128, 64), (64, 10)]
    model = fallbacks.FALLBACKS["gradnorms"].MNISTClassifierMLP(784, [128] * 3, 10)
    assert workload.linear_layers(model) == [(784, 128), (128, 128), (128, 128), (128, 10)]


def test_sensing_step_flops_is_the_hand_count():
    # U U^T 2*10*10*2 = 400; residuals 2*7*100 = 1400; sum r_i A_i 1400; (S + S^T) U 400.
    assert workload.sensing_step_flops(m=7, d=10, r=2) == 3600


@pytest.mark.parametrize("case", MINIBATCH_CASES)
def test_seed_style_and_resident_loops_compute_the_same_updates(case, small_split):
    seed_work = builders.build(case, shuffle=False, steps=2, split=small_split)
    core_work = builders.build(case, shuffle=False, steps=2, split=small_split)
    before = {k: v.clone() for k, v in core_work.core.state().items()}
    seed_work.seed.run()
    core_work.core.run()
    after = core_work.core.state()
    assert any(not torch.equal(before[k], after[k]) for k in before), "two steps changed nothing"
    torch.testing.assert_close(after, seed_work.seed.state(), msg=lambda m: f"{case}: {m}")


def test_width_fast_path_and_seed_loop_compute_the_same_updates(small_split):
    fast = builders.build("width", steps=64, split=small_split)
    seed = builders.build("width", steps=64, split=small_split)
    np.random.seed(3)
    fast.core.run()
    np.random.seed(3)
    seed.seed.run()
    torch.testing.assert_close(fast.core.state(), seed.seed.state(), **PER_SAMPLE_UPDATES)
    assert fast.core.state()["b1"].abs().max() > 0, "a pass changed nothing"


def test_sensing_step_and_seed_loop_compute_the_same_update():
    sizes = dict(m=40, d=8, r=2, seed_m=40, lr=0.05)
    core_work, seed_work = builders.build("gradnorms-sensing", **sizes), builders.build("gradnorms-sensing", **sizes)
    before = core_work.core.state()["U"].clone()
    core_work.core.run()
    seed_work.seed.run()
    assert not torch.equal(before, core_work.core.state()["U"])
    torch.testing.assert_close(core_work.core.state()["U"], seed_work.seed.state()["U"], **SENSING_UPDATES)


def test_every_clock_read_follows_a_synchronize(monkeypatch):
    events = []
    monkeypatch.setattr(harness.core, "synchronize", lambda device: events.append("sync"))
    real_clock = harness.time.perf_counter

    def clock():
        events.append("clock")
        return real_clock()

    times = harness.time_rounds(lambda: events.append("run"), "cpu", seconds=0.0, min_rounds=3, warmup=1, clock=clock)
    assert len(times) == 3
    assert events == ["run"] + ["sync", "clock", "run", "sync", "clock"] * 3
    target = harness.timed(lambda: events.append("work"), "cpu")
    events.clear()
    target()
    assert events == ["work", "sync"]


def test_clock_is_thread_cpu_time_for_one_cpu_thread_else_wall(monkeypatch, restore_threads):
    monkeypatch.delenv(harness.CLOCK_ENV, raising=False)
    torch.set_num_threads(1)
    assert harness.clock_for("cpu") is harness.time.thread_time
    assert harness.clock_for("cuda") is harness.time.perf_counter
    torch.set_num_threads(2)
    assert harness.clock_for("cpu") is harness.time.perf_counter
    monkeypatch.setenv(harness.CLOCK_ENV, "cpu")
    assert harness.clock_for("cpu") is harness.time.thread_time and harness.clock_name(harness.clock_for("cpu")) == "cpu"
    monkeypatch.setenv(harness.CLOCK_ENV, "sundial")
    with pytest.raises(ValueError, match="wall"):
        harness.clock_for("cpu")


def test_plan_rounds_fills_max_time_with_at_least_min_rounds():
    assert harness.plan_rounds(0.01, max_time=0.2, min_rounds=3) == 20
    assert harness.plan_rounds(0.5, max_time=0.2, min_rounds=3) == 3
    assert harness.plan_rounds(1e-9, max_time=10.0, min_rounds=3, max_rounds=50) == 50


def _result(case="sgd-custom", device="cpu", core=100_000.0, seed=9_000.0, flops=400_000.0, peak=(50.0, 2048)):
    return results.Result(case, builders.CASES[case].exercise, device, 1, builders.CASES[case].batch_size, "test",
                        core, core, seed, flops, *peak)


def test_verdicts_compare_with_the_cpu_targets():
    ok = _result(core=150_000.0, seed=9_000.0)  # 16.7x, 60 GFLOP/s = 120% of 50
    assert ok.verdicts() == {"ratio": "PASS", "peak_fraction": "PASS"} and ok.misses() == []
    slow = _result(core=50_000.0, seed=9_000.0)  # 5.6x, 40%
    assert slow.verdicts() == {"ratio": "MISS", "peak_fraction": "MISS"}
    assert "5.6x the seed-style loop, target >= 15x" in slow.misses()[0]
    assert _result(device="cuda", core=1.0).verdicts() == {"ratio": "", "peak_fraction": ""}
    assert _result(case="batchnorm").verdicts() == {"ratio": "PASS", "peak_fraction": ""}
    assert _result(case="gradnorms").verdicts() == {"ratio": "", "peak_fraction": ""}
    info = slow.extra_info()
    assert info["ratio_to_seed_style"] == pytest.approx(5.56, abs=0.01) and info["ratio_verdict"] == "MISS"
    assert info["peak_fraction"] == pytest.approx(0.4) and info["torch_threads"] == 1


def test_a_ratio_target_above_the_matmul_ceiling_is_reported_out_of_reach():
    capped = dataclasses.replace(_result(case="batchnorm", core=15_000.0, seed=5_000.0), matmul_samples_per_s=20_000.0)
    assert capped.ratio_ceiling == pytest.approx(4.0) and capped.verdicts()["ratio"] == "MISS"
    assert "out of reach here: the step's matrix products alone run at 4.0x" in capped.misses()[0]
    reachable = dataclasses.replace(capped, matmul_samples_per_s=40_000.0)  # 8x: the miss is the core's
    assert "out of reach" not in reachable.misses()[0]
    assert _result(case="batchnorm").ratio_ceiling is None


def test_step_matmuls_do_the_flops_mlp_step_flops_counts():
    layers, batch = [(784, 512), (512, 512), (512, 10)], 8
    loop = workload.step_matmuls(layers, batch, torch.device("cpu"), steps=1)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True) as prof:
        loop.run()
    counted = sum(e.flops for e in prof.key_averages() if e.key == "aten::mm")
    assert counted == workload.mlp_step_flops(layers, batch) and loop.samples == batch


def test_contract_falls_back_to_the_bench_copies_and_says_why():
    ns, source = workload.contract("sgd", "no_such_name")
    assert ns is fallbacks.FALLBACKS["sgd"] and "lacks no_such_name" in source
    ns, source = workload.contract("sgd", "my_nn", use_reference=False)
    assert ns is fallbacks.FALLBACKS["sgd"] and "bench copy" in source


def test_bench_main_prints_a_table_with_targets(monkeypatch, capsys, small_split, restore_threads):
    monkeypatch.setenv(grading.GRADING_CLASS_ENV, "0")  # the grading row has its own test
    monkeypatch.setattr(harness, "PEAK_SIZES", (256,))
    monkeypatch.setattr(builders, "train_split", lambda case, seed: small_split)
    args = argparse.Namespace(exercise="sgd", device="cpu", seconds=0.01, threads=1)
    assert command.main(args) == 0
    out = capsys.readouterr().out
    assert "sgemm peak" in out and "1 torch thread" in out
    rows = [line for line in out.splitlines() if line.startswith("sgd-")]
    assert [r.split()[0] for r in rows] == ["sgd-custom", "sgd-torch"]
    assert all((">=15x PASS" in r or ">=15x MISS" in r) and ">=70%" in r for r in rows), out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is absent")
def test_bench_main_without_cuda_says_so(capsys, restore_threads):
    args = argparse.Namespace(exercise="width", device="cuda", seconds=0.01, threads=1)
    assert command.main(args) == 2
    assert "cuda" in capsys.readouterr().out


def test_benchmark_module_runs_under_pytest_benchmark(pytester, monkeypatch):
    """`-m benchmark` selects it under --strict-markers, CUDA cases skip cleanly, extra_info is saved."""
    # Run from an xdist worker (`scripts/run test`), the inner pytest would inherit PYTEST_XDIST_WORKER and
    # pytest-benchmark would then disable every benchmark: the inner run is a plain, serial session.
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(USER_CACHE.parent))
    source = paths.tests_dir() / "benchmarks" / "test_bench_training.py"
    shutil.copy(source, pytester.path / source.name)
    out = Path(pytester.path) / "bench.json"
    result = pytester.runpytest_subprocess(
        "--strict-markers", "-W", "error", "-m", "benchmark", "-k", "hyperparams",
        "--benchmark-max-time=0.01", "--benchmark-min-rounds=1", f"--benchmark-json={out}", "-p", "no:randomly")
    cuda = torch.cuda.is_available()
    result.assert_outcomes(passed=2 if cuda else 1, skipped=0 if cuda else 1)
    (info, *_) = [b["extra_info"] for b in json.loads(out.read_text())["benchmarks"] if b["extra_info"]["device"] == "cpu"]
    assert info["case"] == "hyperparams" and info["torch_threads"] == 1, info
    assert info["ratio_to_seed_style"] > 0 and info["peak_fraction"] > 0 and info["ratio_target"] == 8.0


def _graded(statuses: dict[str, str]) -> dict:
    return {"tests": [{"name": n, "status": s, "score": 1.0 if s == "passed" else 0.0} for n, s in statuses.items()]}


def test_grading_class_copies_the_examples_round_robin(tmp_path):
    subs, origin = grading.grading_class("sgd", 5, tmp_path / "class")
    examples = sorted(p.stem for p in get("sgd").examples_dir.glob("*.py") if not p.name.startswith("_"))
    assert [s.name for s in subs] == sorted(origin) and len(subs) == 5
    assert [origin[s.name] for s in subs] == [examples[i % len(examples)] for i in range(5)]
    for sub in subs:  # each student is a byte copy of its example, graded as its own submission
        assert sub.path.read_bytes() == (get("sgd").examples_dir / f"{origin[sub.name]}.py").read_bytes()


def test_grading_mismatches_compare_each_copy_with_its_examples_baseline():
    origin = {"s0_correct": "correct", "s1_buggy": "buggy", "s2_correct": "correct"}
    baseline = {"s0_correct": _graded({"a": "passed", "b": "passed"}), "s1_buggy": _graded({"a": "failed", "b": "passed"})}
    pooled = {"s0_correct": _graded({"a": "passed", "b": "passed"}), "s1_buggy": _graded({"a": "failed", "b": "passed"}),
              "s2_correct": _graded({"a": "passed", "b": "failed"})}
    assert grading.grading_mismatches(baseline, pooled, origin) == ["s2_correct"]
    pooled["s2_correct"] = _graded({"a": "passed", "b": "passed"})
    assert grading.grading_mismatches(baseline, pooled, origin) == []


def test_grading_result_rates_and_verdict():
    res = grading.GradingResult("sgd", 20, 9, 2, baseline_seconds=45.0, pool_seconds=18.0, mismatches=[])
    assert res.baseline_per_min == pytest.approx(12.0) and res.pool_per_min == pytest.approx(66.7, abs=0.1)
    assert res.ratio == pytest.approx(5.56, abs=0.01) and res.verdict == "PASS" and res.misses() == []
    assert ">=5x PASS" in grading.format_grading(res) and "same verdicts" in grading.format_grading(res)
    slow = dataclasses.replace(res, pool_seconds=60.0)
    assert slow.verdict == "MISS" and "target >= 5x" in slow.misses()[0]
    wrong = dataclasses.replace(res, mismatches=["student003_correct"])
    assert wrong.verdict == "MISS" and "student003_correct" in wrong.misses()[0]
    assert wrong.extra_info()["same_verdicts"] is False


def test_bench_main_prints_the_grading_row(monkeypatch, capsys, small_split, restore_threads):
    monkeypatch.setattr(harness, "PEAK_SIZES", (256,))
    monkeypatch.setattr(builders, "train_split", lambda case, seed: small_split)
    calls = []

    def fake_measure(exercise, size):
        calls.append((exercise, size))
        return grading.GradingResult(exercise, size, 3, 2, 30.0, 20.0, [])

    def fake_memory(exercise, python, submission=None):
        calls.append(("memory", exercise))
        peak = memory.Peak(total_mib=600.0, anon_mib=490.0, file_mib=110.0, processes=[{}] * 4, seconds=30.0)
        return grading.MemoryResult(exercise, "python", "2.14.1+cpu", "cpu", peak, 26.0, 26.0, 0)

    monkeypatch.setattr(grading, "measure_grading", fake_measure)
    monkeypatch.setattr(grading, "measure_package_memory", fake_memory)
    args = argparse.Namespace(exercise="sgd", device="cpu", seconds=0.01, threads=1, grading_class=4)
    assert command.main(args) == 0
    assert calls == [("sgd", 4), ("memory", "sgd")]
    out = capsys.readouterr().out
    assert "grading sgd" in out and "grading memory sgd: peak 600 MiB" in out and "target <=768 MB PASS" in out
    monkeypatch.setenv(grading.MEMORY_ENV, "0")
    command.main(args)
    assert calls == [("sgd", 4), ("memory", "sgd"), ("sgd", 4)], "LABCHECK_BENCH_GRADING_MEMORY=0 skips its row"
    calls.pop()
    monkeypatch.setenv(grading.GRADING_CLASS_ENV, "0")
    args = argparse.Namespace(exercise="sgd", device="cpu", seconds=0.01, threads=1)
    command.main(args)
    assert calls == [("sgd", 4), ("memory", "sgd")], "LABCHECK_BENCH_GRADING_CLASS=0 skips the grading rows"
