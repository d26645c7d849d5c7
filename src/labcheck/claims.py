"""The seed notebooks' claims, judged against a sweep of our reference over seeds.

exercises/<id>/claims.json lists what a seed notebook printed or concluded (fields: `Claim`). Each claim is
compared with `band_metrics` of our runs, one run per seed, by the one statistical procedure written down
in labcheck.procedure (the test of each kind of claim, the variance our runs do not sample, Holm's
correction over the exercise's claims). `compare` names the test:

  compare "value"          the seed's number as one more of our runs (procedure, test 1)
  compare "grid"           an answer on a grid or an integer: eta*, a width, an epoch, a count (test 2)
  compare "greater:<m>"    "metric > m" (or "less:<m>", "metric < m") on runs paired by seed (test 3)

"not comparable" comes first: the claim names no metric of ours, its `settings_differ` says how our
settings differ, it was measured on other data than our runs used (`data_source`), unless our
source is listed in the claim's `judge_on` (a relation between two of our models that does not hinge
on the data set's size, judged with the difference stated) or the data is one the reference generates
itself by the seed's recipe (GENERATED_SOURCES, e.g. ps2's Gaussian sensing problem), or our runs used another budget than the
claim's `budget` ("full" unless "any": e.g. width's eta*, which no pass count changes).

The file's "sampling" table names, per metric pattern, the evaluation set every one of our seeds shares
(items per data source) and the size of the seed's own draw, with the reason (procedure.Sampling); the
metric's domain is the `limits` table of the exercise's bands file.

The file has three lists. "claims": what the seed said or printed, each with its `quote` (the seed's words
or numbers, verbatim) and `line` in the seed file, and its settings as the seed ran them. "questions":
questions WE ask of the seed's data (hypotheses of ours, never presented as the seed's), judged by the
same procedure in a separately named section. "code_problems": the seed's code problems that matter to a
grader (line, quote, problem).

Claim fields: id, what, where, seed_value (number, string or null), metric, compare, data_source,
seed_data, seed_settings, settings_differ (null or a sentence), optional resolution, judge_on, budget,
quote, line.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import re
import statistics
from collections import Counter
from pathlib import Path

from labcheck import procedure
from labcheck.procedure import NOT_COMPARABLE, NOT_REPRODUCED, REPRODUCED, UNDECIDED

# Data that a reference generates itself by the seed's recipe, the same on every machine: a claim measured on
# it is comparable whichever data set the run's other parts used (its data_source names the real data set).
GENERATED_SOURCES = {"gaussian-sensing"}
KINDS = ("value", "grid", "greater", "less")
@dataclasses.dataclass(frozen=True)
class Claim:
    id: str  # unique within the exercise
    what: str  # the claim in words
    where: str  # where in the seed notebook (a few quoted words)
    seed_value: float | str | None  # the seed's number or answer
    metric: str | None  # key of band_metrics(result) compared with it (None: nothing of ours measures it)
    compare: str  # "value", "grid", "greater:<metric>" or "less:<metric>"
    data_source: str  # the data the seed measured on ("mnist", "fashion-mnist", ...)
    seed_data: str  # the seed's data in words
    seed_settings: str  # the seed's settings in words
    settings_differ: str | None = None  # how our settings differ (then: not comparable)
    resolution: float = 0.0  # half a unit of the seed's last printed digit
    judge_on: tuple[str, ...] = ()  # other data sources on which a relational claim is still judged
    budget: str = "full"  # the budget of our runs it is comparable with; "any" when no budget changes it
    quote: str = ""  # the seed's own words or printed numbers, verbatim (whitespace aside)
    line: int = 0  # the line of the seed file (../shared/seeds/) where the quote is
    question: bool = False  # a question we ask of the seed's data ("questions" in the file), not the seed's claim

    @property
    def kind(self) -> str:
        return self.compare.split(":", 1)[0]

    @property
    def other_metric(self) -> str | None:
        return self.compare.split(":", 1)[1] if ":" in self.compare else None


@dataclasses.dataclass(frozen=True)
class Tables:
    """What the procedure needs to know of an exercise's metrics besides the runs."""
    sampling: dict  # metric pattern -> {"ours": {source: items}, "seed": items | None, "why": ...}
    limits: dict  # metric pattern -> {"lo", "hi", ...}: the bands file's limits (the metric's domain)

    def sampling_for(self, metric: str, source: str) -> procedure.Sampling:
        for pattern, spec in self.sampling.items():
            if fnmatch.fnmatchcase(metric, pattern):
                return procedure.Sampling(spec.get("ours", {}).get(source), spec.get("seed"))
        return procedure.NO_SAMPLING

    def domain(self, metric: str) -> tuple[float | None, float | None]:
        from labcheck import bands

        spec = bands.limits_for(metric, self.limits)
        return spec["lo"], spec["hi"]


