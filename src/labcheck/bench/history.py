"""Saved `labcheck bench` runs, their comparison and their history: speed regressions an instructor tracks
with one command (`--save NAME`, `--compare NAME`, `--history`).

A saved run is one JSON file, STORE/NAME.json (STORE: `--store DIR`, else bench_store(): the cache's
`bench/` folder), holding for every case the figures of each of the run's repeats (samples/s, the
seed-style loop's samples/s, ratio, GFLOP/s, sgemm peak, %peak) and the run's device, threads, clock,
seconds per loop, machine, versions and date.

Comparing two runs uses only the machine-independent figures, the ratio to the seed-style loop and the
fraction of sgemm peak (samples/s move with the machine and its load; both of these are measured in the
same run as what they divide by). Per case and figure, on the log scale:
    test       two-sample t-test with pooled variance of log(figure), the old run's repeats against the new's
    n          n_old + n_new repeats, n_old + n_new - 2 degrees of freedom
    statistic  t = d / (s * sqrt(1/n_old + 1/n_new)), d the difference of the mean logs, s the pooled sd of
               the repeats around their run's mean: the noise, measured from the repeated runs themselves
    effect     exp(d) - 1, the relative change of the figure
    threshold  max(t(1 - FALSE_ALARM / (2k); df) * s * sqrt(1/n_old + 1/n_new), MIN_EFFECT): a change within
               it is "same". FALSE_ALARM is the probability that comparing two runs of unchanged code
               reports any change at all (two-sided, Bonferroni over the k figures compared), were the repeats'
               spread all the noise there is; MIN_EFFECT is a floor for what repeats inside one process
               cannot show (a new process's memory layout, the machine's load): see its comment.
A case is REGRESSION when one of its figures fell by more than its threshold, faster when one rose by more
and none fell, same otherwise.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
from pathlib import Path

from labcheck import paths

FIGURES = ("ratio", "peak_fraction")  # compared: machine-independent (see the module docstring)
RECORDED = ("samples_per_s", "seed_samples_per_s", "ratio", "gflops", "peak_gflops", "peak_fraction")
FALSE_ALARM = 0.01  # P(a compare of two runs of unchanged code says REGRESSION or faster anywhere)
# The smallest change reported, whatever the repeats say: runs in separate processes differ by more than the
# repeats inside one run show. Measured on the shared 2-core development machine (load average 1.3-4.6):
# 5 runs of unchanged code, `labcheck bench --repeats 3 --seconds 1 --grading-class 0`, 10 pairs compared:
# 9 pairs "same" everywhere, 1 pair called gradnorms-sensing (memory bound: 200 MB per step) a change; the
# largest change between two runs without a verdict reached 44% (hyperparams' ratio), so read a REGRESSION
# on a loaded machine as "measure again", and compare runs made on a quiet one.
MIN_EFFECT = 0.10
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
VERDICTS = ("REGRESSION", "same", "faster")


def bench_store(store: str | os.PathLike | None = None) -> Path:
    """Where saved runs live: `store` if given, else the cache's bench/ folder (labcheck.paths.cache_root)."""
    return Path(store) if store else paths.cache_root() / "bench"


@dataclasses.dataclass
class SavedRun:
    """One `labcheck bench` run as saved: settings, provenance, and every repeat's figures per case."""

    name: str
    date: str  # ISO 8601, UTC
    device: str  # cpu or cuda
    threads: int  # torch threads
    clock: str  # the clock of every round (harness.clock_for): cpu or wall
    seconds: float  # minimum seconds per timed loop
    machine: dict  # platform, CPUs, GPU name where the device is one
    versions: dict  # torch, numpy, python, labcheck's commit where known
    training_step: str  # native.status(): the compiled or the Python step
    cases: dict[str, dict[str, list[float]]]  # case -> figure (RECORDED) -> one value per repeat
    grading: dict | None = None  # the grading row's extra_info, where it ran (recorded, not compared)

    @property
    def repeats(self) -> int:
        return min((len(f["ratio"]) for f in self.cases.values()), default=0)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, content: dict) -> "SavedRun":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in content.items() if k in fields})


def check_name(name: str) -> str:
    """`name` if it can be a file name in the store (letters, digits, . _ -), else ValueError."""
    if not NAME_PATTERN.fullmatch(name or ""):
        raise ValueError(f"a saved run's name is letters, digits, '.', '_' and '-', not {name!r}")
    return name


def provenance(device: str) -> tuple[dict, dict]:
    """(machine, versions) of this process, for a saved run."""
    import numpy
    import torch

    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "node": platform.node()}
    if device == "cuda":
        machine["gpu"] = torch.cuda.get_device_name()
    versions = {"torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version(),
                "cuda": torch.version.cuda, "labcheck_commit": _commit()}
    return machine, versions


