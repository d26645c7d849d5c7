"""The seed notebooks' claims, judged against a sweep of our reference over seeds.

reference/claims/<id>.json lists what a seed notebook printed or concluded (fields: `Claim`; the
schema with an example is in ../notes/SKELETON.md). Each claim is compared with `band_metrics` of our
runs, one run per seed, by ONE stated test per kind of claim:

  compare "value"          the seed's single number against our seed-to-seed distribution: reproduced
                           when it lies inside the two-sided 95% prediction interval of a new run,
                           mean +- t(0.975; n-1) * sd * sqrt(1 + 1/n) (widened by the claim's
                           "resolution", half a unit of the last digit the seed printed).
  compare "greater:<m>"    "metric > m" (or "less:<m>", "metric < m"): Welch's t-test across our seeds,
                           one-sided, reproduced when p < 0.05. When neither sample varies, the test is
                           the comparison of the two constants.
  compare "equal"          an exact answer (e.g. the smallest interpolating width): reproduced when at
                           least half of our seeds give exactly the seed's answer.

"not comparable" comes first: the claim names no metric of ours, its `settings_differ` says how our
settings differ, it was measured on other data than our runs used (`data_source`), unless our
source is listed in the claim's `judge_on` (a relation between two of our models that does not hinge
on the data set's size, judged with the difference stated) or the data is one the reference generates
itself by the seed's recipe (GENERATED_SOURCES, e.g. ps2's Gaussian sensing problem), or our runs used another budget than the
claim's `budget` ("full" unless "any": e.g. width's eta*, which no pass count changes).

Claim fields: id, what, where, seed_value (number, string or null), metric, compare, data_source,
seed_data, seed_settings, settings_differ (null or a sentence), optional resolution, judge_on, budget.
"""
from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections import Counter
from pathlib import Path

from labcheck import paths

LEVEL = 0.05  # significance of Welch's test; 1 - LEVEL is the prediction interval's coverage
REPRODUCED, NOT_REPRODUCED, NOT_COMPARABLE = "reproduced", "not reproduced", "not comparable"
# Data that a reference generates itself by the seed's recipe, the same on every machine: a claim measured on
# it is comparable whichever data set the run's other parts used (its data_source names the real data set).
GENERATED_SOURCES = {"gaussian-sensing"}
TESTS = {
    "value": f"seed value inside our {1 - LEVEL:.0%} prediction interval for one new run",
    "greater": f"Welch's t-test across our seeds, one-sided, p < {LEVEL}",
    "less": f"Welch's t-test across our seeds, one-sided, p < {LEVEL}",
    "equal": "at least half of our seeds give exactly the seed's answer",
}


@dataclasses.dataclass(frozen=True)
class Claim:
    id: str  # unique within the exercise
    what: str  # the claim in words
    where: str  # where in the seed notebook (a few quoted words)
    seed_value: float | str | None  # the seed's number or answer
    metric: str | None  # key of band_metrics(result) compared with it (None: nothing of ours measures it)
    compare: str  # "value", "greater:<metric>", "less:<metric>" or "equal"
    data_source: str  # the data the seed measured on ("mnist", "fashion-mnist", ...)
    seed_data: str  # the seed's data in words
    seed_settings: str  # the seed's settings in words
    settings_differ: str | None = None  # how our settings differ (then: not comparable)
    resolution: float = 0.0  # half a unit of the seed's last printed digit
    judge_on: tuple[str, ...] = ()  # other data sources on which a relational claim is still judged
    budget: str = "full"  # the budget of our runs it is comparable with; "any" when no budget changes it

    @property
    def kind(self) -> str:
        return self.compare.split(":", 1)[0]

    @property
    def other_metric(self) -> str | None:
        return self.compare.split(":", 1)[1] if ":" in self.compare else None


@dataclasses.dataclass
class Verdict:
    claim: Claim
    verdict: str  # REPRODUCED, NOT_REPRODUCED or NOT_COMPARABLE
    ours: list[float]  # the claim's metric over our seeds (runs lacking it are left out)
    other: list[float]  # greater/less: the compared metric over our seeds
    test: str  # the test used, in words
    detail: str  # its outcome: the interval, the p-value, the share of seeds, or why not comparable
    answers: dict = dataclasses.field(default_factory=dict)  # equal: answer -> number of seeds

    def ours_text(self) -> str:
        text = summarize(self.ours)
        if self.claim.other_metric:
            text = f"{text} vs {self.claim.other_metric} {summarize(self.other)}"
        if self.answers:
            text = ", ".join(f"{k}: {v}/{sum(self.answers.values())}" for k, v in self.answers.items())
        return text