NO_TABLES = Tables({}, {})


@dataclasses.dataclass
class Verdict:
    claim: Claim
    verdict: str  # REPRODUCED, NOT_REPRODUCED, UNDECIDED or NOT_COMPARABLE
    ours: list[float]  # the claim's metric over our seeds (runs lacking it are left out)
    other: list[float]  # greater/less: the compared metric over our seeds
    detail: str  # why not comparable, or a note on the data judged on
    outcome: procedure.Outcome | None = None  # the test's result (None: not tested)
    step: procedure.HolmStep | None = None  # Holm's step for it within the exercise's family
    family: int = 0  # number of tested claims in the family

    @property
    def test(self) -> str:
        return self.outcome.test if self.outcome else "not tested"

    def ours_text(self) -> str:
        if self.claim.kind == "grid":
            return distribution(self.ours)
        text = summarize(self.ours)
        if self.claim.other_metric:
            text = f"{text} vs {self.claim.other_metric} {summarize(self.other)}"
        return text

    def interval(self) -> tuple[float, float] | None:
        """A value claim's interval at the level Holm applied to it."""
        if self.outcome is None or self.outcome.interval is None:
            return None
        return self.outcome.interval(self.step.level)

    def outcome_text(self) -> str:
        """Test, n, statistic, p, Holm-adjusted p, interval and effect size, in one line."""
        if self.outcome is None:
            return self.detail
        o, s = self.outcome, self.step
        parts = [f"n = {o.n}", o.statistic, f"p = {o.p:.3g}", f"Holm p = {s.adjusted_p:.3g} (of {self.family})"]
        interval = self.interval()
        if interval:
            parts.append(f"{self.claim.seed_value} {'inside' if interval[0] <= float(self.claim.seed_value) <= interval[1] else 'outside'} "
                         f"[{interval[0]:.4g}, {interval[1]:.4g}] at level {s.level:.2g}")
        parts.append(o.effect)
        return "; ".join(parts) + (f" {self.detail}" if self.detail else "")


def summarize(values: list[float]) -> str:
    """'mean +- sd (n)'."""
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4g} +- {sd:.2g} ({len(values)})"


def distribution(values: list[float | None]) -> str:
    """'0.01 x6, 0.02 x4': each distinct value (4 significant digits) and how many seeds gave it."""
    if not values:
        return "no run reports it"
    counts = Counter("none" if v is None else f"{float(v):.4g}" for v in values)
    return ", ".join(f"{value} x{n}" for value, n in sorted(counts.items()))


def _claims_file(exercise: str, directory: Path | None) -> dict | None:
    from labcheck.exercises import get

    path = directory / f"{exercise}.json" if directory else get(exercise).claims_path
    return json.loads(path.read_text()) if path.exists() else None


def load(exercise: str, directory: Path | None = None) -> list[Claim]:
    """The claims of exercises/<exercise>/claims.json (an empty list when the file does not exist)."""
    content = _claims_file(exercise, directory)
    if content is None:
        return []
    fields = {f.name for f in dataclasses.fields(Claim)} - {"question"}
    claims = []
    for section, question in (("claims", False), ("questions", True)):
        for raw in content.get(section, []):
            unknown = set(raw) - fields
            if unknown:
                raise ValueError(f"{exercise}: claim {raw.get('id')!r} has unknown fields {sorted(unknown)}")
            claims.append(Claim(**{**raw, "judge_on": tuple(raw.get("judge_on", ())), "question": question}))
    ids = [c.id for c in claims]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{exercise}: claim ids are not unique: {ids}")
    return claims


def code_problems(exercise: str, directory: Path | None = None) -> list[dict]:
    """The seed's code problems that matter to a grader: {"line", "quote", "problem"} each."""
    return (_claims_file(exercise, directory) or {}).get("code_problems", [])


# A numbered heading of a seed notebook as text: "2.5 Optimization ...", "## 0.3 Exercise 3: ...",
# "2.0.3 1.3 Finding divergent learning rate" (the converter's number, then the notebook's own).
SECTION = re.compile(r"^(?:#+\s*)?\d+(?:\.\d+)+\s+(?:\d+(?:\.\d+)*\s+)?[A-Za-z]")


