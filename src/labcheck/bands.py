"""Metric bands and numeric tolerances: the one table every assert reads from (style rule 5).

Each exercise keeps `exercises/<exercise>/bands.json`:

    {"exercise": "width",
     "tolerances": {"mlp": {"rtol": 1e-5, "atol": 1e-6, "why": "same float32 ops, different order"}},
     "limits": {"*acc*": {"lo": 0.0, "hi": 1.0, "floor": 0.002, "why": "..."}},      # kept by hand
     "rule": "band = mean +- max(t * sd * sqrt(1 + 1/n), floor) ...",              # RULE, below
     "sweeps": {"quick": {"fashion-mnist": {"seeds": [...], "runs": 10, "device": ..., "versions": ...,
                                             "machine": ..., "date": ..., "command": ..., "seconds": [...]}}},
     "bands": {"quick.test_acc.h8": {"fashion-mnist": {"lo": ..., "hi": ..., "n": 10, "mean": ..., "std": ...,
                                                       "min": ..., "max": ..., "measured": [...],
                                                       "sweep": ["quick", "fashion-mnist"], ...}}}}

`tolerances` and `limits` are written by hand, each with its reason; `rule`, `sweeps` and `bands` are
written only by `labcheck bands ID --seeds N [--quick]` (labcheck.study -> `write_sweep`), which runs
the reference on seeds 0..N-1 and derives every band by the one RULE. A band for data source X exists
only if that sweep ran on X. A band entry may instead carry its own "provenance" dict (measured by
another command, e.g. the grading budgets of a contract), which then names its own command.
Keys are global: BANDS["width.quick.test_acc.h8"]["fashion-mnist"], TOLERANCES["width.mlp"]. Tests
never write literal thresholds: they call `check_band` and `tolerance`, run HELD_OUT_SEED (never
measured), and skip with `missing_band_message` when this machine's data source has no band.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import statistics
from pathlib import Path
from typing import Iterable

from labcheck import paths


class BandError(AssertionError):
    """A measured value fell outside its stored band."""


@dataclasses.dataclass(frozen=True)
class Band:
    key: str
    source: str
    lo: float
    hi: float
    provenance: dict
    n: int | None = None  # runs that reported the metric (None: not recorded)

    def contains(self, value: float) -> bool:
        return self.lo <= value <= self.hi

    def describe_provenance(self) -> str:
        p = self.provenance
        parts = []
        if "seeds" in p:
            parts.append(f"seeds {p['seeds']}")
        if "runs" in p:
            parts.append(f"{p['runs']} runs")
        if "device" in p:
            parts.append(f"device {p['device']}")
        versions = p.get("versions") or {}
        if "torch" in versions:
            parts.append(f"torch {versions['torch']}")
        if "date" in p:
            parts.append(str(p["date"]))
        if "origin" in p:
            parts.append(str(p["origin"]))
        return ", ".join(parts) or "no provenance recorded"


def band_files(directory: Path | None = None) -> dict[str, Path]:
    """exercise -> its bands file: each exercise folder's bands.json, or `directory`/<exercise>.json where a
    folder of band files is given (--bands-dir, tests)."""
    if directory is not None:
        return {path.stem: path for path in sorted(Path(directory).glob("*.json"))}
    from labcheck.exercises import REGISTRY

    return {ex.id: ex.bands_path for ex in REGISTRY.values() if ex.bands_path.is_file()}


def _load_files(directory: Path | None) -> dict[str, dict]:
    files = {}
    for exercise, path in band_files(directory).items():
        with open(path) as f:
            files[exercise] = json.load(f)
    return files


def load_tables(directory: Path | None = None) -> tuple[dict[str, dict[str, Band]], dict[str, dict]]:
    """Read every bands file into (BANDS, TOLERANCES) keyed by 'exercise.name'."""
    bands: dict[str, dict[str, Band]] = {}
    tolerances: dict[str, dict] = {}
    for stem, content in _load_files(directory).items():
        exercise = content.get("exercise", stem)
        file_prov = content.get("provenance", {})
        for name, tol in content.get("tolerances", {}).items():
            tolerances[f"{exercise}.{name}"] = tol
        for name, per_source in content.get("bands", {}).items():
            key = f"{exercise}.{name}"
            for source, entry in per_source.items():
                prov = entry.get("provenance")
                if prov is None and "sweep" in entry:  # written by write_sweep: the sweep's provenance
                    budget, sweep_source = entry["sweep"]
                    prov = content.get("sweeps", {}).get(budget, {}).get(sweep_source)
                bands.setdefault(key, {})[source] = Band(
                    key, source, float(entry["lo"]), float(entry["hi"]), prov if prov is not None else file_prov,
                    entry.get("n"))
    return bands, tolerances


BANDS, TOLERANCES = load_tables()


def tolerance(key: str) -> dict:
    """{'rtol': ..., 'atol': ...} for torch.testing.assert_close, from the exercise's bands file."""
    try:
        tol = TOLERANCES[key]
    except KeyError:
        raise KeyError(f"no tolerance {key!r} in exercises/*/bands.json (known: {sorted(TOLERANCES)})") from None
    return {"rtol": float(tol["rtol"]), "atol": float(tol["atol"])}