def summarize(values: list[float]) -> str:
    """'mean +- sd (n)'."""
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4g} +- {sd:.2g} ({len(values)})"


def distribution(values: list[float]) -> str:
    """'0.01 x6, 0.02 x4': each distinct value (4 significant digits) and how many seeds gave it."""
    if not values:
        return "no run reports it"
    counts = Counter(float(f"{v:.4g}") for v in values)
    return ", ".join(f"{value:g} x{n}" for value, n in sorted(counts.items()))


def claims_dir() -> Path:
    return paths.reference_dir() / "claims"


def load(exercise: str, directory: Path | None = None) -> list[Claim]:
    """The claims of reference/claims/<exercise>.json (an empty list when the file does not exist)."""
    path = (directory or claims_dir()) / f"{exercise}.json"
    if not path.exists():
        return []
    content = json.loads(path.read_text())
    fields = {f.name for f in dataclasses.fields(Claim)}
    claims = []
    for raw in content["claims"]:
        unknown = set(raw) - fields
        if unknown:
            raise ValueError(f"{path}: claim {raw.get('id')!r} has unknown fields {sorted(unknown)}")
        raw = {**raw, "judge_on": tuple(raw.get("judge_on", ()))}
        claims.append(Claim(**raw))
    ids = [c.id for c in claims]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{path}: claim ids are not unique: {ids}")
    return claims


def _column(runs: list[dict], metric: str | None) -> list[float]:
    return [r["metrics"][metric] for r in runs if metric and metric in r["metrics"]]


def prediction_interval(values: list[float], level: float = LEVEL) -> tuple[float, float]:
    """Two-sided (1 - level) prediction interval for one new draw (normal approximation)."""
    from scipy import stats

    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, mean
    half = float(stats.t.ppf(1 - level / 2, n - 1)) * statistics.stdev(values) * math.sqrt(1 + 1 / n)
    return mean - half, mean + half


def welch_one_sided(a: list[float], b: list[float], greater: bool) -> float:
    """p-value of Welch's t-test for mean(a) > mean(b) (greater) or < (otherwise)."""
    from scipy import stats

    if statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:  # two constants: no test needed
        holds = a[0] > b[0] if greater else a[0] < b[0]
        return 0.0 if holds else 1.0
    # Welch's statistic written out (scipy's ttest_ind warns of "catastrophic cancellation" when one
    # sample is constant, e.g. every seed at effective rank 5, though the test is well defined then).
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return float(stats.t.sf(t, df) if greater else stats.t.cdf(t, df))


def measured_on_our_data(claim: Claim, source: str) -> bool:
    """The seed measured on the data our runs used: the same source, or data the reference generates itself."""
    return claim.data_source == source or claim.data_source in GENERATED_SOURCES


def not_comparable_reason(claim: Claim, source: str, budget: str) -> str | None:
    if claim.metric is None:
        return "nothing in this exercise measures it" + (f": {claim.settings_differ}" if claim.settings_differ else "")
    if claim.settings_differ:
        return f"settings differ: {claim.settings_differ}"
    if not measured_on_our_data(claim, source) and source not in claim.judge_on:
        return f"data differ: the seed used {claim.seed_data} ({claim.data_source}); our runs used {source}"
    if claim.budget not in ("any", budget):
        return f"budget differs: the claim is about the {claim.budget} budget ({claim.seed_settings}); our runs used {budget}"
    return None


def judge(claim: Claim, runs: list[dict], source: str, budget: str = "full") -> Verdict:
    """The verdict on one claim from our runs (each {"metrics": band_metrics(result)}) at `budget`."""
    ours, other = _column(runs, claim.metric), _column(runs, claim.other_metric)
    kind = claim.kind
    test = TESTS.get(kind)
    if test is None:
        raise ValueError(f"claim {claim.id!r}: unknown compare {claim.compare!r}")
    reason = not_comparable_reason(claim, source, budget)
    if reason:
        return Verdict(claim, NOT_COMPARABLE, ours, other, test, reason)
    note = "" if measured_on_our_data(claim, source) else f" (judged on {source}, not the seed's {claim.seed_data})"
    if kind == "equal":
        answers = Counter(str(_plain(r["metrics"].get(claim.metric))) for r in runs)
        share = answers.get(str(_plain(claim.seed_value)), 0) / len(runs)
        verdict = REPRODUCED if share >= 0.5 else NOT_REPRODUCED
        return Verdict(claim, verdict, ours, other, test,
                       f"{share:.0%} of {len(runs)} seeds give {claim.seed_value}{note}", dict(answers.most_common()))
    if len(ours) < 2 or (kind != "value" and len(other) < 2):
        return Verdict(claim, NOT_COMPARABLE, ours, other, test, f"fewer than 2 of our runs report {claim.metric}")
    if kind == "value":
        lo, hi = prediction_interval(ours)
        inside = lo - claim.resolution <= float(claim.seed_value) <= hi + claim.resolution
        return Verdict(claim, REPRODUCED if inside else NOT_REPRODUCED, ours, other, test,
                       f"{claim.seed_value} {'inside' if inside else 'outside'} [{lo:.4g}, {hi:.4g}]{note}")
    p = welch_one_sided(ours, other, greater=kind == "greater")
    sign = ">" if kind == "greater" else "<"
    verdict = REPRODUCED if p < LEVEL else NOT_REPRODUCED
    return Verdict(claim, verdict, ours, other, test,
                   f"{claim.metric} {sign} {claim.other_metric}: p = {p:.3g}, mean difference "
                   f"{statistics.fmean(ours) - statistics.fmean(other):+.4g}{note}")


