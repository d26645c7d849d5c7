"""`labcheck bench`: measure the cases, print the table, and save, compare or draw runs.

    labcheck bench [--exercise ID] [--device cpu|cuda] [--seconds S] [--threads N] [--repeats R]
    labcheck bench --save NAME [--compare OLD]   measure, store as NAME; compare with the saved run OLD
    labcheck bench --compare OLD --to NAME       compare two saved runs, measure nothing
    labcheck bench --history [--out DIR]         one PNG per case of every saved run, measure nothing

Each repeat measures every case once (so the repeats are spread over the whole run's time, and its
load); the table shows each case's median-ratio repeat. Saving and comparing are labcheck.bench.history.
"""
from __future__ import annotations

import dataclasses
import os

import torch

from labcheck import core, exercises, native
from labcheck.bench import builders, grading, history
from labcheck.bench.harness import clock_for, clock_name, set_threads, sgemm_peak, threads_from_env
from labcheck.bench.results import Result, enforce_targets, format_table, measure

SAVED_REPEATS = 3  # repeats of a run that is saved or compared: its noise is measured from them


@dataclasses.dataclass(frozen=True)
class Options:
    """What one `labcheck bench` does; the CLI's flags (labcheck.cli) map one to one."""

    exercise: str | None = None  # only this exercise's cases (None: all)
    device: str = "cpu"  # cpu or cuda
    seconds: float = 2.0  # minimum seconds per timed loop; its fastest round counts
    threads: int | None = None  # torch and BLAS threads (None: $LABCHECK_BENCH_THREADS or 1)
    grading_class: int | None = None  # students in the grading row, 0 skips it (None: its env or default)
    grading_python: str | None = None  # the grading-memory row's interpreter (None: $LABCHECK_BENCH_GRADING_PYTHON
    #                                    or this one): the platform's environment, e.g. a CPU build of torch
    grading_submission: str | None = None  # what the grading-memory row grades (None: examples/correct.py)
    repeats: int | None = None  # measurements of every case (None: SAVED_REPEATS when saving or comparing, else 1)
    save: str | None = None  # store this run under this name
    compare: str | None = None  # compare with this saved run
    to: str | None = None  # with compare: compare with this saved run instead of measuring one
    history: bool = False  # draw every saved run, one PNG per case; measure nothing
    store: str | None = None  # folder of saved runs (None: history.bench_store(), in the cache)
    out: str | None = None  # folder of --history's PNGs (None: STORE/history)

    @classmethod
    def from_args(cls, args) -> "Options":
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})

    @property
    def repeat_count(self) -> int:
        return self.repeats or (SAVED_REPEATS if self.save or self.compare else 1)


def measure_repeats(names: list[str], device: torch.device, seconds: float, repeats: int) -> list[list[Result]]:
    """Every case of `names` measured `repeats` times, repeat by repeat. Each repeat's %peak uses the higher
    sgemm peak of just before and just after it: one measurement ranged from 74 to 95 GFLOP/s on one machine
    in one day, and a low one flatters %peak."""
    works = [builders.build(name, device) for name in names]
    peak_seconds = min(seconds, 1.0)
    before = sgemm_peak(device, seconds=peak_seconds)
    print(f"sgemm peak before the cases {before[0]:.1f} GFLOP/s ({before[1]}x{before[1]} float32)", flush=True)
    by_repeat = []
    for _ in range(repeats):
        results = [measure(work, seconds, before) for work in works]
        after = sgemm_peak(device, seconds=peak_seconds)
        print(f"sgemm peak after {'the cases' if repeats == 1 else f'repeat {len(by_repeat) + 1}'} "
              f"{after[0]:.1f} GFLOP/s; %peak uses the higher, {max(before[0], after[0]):.1f}", flush=True)
        if after[0] > before[0]:
            results = [dataclasses.replace(r, peak_gflops=after[0], peak_n=after[1]) for r in results]
        by_repeat.append(results)
        before = after
    return by_repeat