def get_band(key: str, source: str) -> Band:
    per_source = BANDS.get(key)
    if not per_source:
        raise KeyError(f"no band {key!r} in exercises/*/bands.json")
    if source not in per_source:
        raise KeyError(f"band {key!r} has no entry for data source {source!r} (has {sorted(per_source)})")
    return per_source[source]


def check_band(key: str, value: float, source: str) -> Band:
    """Raise BandError with value, band and provenance when `value` is outside the stored band."""
    band = get_band(key, source)
    if not band.contains(value):
        raise BandError(
            f"{key} = {value:.6g} is outside its band [{band.lo:.6g}, {band.hi:.6g}] "
            f"for data source {source!r} (band from {band.describe_provenance()})"
        )
    return band


# ---------------------------------------------------------------------------------------------
# Writing bands: the one rule (used by `labcheck bands`, src/labcheck/study.py)

FALSE_FAILURE = 1e-3  # probability that ONE new seed's value of ONE metric falls outside its band
MIN_RUNS = {"quick": 10, "full": 5}  # seeds per band of each budget (issue #13); any other budget: 3
HELD_OUT_SEED = 1000  # band tests run this seed; sweeps never measure it (seeds 0..N-1, N < 1000)
RULE = (
    "band = mean +- max(t(1 - a/2; n - 1) * sd * sqrt(1 + 1/n), floor), clipped to the metric's limits: a "
    f"two-sided prediction interval for ONE new seed's value at false-failure probability a = {FALSE_FAILURE:g} "
    "per metric (normal approximation of the seed-to-seed distribution; sd is the sample sd of the n seeds). "
    "'floor' and the limits come from the file's 'limits' table (the metric's resolution, where n seeds "
    "cannot show a spread, e.g. every seed at train accuracy 1.0)."
)


def limits_for(metric: str, limits: dict[str, dict]) -> dict:
    """{'lo', 'hi', 'floor'} of the first fnmatch pattern in `limits` matching `metric` (else no limits)."""
    import fnmatch

    for pattern, spec in limits.items():
        if fnmatch.fnmatchcase(metric, pattern):
            return {"lo": spec.get("lo"), "hi": spec.get("hi"), "floor": float(spec.get("floor", 0.0))}
    return {"lo": None, "hi": None, "floor": 0.0}


def prediction_band(values: Iterable[float], lo: float | None = None, hi: float | None = None,
                    floor: float = 0.0, false_failure: float = FALSE_FAILURE) -> dict:
    """The band of RULE for `values` (n >= 2), with the statistics it came from."""
    from scipy import stats

    values = [float(v) for v in values]
    n = len(values)
    if n < 2:
        raise ValueError(f"a band needs at least 2 measurements, got {n}")
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    t = float(stats.t.ppf(1 - false_failure / 2, n - 1))
    half_width = max(t * sd * math.sqrt(1 + 1 / n), floor)
    band_lo, band_hi = mean - half_width, mean + half_width
    if lo is not None:
        band_lo = max(band_lo, lo)
    if hi is not None:
        band_hi = min(band_hi, hi)
    return {"lo": band_lo, "hi": band_hi, "n": n, "mean": mean, "std": sd, "min": min(values),
            "max": max(values), "t": t, "half_width": half_width, "floor": floor,
            "limits": [lo, hi], "measured": values}