def _plain(value):
    """32.0 -> 32, so answers print and compare as the seed wrote them; None stays 'None'."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def judge_all(claims: list[Claim], runs: list[dict], source: str, budget: str = "full") -> list[Verdict]:
    return [judge(c, runs, source, budget) for c in claims]


# ---------------------------------------------------------------------------------------------
# Report


def report_markdown(exercise: str, verdicts: list[Verdict], sweep, image: str | None = None) -> str:
    """report.md: provenance of the sweep, the tests, one table row per claim, then each claim's notes."""
    prov = sweep.provenance()
    seconds = ", ".join(f"{s:.1f}" for s in prov["seconds"])
    lines = [
        f"# {exercise}: the seed notebook's claims against {len(sweep.seeds)} seeds of our reference",
        "",
        f"- budget: **{sweep.budget}**; data source of our runs: **{sweep.data_source}**; seeds {sweep.seeds}",
        f"- {prov['machine']}; torch {prov['versions']['torch']}; executor {prov['executor']}; {prov['date']}",
        f"- wall time per run (s): {seconds}; whole sweep {prov['wall_seconds']} s (load average {prov['load_average']})",
        f"- command: `{prov['command']}`",
        "",
        "Tests: " + "; ".join(f"*{k}*: {v}" for k, v in TESTS.items()) + ". Not comparable: the seed's data or "
        "settings differ from ours (said which), or nothing of ours measures the claim.",
        "",
        "| claim | what | seed | ours: mean +- sd (n) | verdict | test outcome |",
        "|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        c = v.claim
        lines.append(f"| `{c.id}` | {c.what} | {c.seed_value} | {v.ours_text()} | **{v.verdict}** | {v.detail} |")
    lines += ["", "## Where each claim comes from, and the distribution of ours over seeds", ""]
    for v in verdicts:
        c = v.claim
        lines.append(f"- `{c.id}` ({c.where}): seed data {c.seed_data}; seed settings {c.seed_settings}; "
                     f"compared with our `{c.metric}` ({c.compare}); ours: {distribution(v.ours)}.")
    if image:
        lines += ["", f"![claims]({image})"]
    return "\n".join(lines) + "\n"


def plot(verdicts: list[Verdict], path: Path, title: str) -> None:
    """One panel per claim: our seeds (dots), their mean, and the seed's value (red star)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(verdicts))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    colors = {REPRODUCED: "tab:green", NOT_REPRODUCED: "tab:red", NOT_COMPARABLE: "tab:gray"}
    for ax, v in zip(axes.flat, verdicts):
        columns = [(v.claim.metric or "-", v.ours)]
        if v.claim.other_metric:
            columns.append((v.claim.other_metric, v.other))
        for x, (_, values) in enumerate(columns):
            ax.plot([x] * len(values), values, "o", color="tab:blue", alpha=0.6)
            if values:
                ax.plot([x - 0.2, x + 0.2], [statistics.fmean(values)] * 2, color="tab:blue")
        if isinstance(v.claim.seed_value, (int, float)) and not isinstance(v.claim.seed_value, bool):
            ax.plot([0], [v.claim.seed_value], "*", color="red", markersize=14, label="seed notebook")
            ax.legend(fontsize=7, loc="best")
        ax.set_xticks(range(len(columns)), [name for name, _ in columns], fontsize=7)
        ax.set_xlim(-0.6, len(columns) - 0.4)
        ax.set_title(f"{v.claim.id}: {v.verdict}", fontsize=9, color=colors[v.verdict])
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(verdicts):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