def seed_sections(exercise: str) -> list[tuple[int, str]]:
    """(line, heading) of every numbered heading of the exercise's seed file, in order ([] without the file)."""
    from labcheck.exercises import EXERCISES, get

    path = get(exercise).seed_path if exercise in EXERCISES else None
    if path is None or not path.exists():
        return []
    return [(number, line.lstrip("# ").strip()[:80])
            for number, line in enumerate(path.read_text().splitlines(), start=1) if SECTION.match(line)]


def section_of(line: int, sections: list[tuple[int, str]]) -> str:
    """The heading of the seed section holding `line` (the last heading at or above it)."""
    above = [title for number, title in sections if number <= line]
    return above[-1] if line and above else "(before the first numbered section)" if line else "(no seed line)"


def knife_edges(exercise: str, directory: Path | None = None) -> list[dict]:
    """Answers that flip under a rounding-level change of a run: {"claim", "note"} each (labcheck.reproducibility)."""
    return (_claims_file(exercise, directory) or {}).get("knife_edges", [])


def load_tables(exercise: str, directory: Path | None = None) -> Tables:
    """The claims file's sampling table and the bands file's limits of `exercise`."""
    from labcheck.exercises import get

    content = _claims_file(exercise, directory) or {}
    bands_path = get(exercise).bands_path
    limits = json.loads(bands_path.read_text()).get("limits", {}) if bands_path.exists() else {}
    return Tables(content.get("sampling", {}), limits)


def _column(runs: list[dict], metric: str | None) -> list[float]:
    return [r["metrics"][metric] for r in runs if metric and metric in r["metrics"]]


def _pairs(runs: list[dict], a: str, b: str) -> tuple[list[float], list[float]]:
    both = [r["metrics"] for r in runs if a in r["metrics"] and b in r["metrics"]]
    return [m[a] for m in both], [m[b] for m in both]


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


def outcome_of(claim: Claim, runs: list[dict], source: str, budget: str = "full",
               tables: Tables = NO_TABLES) -> Verdict:
    """One claim's test outcome, before the family's correction (verdict NOT_COMPARABLE when not tested)."""
    if claim.kind not in KINDS:
        raise ValueError(f"claim {claim.id!r}: unknown compare {claim.compare!r}")
    ours, other = _column(runs, claim.metric), _column(runs, claim.other_metric)
    reason = not_comparable_reason(claim, source, budget)
    if reason:
        return Verdict(claim, NOT_COMPARABLE, ours, other, reason)
    note = "" if measured_on_our_data(claim, source) else f"(judged on {source}, not the seed's {claim.seed_data})"
    if claim.kind == "grid":
        answers = [r["metrics"].get(claim.metric) for r in runs]
        return Verdict(claim, "", answers, other, note, procedure.grid_test(claim.seed_value, answers))
    if claim.kind == "value":
        if len(ours) < 2:
            return Verdict(claim, NOT_COMPARABLE, ours, other, f"fewer than 2 of our runs report {claim.metric}")
        outcome = procedure.value_test(float(claim.seed_value), ours, tables.sampling_for(claim.metric, source),
                                       claim.resolution, tables.domain(claim.metric))
        return Verdict(claim, "", ours, other, note, outcome)
    a, b = _pairs(runs, claim.metric, claim.other_metric)
    if len(a) < 2:
        return Verdict(claim, NOT_COMPARABLE, ours, other, f"fewer than 2 of our runs report both {claim.metric} "
                                                           f"and {claim.other_metric}")
    items = tables.sampling_for(claim.metric, source).ours
    outcome = procedure.paired_test(a, b, greater=claim.kind == "greater", eval_items=items)
    return Verdict(claim, "", a, b, note, outcome)


def judge_all(claims: list[Claim], runs: list[dict], source: str, budget: str = "full",
              tables: Tables = NO_TABLES) -> list[Verdict]:
    """Every claim's verdict, Holm's correction over the tested ones (procedure's family)."""
    verdicts = [outcome_of(c, runs, source, budget, tables) for c in claims]
    tested = [v for v in verdicts if v.outcome is not None]
    for v, step in zip(tested, procedure.holm([v.outcome.p for v in tested])):
        v.step, v.family, v.verdict = step, len(tested), procedure.verdict(v.outcome, step)
    return verdicts


def judge(claim: Claim, runs: list[dict], source: str, budget: str = "full", tables: Tables = NO_TABLES) -> Verdict:
    """One claim judged alone (a family of one)."""
    return judge_all([claim], runs, source, budget, tables)[0]


# ---------------------------------------------------------------------------------------------
# Report

VERDICT_ORDER = (REPRODUCED, NOT_REPRODUCED, UNDECIDED, NOT_COMPARABLE)