def provenance(seeds: list[int], device: str, command: str, **extra) -> dict:
    """Seeds, runs, device, versions, machine, date and command of a measurement (plus `extra`)."""
    import numpy
    import torch

    return {
        "seeds": list(seeds),
        "runs": len(seeds),
        "device": device,
        "versions": {"torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version()},
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.system()} {platform.release()}",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        **extra,
    }


def write_sweep(exercise: str, budget: str, source: str, measured: dict[str, list[float]], prov: dict,
                directory: Path | None = None) -> Path:
    """Store the bands of one sweep (budget, data source) in the exercise's bands.json.

    Every band of `budget` for `source` is replaced (metrics the sweep no longer has are dropped);
    bands of other budgets or sources, the tolerances and the limits stay as they are.
    """
    if directory is not None:
        path = Path(directory) / f"{exercise}.json"
    else:
        from labcheck.exercises import get

        path = get(exercise).bands_path
    content = json.loads(path.read_text()) if path.exists() else {"exercise": exercise}
    limits = content.setdefault("limits", {})
    content["rule"] = RULE
    content.setdefault("sweeps", {}).setdefault(budget, {})[source] = prov
    all_bands = content.setdefault("bands", {})
    for name in [k for k in all_bands if k.startswith(f"{budget}.")]:
        all_bands[name].pop(source, None)
        if not all_bands[name]:
            del all_bands[name]
    for metric, values in measured.items():
        entry = prediction_band(values, **limits_for(metric, limits))
        entry["sweep"] = [budget, source]
        all_bands.setdefault(f"{budget}.{metric}", {})[source] = entry
    path.write_text(json.dumps(content, indent=1) + "\n")
    return path


def missing_band_message(exercise: str, budget: str, source: str) -> str:
    """Why a band test skips, and the exact command that measures the missing band."""
    n = MIN_RUNS.get(budget, 3)
    flag = " --quick" if budget == "quick" else ""
    return (f"no {budget} band of {exercise!r} measured on data source {source!r}; measure it on this machine with: "
            f"labcheck bands {exercise} --seeds {n}{flag}")


def has_bands(exercise: str, budget: str, source: str) -> bool:
    """True when some band of `exercise` at `budget` was measured on `source`."""
    prefix = f"{exercise}.{budget}."
    return any(key.startswith(prefix) and source in per_source for key, per_source in BANDS.items())


def check_all(exercise: str, budget: str, metrics: dict[str, float], source: str,
              only: Iterable[str] | None = None) -> list[Band]:
    """Check every band of `exercise` at `budget` for `source` (or those of the metrics `only`) against a run's
    band_metrics.

    A banded metric the run does not report fails too (e.g. no smallest interpolating width where every
    measured seed had one). Raises one BandError listing every failure; returns the bands checked.
    """
    prefix = f"{exercise}.{budget}."
    keys = sorted(k for k, per_source in BANDS.items() if k.startswith(prefix) and source in per_source
                  and (only is None or k[len(prefix):] in set(only)))
    if not keys:
        raise KeyError(missing_band_message(exercise, budget, source))
    failures, checked = [], []
    for key in keys:
        metric = key[len(prefix):]
        band = BANDS[key][source]
        if metric not in metrics:
            if band.n is None or band.n < band.provenance.get("runs", 0):
                continue  # some measured seeds did not report it either
            failures.append(f"{key} is missing from the run, but every measured seed reported it "
                            f"(band [{band.lo:.6g}, {band.hi:.6g}] from {band.describe_provenance()})")
            continue
        try:
            checked.append(check_band(key, metrics[metric], source))
        except BandError as e:
            failures.append(str(e))
    if failures:
        raise BandError(f"{len(failures)} of {len(keys)} {budget} bands of {exercise} failed:\n" + "\n".join(failures))
    return checked
