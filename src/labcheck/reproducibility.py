"""What labcheck promises when a recorded seed is run again, and the check of that promise (issue #24 item 4).

The promise, for the band metrics of a reference run (`band_metrics`; timings are never band metrics):

1. **Bit-identical on the same set-up.** The same seed, budget and data source, on a machine with the same
   `fingerprint` (CPU family and model, torch's CPU kernel level, the BLAS library, its version and the
   kernel it picked, torch, numpy and Python versions), with one torch thread and one BLAS thread per run
   (what labcheck.runner's workers and `labcheck bands` use), give the same numbers, bit for bit. Every
   reference seeds itself (labcheck.repro.seed_everything) and reads no other source of randomness.
2. **Elsewhere, within the band.** On another CPU, library version or thread count, float32 sums run in
   another order (another BLAS kernel, another split over threads) and training amplifies a rounding-level
   difference: a rerun of a recorded seed is then one more draw from the seed-to-seed distribution, and the
   promise is the band's: each banded metric inside its band (a prediction interval for a new seed). Measured
   between two machines of this project (both "AMD EPYC"; the committed sweeps of 2026-11-23 against seed 0
   re-run on 2026-12-06, quick budget): sgd's losses differ by up to 2.4e-6 relative and one seed of 10
   by one test image (0.001); gradnorms' values by up to 1e-8 relative at seed 0; batchnorm's by one test
   image after 5 epochs; width's single-example SGD diverges: seed 1 finds eta* 0.01 instead of 0.02, and
   every width's accuracy follows (test accuracy at width 8: 0.811 against 0.728).
3. **Knife edges are named.** An answer decided by a threshold on a run's outcome flips under a rounding
   change where the outcome lies near the threshold: width's eta* (a one-pass run "diverges" when its loss
   ends above the untrained one, about ln 10) is one: README gives its flip rate, measured by
   `labcheck reproduce width` runs' one-pass traces under the seed's autograd step and our fast step.

`rerun_problems` compares a rerun with the values recorded in a bands file: exact where the set-up is the
same, band membership elsewhere.
"""
from __future__ import annotations

import platform
from pathlib import Path


def _cpu() -> str:
    """'<model name>, family F model M' from /proc/cpuinfo (the model name alone, 'AMD EPYC', hides the
    generation, whose kernels round differently)."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:  # pragma: no cover - not Linux
        return platform.processor() or platform.machine()
    return f"{fields.get('model name', '?')}, family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"


def fingerprint() -> dict:
    """What decides float32 rounding on this machine: CPU, torch's kernel level, BLAS and versions."""
    import numpy
    import threadpoolctl
    import torch

    blas = [f"{p.get('internal_api')} {p.get('version')} {p.get('architecture', '')}".strip()
            for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
    return {"cpu": _cpu(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "blas": blas,
            "torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version()}


def same_setup(recorded: dict | None, now: dict | None = None) -> list[str]:
    """The fingerprint fields in which `recorded` (a sweep's provenance 'fingerprint') differs from `now`
    (default: this machine); every field when nothing was recorded."""
    now = now or fingerprint()
    if not recorded:
        return ["no fingerprint recorded"]
    return [f"{k}: recorded {recorded.get(k)!r}, here {now[k]!r}" for k in now if recorded.get(k) != now[k]]


def rerun_problems(content: dict, budget: str, seed: int, metrics: dict[str, float], source: str,
                   metric_sources: dict[str, str] | None = None, now: dict | None = None) -> tuple[bool, list[str]]:
    """(same set-up?, problems) of a rerun of `seed` at `budget` against a bands file's recorded values.

    Same set-up (fingerprint and one thread per run, as recorded): every recorded metric of that seed must
    come back bit-identical. Elsewhere: every banded metric inside its band (promise 2).
    """
    sweeps = content.get("sweeps", {}).get(budget, {})
    prov = sweeps.get(source, {})
    if seed not in prov.get("seeds", []):
        raise KeyError(f"seed {seed} is not among the recorded {budget} seeds on {source!r}")
    index = prov["seeds"].index(seed)
    same = not same_setup(prov.get("fingerprint"), now) and prov.get("torch_threads_per_run") == 1
    problems = []
    for name, per_source in content.get("bands", {}).items():
        if not name.startswith(f"{budget}."):
            continue
        metric = name[len(budget) + 1:]
        each = next((s for p, s in (metric_sources or {}).items() if metric.startswith(p)), source)
        entry = per_source.get(each)
        if entry is None or entry.get("sweep") != [budget, each] or len(entry["measured"]) != len(prov["seeds"]):
            continue  # not from this sweep, or some seeds lack it (then the values do not line up with seeds)
        if metric not in metrics:
            problems.append(f"{metric}: recorded, but the rerun does not report it")
        elif same and metrics[metric] != entry["measured"][index]:
            problems.append(f"{metric}: {metrics[metric]!r} here, {entry['measured'][index]!r} recorded for seed "
                            f"{seed} on the same set-up")
        elif not same and "lo" in entry and not entry["lo"] <= metrics[metric] <= entry["hi"]:
            problems.append(f"{metric}: {metrics[metric]:.6g} outside its band [{entry['lo']:.6g}, "
                            f"{entry['hi']:.6g}] (another set-up, so judged as a new seed)")
    return same, problems
