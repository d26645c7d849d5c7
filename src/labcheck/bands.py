"""Metric bands and numeric tolerances: the one table every assert reads from (style rule 5).

Each exercise keeps `reference/bands/<exercise>.json`:

    {"exercise": "width",
     "provenance": {"seeds": [0, 1, 2], "runs": 3, "device": "cpu", "versions": {...}, "date": ..., "command": ...},
     "tolerances": {"mlp": {"rtol": 1e-5, "atol": 1e-6, "why": "same float32 ops, different order"}},
     "bands": {"quick.train_acc": {"fashion-mnist": {"lo": 0.80, "hi": 0.90, "measured": [...]}}}}

A band may carry its own "provenance" (e.g. numbers quoted from a seed notebook), which then
replaces the file-level one. Keys are global: BANDS["width.quick.train_acc"]["fashion-mnist"],
TOLERANCES["width.mlp"]. Tests never write literal thresholds: they call `check_band` and
`tolerance`.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
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


def _load_files(directory: Path) -> dict[str, dict]:
    files = {}
    if directory.is_dir():
        for path in sorted(directory.glob("*.json")):
            with open(path) as f:
                files[path.stem] = json.load(f)
    return files


def load_tables(directory: Path | None = None) -> tuple[dict[str, dict[str, Band]], dict[str, dict]]:
    """Read every bands file into (BANDS, TOLERANCES) keyed by 'exercise.name'."""
    directory = directory or paths.bands_dir()
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
                bands.setdefault(key, {})[source] = Band(
                    key, source, float(entry["lo"]), float(entry["hi"]), entry.get("provenance", file_prov)
                )
    return bands, tolerances


BANDS, TOLERANCES = load_tables()


def tolerance(key: str) -> dict:
    """{'rtol': ..., 'atol': ...} for torch.testing.assert_close, from the exercise's bands file."""
    try:
        tol = TOLERANCES[key]
    except KeyError:
        raise KeyError(f"no tolerance {key!r} in reference/bands/*.json (known: {sorted(TOLERANCES)})") from None
    return {"rtol": float(tol["rtol"]), "atol": float(tol["atol"])}


def get_band(key: str, source: str) -> Band:
    per_source = BANDS.get(key)
    if not per_source:
        raise KeyError(f"no band {key!r} in reference/bands/*.json")
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
# Writing bands


def band_from_measurements(values: Iterable[float], rel_margin: float = 0.0, abs_margin: float = 0.0,
                           sd_margin: float = 3.0, lo_clip: float | None = None,
                           hi_clip: float | None = None) -> tuple[float, float]:
    """[min, max] of the runs widened by max(sd_margin * sd, rel_margin * |mean|, abs_margin)."""
    values = [float(v) for v in values]
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    margin = max(sd_margin * sd, rel_margin * abs(mean), abs_margin)
    lo, hi = min(values) - margin, max(values) + margin
    if lo_clip is not None:
        lo = max(lo, lo_clip)
    if hi_clip is not None:
        hi = min(hi, hi_clip)
    return lo, hi


def provenance(seeds: list[int], device: str, command: str, **extra) -> dict:
    import numpy
    import torch

    return {
        "seeds": list(seeds),
        "runs": len(seeds),
        "device": device,
        "versions": {"torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version()},
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "date": _dt.date.today().isoformat(),
        "command": command,
        **extra,
    }


def write_bands(exercise: str, source: str, measured: dict[str, list[float]], prov: dict,
                margins: dict[str, dict] | None = None, directory: Path | None = None) -> Path:
    """Merge bands for `source` computed from `measured` runs into reference/bands/<exercise>.json."""
    directory = directory or paths.bands_dir()
    path = directory / f"{exercise}.json"
    content = json.loads(path.read_text()) if path.exists() else {"exercise": exercise}
    content.setdefault("bands", {})
    for name, values in measured.items():
        lo, hi = band_from_measurements(values, **(margins or {}).get(name, {}))
        content["bands"].setdefault(name, {})[source] = {
            "lo": lo, "hi": hi, "measured": [float(v) for v in values], "provenance": prov,
        }
    path.write_text(json.dumps(content, indent=2, sort_keys=False) + "\n")
    return path
