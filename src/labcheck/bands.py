"""Metric bands and numeric tolerances: the one table every assert reads from (style rule 5).

Each exercise keeps `exercises/<exercise>/bands.json`:

    {"exercise": "width",
     "tolerances": {"mlp": {"rtol": 1e-5, "atol": 1e-6, "why": "same float32 ops, different order"}},
     "limits": {"*acc*": {"lo": 0.0, "hi": 1.0, "floor": 0.002, "why": "..."}},      # kept by hand
     "band_tests": {"quick": {"checks": ["*"], "why": "..."}},                        # kept by hand
     "measured_only": {"full.passes_to_interpolation.h32": {"why": "...", "caught_by": [...]}},  # by hand
     "broken": {"*acc*": {"value": 0.1, "why": "an untrained network: chance"}},     # kept by hand
     "rule": "band = mean +- max(t * sd * sqrt(1 + 1/n), floor) ...",              # RULE, below
     "sweeps": {"quick": {"fashion-mnist": {"seeds": [...], "runs": 10, "device": ..., "versions": ...,
                                             "machine": ..., "date": ..., "command": ..., "seconds": [...]}}},
     "bands": {"quick.test_acc.h8": {"fashion-mnist": {"lo": ..., "hi": ..., "n": 10, "mean": ..., "std": ...,
                                                       "min": ..., "max": ..., "measured": [...],
                                                       "false_failure": ..., "family": 14,
                                                       "sweep": ["quick", "fashion-mnist"], ...}}}}

`tolerances`, `limits`, `band_tests`, `measured_only` and `broken` are written by hand, each with its reason;
`rule`, `sweeps` and `bands` are written only by `labcheck bands ID ...` (labcheck.study -> `write_sweep`),
which runs the reference on seeds 0..N-1 and derives every band by the one RULE (`derive`, also run alone by
`labcheck bands ID --rederive`). A band for data source X exists only if that sweep ran on X; a run that
measures two sources (gradnorms: MNIST and the generated sensing problem) stores each metric under its own.

A budget's *band test* checks the metrics its `band_tests` entry selects (default: all), less those in
`measured_only`: those form its family of m bands, and each band is derived at the per-metric false-failure
probability FAMILY_FALSE_FAILURE / m (Bonferroni), so a correct reference fails the test as a whole with
probability <= FAMILY_FALSE_FAILURE. Every other metric is stored as its measurements only (no lo/hi),
with the reason: the seed claims are judged on them. `broken` states, per band, the value a broken run gives
(an untrained network, zero gradients, a budget run to its end) or why none applies and which band catches a
broken run instead; tests/test_bands.py fails a band that accepts its broken value.

Keys are global: BANDS["width.quick.test_acc.h8"]["fashion-mnist"], TOLERANCES["width.mlp"]. Tests
never write literal thresholds: they call `check_all`/`check_band` and `tolerance`, run HELD_OUT_SEED (never
measured), and skip with `missing_band_message` when this machine's data source has no band.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import fnmatch
import json
import math
import os
import platform
import statistics
from pathlib import Path
from typing import Iterable

from labcheck import paths, reproducibility


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
                if "lo" not in entry:  # measured only: no band (see `measured_only`, `band_tests`)
                    continue
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


def close(got, want, key: str, float64: bool = False) -> bool:
    """Whether `got` matches `want` within the tolerance `key` ('exercise.name' of the bands files), compared
    by torch.testing.assert_close (as float64 with `float64`, else in their own dtypes, not checked). Never
    raises: a value of another shape or type is simply not close. The contract tests' one comparison helper."""
    import torch

    try:
        a, b = torch.as_tensor(got), torch.as_tensor(want)
        if float64:
            a, b = a.to(torch.float64), b.to(torch.float64)
        torch.testing.assert_close(a, b, **tolerance(key), check_dtype=False)
    except (AssertionError, RuntimeError, TypeError, ValueError):
        return False
    return True


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