def _commit() -> str | None:
    """The checkout's commit (HEAD), read from .git without running git; None outside a checkout."""
    git = paths.repo_root() / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: PATH"
            git = Path(git.read_text().split(":", 1)[1].strip())
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            loose = git / ref
            if not loose.is_file():  # a worktree's branches live in the common folder
                common = git / "commondir"
                loose = (git / common.read_text().strip() / ref) if common.is_file() else loose
            head = loose.read_text().strip()
        return head[:12]
    except (OSError, IndexError):
        return None


def make_run(name: str, results_by_repeat: list[list], device: str, threads: int, clock: str, seconds: float,
             training_step: str, grading: dict | None = None) -> SavedRun:
    """A SavedRun of `results_by_repeat` (one list of labcheck.bench.results.Result per repeat)."""
    cases: dict[str, dict[str, list[float]]] = {}
    for results in results_by_repeat:
        for res in results:
            figures = cases.setdefault(res.case, {k: [] for k in RECORDED})
            for key in RECORDED:
                figures[key].append(float(getattr(res, key)))
    machine, versions = provenance(device)
    date = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return SavedRun(check_name(name), date, device, threads, clock, seconds, machine, versions, training_step,
                    cases, grading)


def save(run: SavedRun, store: str | os.PathLike | None = None) -> Path:
    """Write `run` to STORE/<name>.json (replacing a run of the same name); returns the path."""
    folder = bench_store(store)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{check_name(run.name)}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(run.to_json(), indent=1) + "\n")
    os.replace(tmp, path)  # a reader never sees half a run
    return path


def load(name: str, store: str | os.PathLike | None = None) -> SavedRun:
    """The saved run `name`; FileNotFoundError naming the runs that exist."""
    path = bench_store(store) / f"{check_name(name)}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in bench_store(store).glob("*.json"))) or "none"
        raise FileNotFoundError(f"no saved bench run {name!r} in {path.parent} (saved: {known})")
    return SavedRun.from_json(json.loads(path.read_text()))


def load_all(store: str | os.PathLike | None = None) -> list[SavedRun]:
    """Every saved run in the store, oldest first."""
    runs = [SavedRun.from_json(json.loads(p.read_text())) for p in sorted(bench_store(store).glob("*.json"))]
    return sorted(runs, key=lambda r: (r.date, r.name))


# ---------------------------------------------------------------------------------------------
# Comparing two runs


@dataclasses.dataclass(frozen=True)
class FigureChange:
    """One figure of one case, old run against new: the t-test of the module docstring."""

    figure: str
    old_mean: float  # geometric mean over the old run's repeats
    new_mean: float
    n_old: int
    n_new: int
    effect: float  # relative change exp(d) - 1
    t: float  # the statistic (inf where both runs' repeats have no spread and the means differ)
    threshold: float  # relative change below which the figure is "same"

    @property
    def verdict(self) -> str:
        if self.effect < -self.threshold and self.t < 0:
            return "REGRESSION"
        if self.effect > self.threshold and self.t > 0:
            return "faster"
        return "same"


def _log_values(values: list[float]) -> list[float]:
    return [math.log(v) for v in values if v > 0]


def change(figure: str, old: list[float], new: list[float], comparisons: int,
           false_alarm: float = FALSE_ALARM, min_effect: float = MIN_EFFECT) -> FigureChange:
    """The pooled two-sample t-test of log(old) against log(new) (module docstring), threshold included."""
    from scipy import stats

    lo, ln = _log_values(old), _log_values(new)
    n_old, n_new = len(lo), len(ln)
    if n_old < 1 or n_new < 1:
        raise ValueError(f"{figure}: a compare needs a positive value in each run (old {old}, new {new})")
    d = statistics.fmean(ln) - statistics.fmean(lo)
    df = n_old + n_new - 2
    squares = sum((x - statistics.fmean(lo)) ** 2 for x in lo) + sum((x - statistics.fmean(ln)) ** 2 for x in ln)
    if df > 0:
        scale = math.sqrt(squares / df) * math.sqrt(1 / n_old + 1 / n_new)
        noise = float(stats.t.ppf(1 - false_alarm / (2 * comparisons), df)) * scale
    else:  # one repeat each: no spread to measure, only the floor decides
        scale, noise = 0.0, 0.0
    t = d / scale if scale > 0 else math.copysign(math.inf, d) if d else 0.0
    threshold = max(math.expm1(noise), min_effect)
    return FigureChange(figure, math.exp(statistics.fmean(lo)), math.exp(statistics.fmean(ln)), n_old, n_new,
                        math.expm1(d), t, threshold)


@dataclasses.dataclass(frozen=True)
class CaseComparison:
    case: str
    changes: tuple[FigureChange, ...]

    @property
    def verdict(self) -> str:
        verdicts = {c.verdict for c in self.changes}
        return "REGRESSION" if "REGRESSION" in verdicts else "faster" if "faster" in verdicts else "same"