def summary_lines(verdicts: list[Verdict], sections: list[tuple[int, str]] = ()) -> list[str]:
    """The counts of each verdict and the family's error rate, for the top of report.md."""
    counts = Counter(v.verdict for v in verdicts)
    tested = sum(1 for v in verdicts if v.outcome is not None)
    lines = ["## Summary", "",
             "- " + "; ".join(f"**{counts[name]}** {name}" for name in VERDICT_ORDER if counts[name])
             + f" (of {len(verdicts)} claims)",
             f"- {tested} claims tested as one family: Holm's procedure keeps the probability of any false "
             f"verdict among them at most {procedure.FWER:g} (labcheck.procedure)."]
    reasons = Counter(v.detail.split(":", 1)[0] for v in verdicts if v.verdict == NOT_COMPARABLE)
    if reasons:
        lines.append("- not comparable: " + "; ".join(f"{n} {why}" for why, n in reasons.most_common()))
    lines += [f"- {reason}" for reason in main_reasons(verdicts, sections)]
    return lines


def main_reasons(verdicts: list[Verdict], sections: list[tuple[int, str]] = ()) -> list[str]:
    """The one or two patterns, read off the verdicts' own numbers, that explain most of them: a systematic
    offset between the seed's numbers and ours, and evaluation sets our seeds share (whose sampling variance
    the verdicts add), then where the claims not reproduced sit in the seed."""
    values = [v.outcome for v in verdicts if v.outcome is not None and v.outcome.variances is not None]
    reasons = []
    if len(values) >= 3:
        above = sum(o.difference < 0 for o in values)
        if max(above, len(values) - above) >= 2 * len(values) / 3:
            side = "above" if above >= len(values) - above else "below"
            reasons.append(f"a systematic offset: ours lies {side} the seed's number in "
                           f"{max(above, len(values) - above)} of {len(values)} value claims")
        shared = [o.variances[1] / o.variances[0] for o in values if o.variances[1] > 0 and o.variances[0] > 0]
        if len(shared) >= len(values) / 2:
            ratio = statistics.median(shared)
            reasons.append(f"evaluation sets our seeds share: in {len(shared)} of {len(values)} value claims the "
                           f"variance of drawing that one set (and the seed's own) is {ratio:.2g}x the seed-to-seed "
                           "variance (median), and each verdict includes it")
    missed = Counter(section_of(v.claim.line, sections) for v in verdicts if v.verdict == NOT_REPRODUCED)
    if missed:
        where, count = missed.most_common(1)[0]
        reasons.append(f"{count} of {sum(missed.values())} claims not reproduced come from the seed's section "
                       f"\"{where}\"")
    return ["what explains most of it: " + "; ".join(reasons[:2])] if reasons else []


def _grouped_tables(verdicts: list[Verdict], sections: list[tuple[int, str]]) -> list[str]:
    """One table per seed section (in the seed's order), each under the section's heading."""
    by_section: dict[str, list[Verdict]] = {}
    for v in sorted(verdicts, key=lambda v: v.claim.line or 0):
        by_section.setdefault(section_of(v.claim.line, sections), []).append(v)
    lines = []
    for title, members in by_section.items():
        lines += [f"### {title}", "", *_table(members), ""]
    return lines[:-1]


def _table(verdicts: list[Verdict]) -> list[str]:
    lines = ["| claim | what | the seed (line: its words) | seed value | ours | verdict | test: n, statistic, p, "
             "Holm p, interval, effect size |", "|---|---|---|---|---|---|---|"]
    for v in verdicts:
        c = v.claim
        said = f"{c.line}: \"{c.quote}\"" if c.quote else f"{c.line}" if c.line else "-"
        cells = [f"`{c.id}`", c.what, said, str(c.seed_value), v.ours_text(), f"**{v.verdict}**", v.outcome_text()]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")  # a seed's '|' ends no cell
    return lines