FAMILY_FALSE_FAILURE = 0.01  # probability that a correct reference fails ONE band test (all its m bands)
MIN_RUNS = {"quick": 10, "full": 5}  # seeds per band of each budget (issue #13); any other budget: 3
HELD_OUT_SEED = 1000  # band tests run this seed; sweeps never measure it (seeds 0..N-1, N < 1000)
RULE = (
    "band = mean +- max(t(1 - a/2; n - 1) * sd * sqrt(1 + 1/n), floor), clipped to the metric's limits: a "
    "two-sided prediction interval for ONE new seed's value at false-failure probability a per metric "
    "(normal approximation of the seed-to-seed distribution; sd is the sample sd of the n seeds), with "
    f"a = {FAMILY_FALSE_FAILURE:g} / m for the m bands one band test checks (Bonferroni: the test as a whole "
    f"fails a correct reference with probability <= {FAMILY_FALSE_FAILURE:g}). 'floor' and the limits come "
    "from the file's 'limits' table (the metric's resolution, where n seeds cannot show a spread, e.g. every "
    "seed at train accuracy 1.0)."
)


def _first_match(name: str, table: dict) -> tuple[str, dict] | None:
    """(pattern, spec) of the first fnmatch pattern of `table` matching `name`, else None."""
    return next(((pattern, spec) for pattern, spec in table.items() if fnmatch.fnmatchcase(name, pattern)), None)


def limits_for(metric: str, limits: dict[str, dict]) -> dict:
    """{'lo', 'hi', 'floor'} of the first fnmatch pattern in `limits` matching `metric` (else no limits)."""
    match = _first_match(metric, limits)
    if match is None:
        return {"lo": None, "hi": None, "floor": 0.0}
    spec = match[1]
    return {"lo": spec.get("lo"), "hi": spec.get("hi"), "floor": float(spec.get("floor", 0.0))}


def not_banded_because(content: dict, budget: str, metric: str) -> str | None:
    """Why `metric` of `budget` is stored as measurements only (None: its budget's band test checks it)."""
    excluded = _first_match(f"{budget}.{metric}", content.get("measured_only", {}))
    if excluded is not None:
        return excluded[1]["why"]
    family = content.get("band_tests", {}).get(budget, {"checks": ["*"]})
    if _first_match(metric, dict.fromkeys(family["checks"])) is None:
        return family.get("why", f"the {budget} band test does not check it")
    return None


def prediction_band(values: Iterable[float], lo: float | None = None, hi: float | None = None,
                    floor: float = 0.0, false_failure: float = FAMILY_FALSE_FAILURE) -> dict:
    """The band of RULE for `values` (n >= 2) at per-metric false-failure probability `false_failure`
    (default: a band test of one metric), with the statistics it came from."""
    from scipy import stats

    summary = measurement_summary(values)
    n, mean, sd = summary["n"], summary["mean"], summary["std"]
    if n < 2:
        raise ValueError(f"a band needs at least 2 measurements, got {n}")
    t = float(stats.t.ppf(1 - false_failure / 2, n - 1))
    half_width = max(t * sd * math.sqrt(1 + 1 / n), floor)
    band_lo, band_hi = mean - half_width, mean + half_width
    if lo is not None:
        band_lo = max(band_lo, lo)
    if hi is not None:
        band_hi = min(band_hi, hi)
    return {"lo": band_lo, "hi": band_hi, **summary, "t": t, "half_width": half_width, "floor": floor,
            "limits": [lo, hi], "false_failure": false_failure}


def measurement_summary(values: Iterable[float]) -> dict:
    """n, mean, sd (0 for one value), min, max and the values themselves."""
    values = [float(v) for v in values]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"n": len(values), "mean": statistics.fmean(values) if values else math.nan, "std": sd,
            "min": min(values, default=math.nan), "max": max(values, default=math.nan), "measured": values}


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
        "fingerprint": reproducibility.fingerprint(),  # what a bit-identical rerun needs (labcheck.reproducibility)
        **extra,
    }