def median_repeats(by_repeat: list[list[Result]]) -> list[Result]:
    """Per case, the repeat whose ratio is the median (the lower middle one for an even count)."""
    per_case = zip(*by_repeat)
    return [sorted(results, key=lambda r: r.ratio)[(len(results) - 1) // 2] for results in per_case]


def _compare(old: history.SavedRun, new: history.SavedRun) -> int:
    """Print the compare of two runs; 1 when a case regressed, 2 when they cannot be compared."""
    why = history.not_comparable(old, new)
    if why:
        print(f"labcheck bench: not comparable: {why}")
        return 2
    rows = history.compare(old, new)
    print(history.format_comparison(old, new, rows))
    return 1 if any(row.verdict == "REGRESSION" for row in rows) else 0


def main(args) -> int:
    """`labcheck bench`. Exit status: 0; 1 when --compare finds a REGRESSION, or a target is missed with
    LABCHECK_BENCH_ENFORCE=1; 2 when the device is missing, a saved run is unknown or runs do not compare."""
    opts = Options.from_args(args)
    try:
        if opts.history:
            runs = history.load_all(opts.store)
            written = history.draw_history(runs, opts.out or history.bench_store(opts.store) / "history")
            print(f"{len(runs)} saved runs in {history.bench_store(opts.store)}; "
                  + (f"drew {len(written)} cases: {', '.join(str(p) for p in written)}" if written else "nothing to draw"))
            return 0
        old = history.load(opts.compare, opts.store) if opts.compare else None
        if opts.to:
            if old is None:
                print("labcheck bench: --to NAME needs --compare OLD")
                return 2
            return _compare(old, history.load(opts.to, opts.store))
        if opts.save:
            history.check_name(opts.save)
    except (FileNotFoundError, ValueError) as e:
        print(f"labcheck bench: {e}")
        return 2
    return _measure(opts, old)


def _measure(opts: Options, old: history.SavedRun | None) -> int:
    threads = set_threads(opts.threads or threads_from_env())
    try:
        device = core.select_device(opts.device)
    except RuntimeError as e:
        print(f"labcheck bench: {e}")
        return 2
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    repeats = opts.repeat_count
    print(f"labcheck bench: device {device.type}"
          f"{f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''}, {threads} torch thread(s), "
          f"fastest round of >= {opts.seconds:g} s per loop on the {clock_name(clock_for(device))} clock, "
          f"{repeats} repeat(s), load average {load:.2f}", flush=True)
    # The hand-written step is compiled where it can be (labcheck.native) and pure Python otherwise: say which.
    print(f"training step of the ReLU MLPs: {native.status()}", flush=True)
    names = builders.cases_for(opts.exercise, device)
    by_repeat = measure_repeats(names, device, float(opts.seconds), repeats)
    results = median_repeats(by_repeat)
    print(format_table(results) + (f"\n(each row: the median ratio of {repeats} repeats)" if repeats > 1 else ""))
    skipped = sorted(set(builders.cases_for(opts.exercise)) - set(names))
    if skipped:
        print(f"not run on {device.type}: {', '.join(skipped)} (CPU only)")
    print("targets are checked on CPU: >=15x the seed-style loop and >=70% of sgemm peak for the Lab-3 MLP "
          "(sgd-*), >=5x for batchnorm, >=8x for hyperparams, and >=5x the seed's autograd loop "
          "for the per-sample SGD of width")
    misses = [m for res in results for m in res.misses()]
    size = grading.grading_class_size(opts)
    exercise = opts.exercise or "sgd"
    graded = memory_row = None
    if size > 0 and exercises.REGISTRY[exercise].examples_dir.is_dir():
        print(f"grading a class of {size} copies of the bundled {exercise} examples both ways "
              f"(set {grading.GRADING_CLASS_ENV}=0 to skip both grading rows) ...", flush=True)
        graded = grading.measure_grading(exercise, size)
        print(grading.format_grading(graded))
        misses += graded.misses()
        if grading.grading_memory_enabled():
            print(f"grading one {exercise} submission through the Gradescope package, its memory sampled "
                  f"(set {grading.MEMORY_ENV}=0 to skip) ...", flush=True)
            memory_row = grading.measure_package_memory(exercise, opts.grading_python,
                                                        submission=opts.grading_submission)
            print(grading.format_memory(memory_row))
            misses += memory_row.misses()
    for miss in misses:
        print(f"MISS {miss}")
    status = 1 if misses and enforce_targets() else 0
    if opts.save or old is not None:
        run = history.make_run(opts.save or "this-run", by_repeat, device.type, threads,
                               clock_name(clock_for(device)), float(opts.seconds), native.status(),
                               {**graded.extra_info(), **({"memory": memory_row.extra_info()} if memory_row else {})}
                               if graded else None)
        if opts.save:
            print(f"saved as {opts.save!r}: {history.save(run, opts.store)}")
        if old is not None:
            status = max(status, _compare(old, run))
    return status