def report_markdown(exercise: str, verdicts: list[Verdict], sweep, images: list[str] = (),
                    problems: list[dict] = (), edges: list[dict] = ()) -> str:
    """report.md: summary, our runs, the seed's claims, our questions, knife edges, the seed's code problems,
    notes."""
    prov = sweep.provenance()
    seconds = ", ".join(f"{s:.1f}" for s in prov["seconds"])
    seed_claims = [v for v in verdicts if not v.claim.question]
    questions = [v for v in verdicts if v.claim.question]
    lines = [
        f"# {exercise}: the seed notebook's claims against {len(sweep.seeds)} seeds of our reference",
        "",
        *summary_lines(verdicts, seed_sections(exercise)),
        "",
        "## Our runs",
        "",
        f"- budget: **{sweep.budget}**; data source of our runs: **{sweep.data_source}**; seeds {sweep.seeds}",
        f"- {prov['machine']}; torch {prov['versions']['torch']}; executor {prov['executor']}; {prov['date']}",
        f"- wall time per run (s): {seconds}; whole sweep {prov['wall_seconds']} s (load average {prov['load_average']})",
        f"- command: `{prov['command']}`",
        "",
        "Tests (labcheck.procedure): " + "; ".join(f"*{k}*: {v}" for k, v in procedure.TEST_NAMES.items())
        + ". Not comparable: the seed's data or settings differ from ours (said which), or nothing of ours "
        "measures the claim.",
        "",
        "## What the seed said or printed, by the seed's sections",
        "",
        *_grouped_tables(seed_claims, seed_sections(exercise)),
    ]
    if questions:
        lines += ["", "## Questions we ask of the seed's data", "",
                  "Hypotheses of ours, not the seed's: a verdict here says nothing of the student's work.", "",
                  *_table(questions)]
    if edges:
        lines += ["", "## Knife edges: answers a rounding-level change flips", ""]
        lines += [f"- `{e['claim']}`: {e['note']}" for e in edges]
    if problems:
        lines += ["", "## The seed's code problems", ""]
        lines += [f"- line {p['line']}, `{p['quote']}`: {p['problem']}" for p in problems]
    lines += ["", "## Where each claim comes from, and the distribution of ours over seeds", ""]
    for v in verdicts:
        c = v.claim
        lines.append(f"- `{c.id}` ({c.where}): seed data {c.seed_data}; seed settings {c.seed_settings}; "
                     f"compared with our `{c.metric}` ({c.compare}; {v.test}); ours: {distribution(v.ours)}.")
    for page, image in enumerate(images, start=1):
        lines += ["", f"![claims, page {page} of {len(images)}]({image})"]
    return "\n".join(lines) + "\n"


PANELS_PER_PAGE = (3, 3)  # rows, columns: 1386 x 924 px at 110 dpi, one screen


def plot(verdicts: list[Verdict], path: Path, title: str) -> list[Path]:
    """Pages of at most 3 x 3 panels, one per claim our runs measure: our seeds (dots), their mean, the seed's
    value (red star) and, for a value claim, the interval it was judged with (grey). The first page is `path`,
    the others path-2.png, path-3.png ...; returns the pages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [v for v in verdicts if v.ours] or verdicts[:1]
    rows, cols = PANELS_PER_PAGE
    per_page = rows * cols
    pages = [measured[i:i + per_page] for i in range(0, len(measured), per_page)] or [[]]
    colors = {REPRODUCED: "tab:green", NOT_REPRODUCED: "tab:red", UNDECIDED: "tab:orange", NOT_COMPARABLE: "tab:gray"}
    paths = []
    for number, page in enumerate(pages, start=1):
        page_path = path if number == 1 else path.with_name(f"{path.stem}-{number}{path.suffix}")
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
        for ax, v in zip(axes.flat, page):
            _panel(ax, v, colors[v.verdict])
        for ax in list(axes.flat)[len(page):]:
            ax.axis("off")
        fig.suptitle(f"{title} (page {number} of {len(pages)})", fontsize=10)
        fig.tight_layout()
        fig.savefig(page_path, dpi=110)
        plt.close(fig)
        paths.append(page_path)
    return paths


def _panel(ax, v: Verdict, color: str) -> None:
    """One claim: our values per metric, their mean, the seed's value and the judged interval."""
    columns = [(v.claim.metric or "-", v.ours)]
    if v.claim.other_metric:
        columns.append((v.claim.other_metric, v.other))
    interval = v.interval()
    if interval:
        ax.fill_between([-0.4, 0.4], [interval[0]] * 2, [interval[1]] * 2, color="0.85",
                        label=f"interval (level {v.step.level:.2g})")
    for x, (_, values) in enumerate(columns):
        ax.plot([x] * len(values), values, "o", color="tab:blue", alpha=0.6)
        if values:
            ax.plot([x - 0.2, x + 0.2], [statistics.fmean(values)] * 2, color="tab:blue")
    if isinstance(v.claim.seed_value, (int, float)) and not isinstance(v.claim.seed_value, bool):
        ax.plot([0], [v.claim.seed_value], "*", color="red", markersize=14, label="seed notebook")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    ax.set_xticks(range(len(columns)), [name[-40:] for name, _ in columns], fontsize=7)
    ax.set_xlim(-0.6, len(columns) - 0.4)
    ax.set_title(f"{v.claim.id}: {v.verdict}"[:60], fontsize=9, color=color)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(alpha=0.3)