def derive(content: dict) -> dict:
    """Re-derive every swept entry of a bands file's content by RULE from its stored measurements, in place:
    per budget, the m metrics its band test checks get bands at a = FAMILY_FALSE_FAILURE / m, the others are
    stored as measurements with the reason. Entries with their own 'provenance' are left as they are."""
    limits = content.get("limits", {})
    content["rule"] = RULE
    swept = [(name, source, entry) for name, per_source in content.get("bands", {}).items()
             for source, entry in per_source.items() if "sweep" in entry]
    family: dict[str, set[str]] = {}
    for name, _, _ in swept:
        budget, metric = name.split(".", 1)
        if not_banded_because(content, budget, metric) is None:
            family.setdefault(budget, set()).add(metric)
    for name, source, entry in swept:
        budget, metric = name.split(".", 1)
        why = not_banded_because(content, budget, metric)
        kept = {"sweep": entry["sweep"]}
        if why is None:
            m = len(family[budget])
            derived = {**prediction_band(entry["measured"], false_failure=FAMILY_FALSE_FAILURE / m,
                                         **limits_for(metric, limits)), "family": m}
        else:
            derived = {**measurement_summary(entry["measured"]), "not_banded": why}
        entry.clear()
        entry.update({**derived, **kept})
    return content


def write_sweep(exercise: str, budget: str, source: str, measured: dict[str, list[float]], prov: dict,
                directory: Path | None = None, metric_sources: dict[str, str] | None = None) -> Path:
    """Store the bands of one sweep (budget, data source) in exercises/<exercise>/bands.json.

    `metric_sources` maps a metric-name prefix to the data source it was measured on where that is not
    `source` (gradnorms' "sensing." metrics: the generated problem): those are stored under their own source,
    with the sweep's provenance (data_source, part_of_sweep_on). Every band of `budget` for these sources is
    replaced (metrics the sweep no longer has are dropped), then the whole file is re-derived by RULE (the
    family of a budget's band test may have changed); other budgets' and sources' measurements, the
    tolerances, limits and the hand-written tables stay as they are.
    """
    if directory is not None:
        path = Path(directory) / f"{exercise}.json"
    else:
        from labcheck.exercises import get

        path = get(exercise).bands_path
    content = json.loads(path.read_text()) if path.exists() else {"exercise": exercise}
    by_source: dict[str, dict[str, list[float]]] = {}
    for metric, values in measured.items():
        metric_source = next((s for prefix, s in (metric_sources or {}).items() if metric.startswith(prefix)), source)
        by_source.setdefault(metric_source, {})[metric] = values
    all_bands = content.setdefault("bands", {})
    for each, values_by_metric in by_source.items():
        sweep_prov = prov if each == source else {**prov, "data_source": each, "part_of_sweep_on": source}
        content.setdefault("sweeps", {}).setdefault(budget, {})[each] = sweep_prov
        for name in [k for k in all_bands if k.startswith(f"{budget}.")]:
            all_bands[name].pop(each, None)
            if not all_bands[name]:
                del all_bands[name]
        for metric, values in values_by_metric.items():
            all_bands.setdefault(f"{budget}.{metric}", {})[each] = {"measured": [float(v) for v in values],
                                                                     "sweep": [budget, each]}
    path.write_text(json.dumps(derive(content), indent=1) + "\n")
    return path