def not_comparable(old: SavedRun, new: SavedRun) -> str | None:
    """Why two runs' figures cannot be compared (another device or thread count), else None."""
    if old.device != new.device:
        return f"{old.name} ran on {old.device}, {new.name} on {new.device}"
    if old.threads != new.threads:
        return f"{old.name} ran with {old.threads} torch thread(s), {new.name} with {new.threads}"
    return None


def compare(old: SavedRun, new: SavedRun, false_alarm: float = FALSE_ALARM,
            min_effect: float = MIN_EFFECT) -> list[CaseComparison]:
    """Per case both runs measured, the change of each figure of FIGURES and its verdict."""
    why = not_comparable(old, new)
    if why:
        raise ValueError(f"not comparable: {why}")
    common = [case for case in new.cases if case in old.cases]
    comparisons = max(1, len(common) * len(FIGURES))
    return [CaseComparison(case, tuple(change(f, old.cases[case][f], new.cases[case][f], comparisons,
                                              false_alarm, min_effect) for f in FIGURES))
            for case in common]


def _figure_text(c: FigureChange) -> str:
    if c.figure == "ratio":
        values = f"{c.old_mean:6.1f}x -> {c.new_mean:6.1f}x"
    else:
        values = f"{c.old_mean:6.1%} -> {c.new_mean:6.1%}"
    return f"{values} {c.effect:+7.1%} (t {c.t:+6.1f}, noise {c.threshold:4.0%})"


def format_comparison(old: SavedRun, new: SavedRun, rows: list[CaseComparison],
                      false_alarm: float = FALSE_ALARM, min_effect: float = MIN_EFFECT) -> str:
    """The compare table, one line per case, with the test that decided each verdict."""
    lines = [f"compare: saved run {old.name!r} ({old.date}, {old.repeats} repeats, {old.machine.get('gpu') or old.machine.get('processor')})"
             f" -> {new.name!r} ({new.date}, {new.repeats} repeats), {new.device}, {new.threads} torch thread(s)"]
    if old.machine.get("node") != new.machine.get("node") or old.versions != new.versions:
        lines.append(f"  note: machine or versions differ ({old.versions.get('torch')} on {old.machine.get('node')} vs "
                     f"{new.versions.get('torch')} on {new.machine.get('node')}); ratios and %peak still compare")
    lines.append(f"{'case':18s} {'ratio to the seed-style loop':47s} {'% of sgemm peak':47s} verdict")
    for row in rows:
        ratio, peak = row.changes
        lines.append(f"{row.case:18s} {_figure_text(ratio):47s} {_figure_text(peak):47s} {row.verdict}")
    k = max(1, len(rows) * len(FIGURES))
    n = f"{rows[0].changes[0].n_old} + {rows[0].changes[0].n_new}" if rows else "0"
    lines.append(f"test: two-sample t-test (pooled variance) of log(figure) per case, n = {n} repeats; 'noise' is "
                 f"the change that stays 'same': max(t(1 - {false_alarm:g}/{2 * k}) x pooled sd x sqrt(1/n1 + 1/n2), "
                 f"{min_effect:.0%}); false-alarm probability {false_alarm:g} for this whole compare "
                 f"(Bonferroni over {k} figures)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# History


def draw_history(runs: list[SavedRun], out: str | os.PathLike) -> list[Path]:
    """One PNG per case, OUT/<case>.png: its ratio and %peak in every saved run, oldest first, each repeat a
    dot and the runs' geometric means joined, one series per device and thread count. Returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    order = {id(run): i for i, run in enumerate(runs)}
    labels = [f"{run.name}\n{run.date[:10]}" for run in runs]
    written = []
    for case in sorted({case for run in runs for case in run.cases}):
        fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.9 * len(runs) + 2), 6), sharex=True)
        series: dict[str, list[SavedRun]] = {}
        for run in runs:
            if case in run.cases:
                series.setdefault(f"{run.device}, {run.threads} thread(s)", []).append(run)
        for ax, figure, title in zip(axes, FIGURES, ("ratio to the seed-style loop (x)", "% of sgemm peak")):
            scale = 100.0 if figure == "peak_fraction" else 1.0
            for label, members in series.items():
                xs = [order[id(run)] for run in members]
                means = [scale * math.exp(statistics.fmean(_log_values(run.cases[case][figure]))) for run in members]
                line, = ax.plot(xs, means, marker="o", label=label)
                for x, run in zip(xs, members):
                    values = run.cases[case][figure]
                    ax.scatter([x] * len(values), [scale * v for v in values], s=10, color=line.get_color(), alpha=0.5)
            ax.set_ylabel(title)
            ax.grid(alpha=0.3)
        axes[0].set_title(f"{case}: saved `labcheck bench` runs")
        axes[0].legend(fontsize=8)
        axes[1].set_xticks(range(len(runs)), labels, rotation=45, ha="right", fontsize=7)
        fig.tight_layout()
        path = out / f"{case}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
