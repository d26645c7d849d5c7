"""One case's measurement and its figures: samples/s, the ratio to the seed-style loop, GFLOP/s and
% of sgemm peak, with PASS/MISS against the CPU targets, as a table row and as pytest-benchmark's
extra_info.

    samples/s   the core's rate, fastest round (labcheck.bench.harness)
    seed-style  the seed-style loop's rate, fastest round
    ratio       samples/s / seed-style samples/s
    GFLOP/s     matmul FLOPs per sample (workload.mlp_step_flops) x samples/s
    ceiling     (mini-batch MLPs) the ratio if everything but the step's matrix products took no time:
                those products alone, at the step's shapes (workload.step_matmuls), against the
                seed-style loop. A ratio target above it cannot be met with this machine's sgemm.
    %peak       GFLOP/s / sgemm peak (harness.sgemm_peak), measured before and after the cases; the
                higher of the two counts
The ratio and %peak are measured in the same run, so they compare across machines; samples/s do not.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch

from labcheck import native
from labcheck.bench.builders import CASES
from labcheck.bench.harness import time_rounds
from labcheck.bench.workload import Targets, Workload

ENFORCE_ENV = "LABCHECK_BENCH_ENFORCE"  # "1": benchmarks assert the targets (off by default)


def enforce_targets() -> bool:
    return os.environ.get(ENFORCE_ENV, "") not in ("", "0")


@dataclasses.dataclass
class Result:
    case: str
    exercise: str
    device: str
    threads: int
    batch_size: int
    source: str
    samples_per_s: float  # core, fastest round
    samples_per_s_median: float  # core, median round
    seed_samples_per_s: float  # seed-style loop, fastest round
    flops_per_sample: float
    peak_gflops: float
    peak_n: int
    matmul_samples_per_s: float | None = None  # the step's matrix products alone (Workload.matmuls)

    @property
    def ratio(self) -> float:
        return self.samples_per_s / self.seed_samples_per_s

    @property
    def ratio_ceiling(self) -> float | None:
        """The ratio a core would reach if everything but its matrix products took no time."""
        return None if self.matmul_samples_per_s is None else self.matmul_samples_per_s / self.seed_samples_per_s

    @property
    def gflops(self) -> float:
        return self.flops_per_sample * self.samples_per_s / 1e9

    @property
    def peak_fraction(self) -> float:
        return self.gflops / self.peak_gflops

    def verdicts(self) -> dict[str, str]:
        """'PASS', 'MISS' or '' (no target here) for the ratio and the peak fraction."""
        targets = CASES[self.case].targets if self.device == "cpu" else Targets()
        out = {}
        for key, target, value in (("ratio", targets.ratio, self.ratio),
                                   ("peak_fraction", targets.peak_fraction, self.peak_fraction)):
            out[key] = "" if target is None else ("PASS" if value >= target else "MISS")
        return out

    def misses(self) -> list[str]:
        targets = CASES[self.case].targets
        v = self.verdicts()
        msgs = []
        if v["ratio"] == "MISS":
            msg = f"{self.case}: {self.ratio:.1f}x the seed-style loop, target >= {targets.ratio:g}x"
            ceiling = self.ratio_ceiling
            if ceiling is not None and ceiling < targets.ratio:
                msg += (f" (out of reach here: the step's matrix products alone run at {ceiling:.1f}x, so no "
                        "implementation on this machine's sgemm gets there)")
            msgs.append(msg)
        if v["peak_fraction"] == "MISS":
            msgs.append(f"{self.case}: {self.peak_fraction:.0%} of sgemm peak ({self.gflops:.1f} of "
                        f"{self.peak_gflops:.1f} GFLOP/s), target >= {targets.peak_fraction:.0%}")
        return msgs

    def extra_info(self) -> dict:
        """Machine-independent figures for pytest-benchmark's extra_info (saved with every run)."""
        targets = CASES[self.case].targets
        return {
            "case": self.case, "exercise": self.exercise, "device": self.device, "torch_threads": self.threads,
            "batch_size": self.batch_size, "model_source": self.source,
            "samples_per_s": round(self.samples_per_s, 1),
            "samples_per_s_median": round(self.samples_per_s_median, 1),
            "seed_style_samples_per_s": round(self.seed_samples_per_s, 1),
            "ratio_to_seed_style": round(self.ratio, 2), "ratio_target": targets.ratio,
            "ratio_ceiling": None if self.ratio_ceiling is None else round(self.ratio_ceiling, 2),
            "gflops": round(self.gflops, 2), "sgemm_peak_gflops": round(self.peak_gflops, 2),
            "sgemm_peak_n": self.peak_n, "peak_fraction": round(self.peak_fraction, 4),
            "peak_fraction_target": targets.peak_fraction, "flops_per_sample": self.flops_per_sample,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "training_step": native.status(),
            "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            **{f"{k}_verdict": v for k, v in self.verdicts().items() if v},
        }


def measure(work: Workload, seconds: float, peak: tuple[float, int], min_rounds: int = 3) -> Result:
    """Time the seed-style loop, then the core, `seconds` each, and combine with `peak`."""
    seed_times = time_rounds(work.seed.run, work.device, seconds, min_rounds)
    core_times = time_rounds(work.core.run, work.device, seconds, min_rounds)
    matmul_fastest = None
    if work.matmuls is not None:
        matmul_fastest = min(time_rounds(work.matmuls.run, work.device, seconds / 2, min_rounds))
    return result_from(work, min(core_times), float(np.median(core_times)), min(seed_times), peak, matmul_fastest)


def result_from(work: Workload, core_fastest: float, core_median: float, seed_fastest: float,
                peak: tuple[float, int], matmul_fastest: float | None = None) -> Result:
    return Result(work.case.name, work.case.exercise, work.device.type, torch.get_num_threads(),
                  work.case.batch_size, work.source, work.core.samples / core_fastest,
                  work.core.samples / core_median, work.seed.samples / seed_fastest, work.flops_per_sample,
                  peak[0], peak[1],
                  None if matmul_fastest is None else work.matmuls.samples / matmul_fastest)


def _target_text(target: float | None, verdict: str, fmt: str) -> str:
    return "" if target is None else f">={fmt.format(target)} {verdict}"


def format_table(results: list[Result]) -> str:
    header = (f"{'case':18s} {'batch':>5s} {'samples/s':>10s} {'seed-style':>10s} {'ratio':>7s} {'target':<11s}"
              f" {'ceiling':>7s} {'GFLOP/s':>8s} {'%peak':>6s} {'target':<10s} model")
    lines = [header]
    for res in results:
        t = CASES[res.case].targets if res.device == "cpu" else Targets()
        v = res.verdicts()
        lines.append(
            f"{res.case:18s} {res.batch_size:5d} {res.samples_per_s:10,.0f} {res.seed_samples_per_s:10,.0f}"
            f" {res.ratio:6.1f}x {_target_text(t.ratio, v['ratio'], '{:g}x'):<11s}"
            f" {'' if res.ratio_ceiling is None else f'{res.ratio_ceiling:.1f}x':>7s}"
            f" {res.gflops:8.2f} {res.peak_fraction:6.1%} {_target_text(t.peak_fraction, v['peak_fraction'], '{:.0%}'):<10s}"
            f" {res.source}")
    return "\n".join(lines)