def rederive(exercise: str, directory: Path | None = None) -> Path:
    """`labcheck bands ID --rederive`: re-derive the stored bands file by RULE from its measurements (after a
    change of the rule or of the hand-written tables), recording the command in each sweep's provenance."""
    if directory is not None:
        path = Path(directory) / f"{exercise}.json"
    else:
        from labcheck.exercises import get

        path = get(exercise).bands_path
    content = derive(json.loads(path.read_text()))
    for per_source in content.get("sweeps", {}).values():
        for prov in per_source.values():
            prov["derived_by"] = f"labcheck bands {exercise} --rederive"
    path.write_text(json.dumps(content, indent=1) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# Bands that can fail: the value a broken run gives (the file's hand-written `broken` table)


def broken_run(content: dict, name: str, source: str) -> dict:
    """What a broken run gives for band `name` ("budget.metric") of `source`, from the file's `broken` table:
    {"values": [...], "why"} (stated values, and fields of the sweep's config such as the budget's passes), or
    {"caught_by": [metrics of the same budget], "why"} where no broken value applies (a search answer, the
    untrained network by design, a setting that does not train in the seed either), or {} when not stated."""
    match = _first_match(name, content.get("broken", {}))
    if match is None:
        return {}
    spec = match[1]
    if "none" in spec:
        return {"caught_by": list(spec.get("caught_by", [])), "why": spec["none"]}
    values = [float(spec["value"])] if "value" in spec else []
    if "config" in spec:
        budget = name.split(".", 1)[0]
        config = content.get("sweeps", {}).get(budget, {}).get(source, {}).get("config", {})
        values += [float(config[spec["config"]])] if spec["config"] in config else [math.nan]
    return {"values": values, "why": spec.get("why", "")}


def cannot_fail(content: dict) -> list[str]:
    """Every band of a bands file's content that accepts the value a broken run gives, or states none and
    names no band that catches a broken run instead (measured-only entries excluded from their band test by
    `measured_only` must name one too). Empty when every band can fail."""
    problems = []

    def catches(budget: str, metric: str, source: str) -> bool:
        entry = content.get("bands", {}).get(f"{budget}.{metric}", {})
        band = entry.get(source) or next(iter(entry.values()), {})
        broken = broken_run(content, f"{budget}.{metric}", source)
        return "lo" in band and bool(broken.get("values")) and not any(
            band["lo"] <= v <= band["hi"] or math.isnan(v) for v in broken["values"])

    for name, per_source in content.get("bands", {}).items():
        budget, metric = name.split(".", 1)
        for source, entry in per_source.items():
            where = f"{name} [{source}]"
            if "lo" not in entry:
                excluded = _first_match(name, content.get("measured_only", {}))
                if excluded and not any(catches(budget, m, source) for m in excluded[1].get("caught_by", [])):
                    problems.append(f"{where}: measured only, but no band catches a broken run "
                                    f"({excluded[1].get('caught_by')})")
                continue
            broken = broken_run(content, name, source)
            if not broken:
                problems.append(f"{where}: no broken-run value stated (the file's 'broken' table)")
            elif "caught_by" in broken:
                if not any(catches(budget, m, source) for m in broken["caught_by"]):
                    problems.append(f"{where}: states no broken value and no band of {broken['caught_by']} "
                                    "catches a broken run")
            else:
                for value in broken["values"]:
                    if math.isnan(value) or entry["lo"] <= value <= entry["hi"]:
                        problems.append(f"{where}: band [{entry['lo']:.4g}, {entry['hi']:.4g}] accepts a broken "
                                        f"run's {value:.4g} ({broken['why']})")
    return problems


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
              metric_sources: dict[str, str] | None = None) -> list[Band]:
    """Check every band of `exercise` at `budget` against a run's band_metrics (the budget's band test).

    `source` is the run's data source; `metric_sources` (the run's own "metric_sources") maps a metric-name
    prefix to the source of the metrics it measured elsewhere. A banded metric the run does not report fails
    too (e.g. no smallest interpolating width where every measured seed had one). Raises one BandError listing
    every failure; returns the bands checked.
    """
    prefix = f"{exercise}.{budget}."

    def source_of(metric: str) -> str:
        return next((s for p, s in (metric_sources or {}).items() if metric.startswith(p)), source)

    keys = sorted(k for k, per_source in BANDS.items()
                  if k.startswith(prefix) and source_of(k[len(prefix):]) in per_source)
    if not keys:
        raise KeyError(missing_band_message(exercise, budget, source))
    failures, checked = [], []
    for key in keys:
        metric = key[len(prefix):]
        band = BANDS[key][source_of(metric)]
        if metric not in metrics:
            if band.n is None or band.n < band.provenance.get("runs", 0):
                continue  # some measured seeds did not report it either
            failures.append(f"{key} is missing from the run, but every measured seed reported it "
                            f"(band [{band.lo:.6g}, {band.hi:.6g}] from {band.describe_provenance()})")
            continue
        try:
            checked.append(check_band(key, metrics[metric], band.source))
        except BandError as e:
            failures.append(str(e))
    if failures:
        raise BandError(f"{len(failures)} of {len(keys)} {budget} bands of {exercise} failed (each band at "
                        f"false-failure probability {FAMILY_FALSE_FAILURE:g}/{len(keys)}):\n" + "\n".join(failures))
    return checked
