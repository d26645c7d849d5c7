"""The class dashboard of a grading run: OUT/index.html and each student's OUT/<name>/feedback.md.

    labcheck grade ... --out OUT      writes it after grading (also after a resumed run)
    python -m labcheck.dashboard OUT  rebuilds it from the reports alone

Built from the OUT/**/results.json files only (labcheck.grade writes them, one per submission),
never from the run's memory, so a resumed or partly regraded run gets the same page. A static
page, no server and no network: three matplotlib PNGs next to it (OUT/dashboard/),
  - the score histogram (percent of the maximum),
  - the failure rate of every graded test,
  - the grading time of every submission,
the diagnosed mistakes as bars drawn in HTML, most students first, one bar per mistake and its whole
diagnosis on hover, then tables of the mistakes and of the students (the file each handed in, the
worker's isolation level, links to the student's feedback page and results.json) that a small inline
script sorts (click a column's header) and filters (type in the box above). A "mistake" is the
diagnosis a contract test gives when it fails: the question it asks ("uniform(-1, 1) init
(torch.rand * 2 - 1)?"), or else the first line of its message, with every number replaced by # so
that students whose numbers differ land in one group. Each student also gets OUT/<name>/feedback.html
(and the same as feedback.md).
"""
from __future__ import annotations

import collections
import dataclasses
import html
import json
import re
import sys
from pathlib import Path

from labcheck.report import NOT_GRADED, base_name, isolation_of, not_graded

FIGURES = "dashboard"  # OUT/dashboard/*.png
MAX_BARS = 25  # longest failure-rate chart (most frequent first); the tables list everything
MAX_DIAGNOSIS = 160  # characters of a diagnosis taken from a message's first line (cut between words)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_CLAUSE_END = re.compile(r"(?<=[:;?])\s+|(?<=[.!])\s+(?=[A-Z])|\n")  # where a message's clauses end


@dataclasses.dataclass
class Graded:
    name: str  # the submission's folder under OUT (e.g. "alice" or "sgd/correct")
    exercise: str
    score: float
    max_score: float
    seconds: float  # execution_time of its grading
    tests: list[dict]  # Gradescope-shaped tests of its results.json
    output: str  # the submission-level message (why it could not be graded, ...)
    file: str = "?"  # the file as the student handed it in
    isolation: str = "?"  # the worker's confinement level (labcheck.sandbox.LEVELS)
    not_graded: bool = False  # labcheck failed to grade it (report.NOT_GRADED): no grade, not a 0

    @property
    def percent(self) -> float:
        return 100.0 * self.score / self.max_score if self.max_score else 0.0

    @property
    def failed(self) -> list[dict]:
        return [t for t in self.tests if float(t.get("score", 0)) < float(t.get("max_score", 0))]


def collect(out: Path) -> list[Graded]:
    """Every finished OUT/**/results.json, sorted by name."""
    out = Path(out)
    found = []
    for path in sorted(out.rglob("results.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        meta = ((data.get("extra_data") or {}).get("labcheck") or {}) if isinstance(data, dict) else {}
        if not meta.get("finished"):
            continue
        found.append(Graded(str(path.parent.relative_to(out)), str(meta.get("exercise", "?")),
                            float(data.get("score", 0)), float(data.get("max_score", 0)),
                            float(data.get("execution_time", 0) or 0), list(data.get("tests") or []),
                            str(data.get("output") or ""), Path(str(meta.get("submission") or "?")).name,
                            isolation_of(data), not_graded(data) is not None))
    return found


def diagnosis(output: str) -> str:
    """What the failure says the mistake is: its question hints, else its first line (numbers kept)."""
    text = str(output or "").strip()
    text = re.sub(r"^(?:\[\w+\]\s*)?(?:AssertionError|Failed):\s*", "", text)
    hints = questions(text.split("\nassert ")[0])
    if hints:
        return " ".join(hints)
    return shorten((text.splitlines() or ["(no message)"])[0], MAX_DIAGNOSIS)


def shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters between two words, with an ellipsis where it was cut."""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" ,;:") + "…"


def questions(text: str) -> list[str]:
    """The clauses of a message that ask a question: the contract tests' named mistakes."""
    return list(dict.fromkeys(c.strip() for c in _CLAUSE_END.split(text) if c.strip().endswith("?")
                              and len(c.strip()) > 8))


WHOLE_SUBMISSION = "(whole submission)"  # the "test" of failures that are not one test's: load errors, time-outs
_WHOLE_MARKS = ("not graded:", "not run:", "could not be loaded", "did not finish loading")


def mistake_key(test: dict) -> tuple[str, str]:
    """(test, diagnosis with every number as #): the group a failure belongs to."""
    text = diagnosis(test.get("output", ""))
    whole = any(mark in text for mark in _WHOLE_MARKS)
    return WHOLE_SUBMISSION if whole else base_name(test["name"]), _NUMBER.sub("#", text)


@dataclasses.dataclass
class Mistake:
    test: str
    text: str  # the diagnosis, numbers as #
    example: str  # one student's full diagnosis
    students: list[str]


def mistakes(graded: list[Graded]) -> list[Mistake]:
    """Diagnosed mistakes, most students first (a student counts once per mistake)."""
    groups: dict[tuple[str, str, str], Mistake] = {}
    for g in graded:
        if g.not_graded:
            continue  # labcheck's failure, not a mistake of the student's
        for t in g.failed:
            test, text = mistake_key(t)
            key = (g.exercise, test, text)
            if key not in groups:
                groups[key] = Mistake(test if len({x.exercise for x in graded}) == 1 else f"{g.exercise}::{test}",
                                      text, diagnosis(t.get("output", "")), [])
            if g.name not in groups[key].students:
                groups[key].students.append(g.name)
    return sorted(groups.values(), key=lambda m: (-len(m.students), m.test, m.text))


def failure_rates(graded: list[Graded]) -> list[tuple[str, float, int]]:
    """(test, fraction of its submissions that lost points on it, how many were graded on it)."""
    several = len({g.exercise for g in graded}) > 1
    seen: dict[str, list[bool]] = collections.defaultdict(list)
    for g in graded:
        if g.not_graded:
            continue
        lost = {t["name"] for t in g.failed}
        for t in g.tests:
            seen[f"{g.exercise}::{t['name']}" if several else t["name"]].append(t["name"] in lost)
    return [(name, sum(v) / len(v), len(v)) for name, v in seen.items()]


# ---------------------------------------------------------------------------------------------
# Figures


def _figures(graded: list[Graded], folder: Path) -> dict[str, str]:
    """The three PNGs; returns {title: file name}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    made = {}

    def save(fig, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        made[title] = name

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist([g.percent for g in graded if not g.not_graded], bins=[i * 10 for i in range(11)], color="#4878a8",
            edgecolor="white")
    ax.set_xlabel("score (% of the maximum)")
    ax.set_ylabel("submissions")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_xlim(0, 100)
    save(fig, "scores.png", "Score histogram")

    rates = sorted(failure_rates(graded), key=lambda r: -r[1])[:MAX_BARS]
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.3 * max(1, len(rates))))
    ax.barh([r[0] for r in rates][::-1], [100 * r[1] for r in rates][::-1], color="#c0504d")
    ax.set_xlabel("submissions that lost points on the test (%)")
    ax.set_xlim(0, 100)
    save(fig, "failure_rate.png", "Failure rate per test")

    order = sorted(graded, key=lambda g: -g.seconds)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    if len(order) <= 40:
        ax.bar(range(len(order)), [g.seconds for g in order], color="#8064a2")
        ax.set_xticks(range(len(order)), [g.name for g in order], rotation=70, ha="right", fontsize=7)
    else:
        ax.hist([g.seconds for g in order], bins=20, color="#8064a2", edgecolor="white")
        ax.set_xlabel("seconds")
    ax.set_ylabel("grading time (s)" if len(order) <= 40 else "submissions")
    save(fig, "grading_time.png", "Grading time per submission")
    return made


# ---------------------------------------------------------------------------------------------
# Feedback and the page


def what_to_check(test: dict) -> str:
    """The next step for a student, from how the test failed."""
    out = str(test.get("output", ""))
    if NOT_GRADED in out:
        return "Nothing: this test could not be graded because of a problem on our side, not in your code."
    if "not run:" in out or "exceeded the total grading time" in out or "did not return within" in out:
        return "Your code was too slow or never returned: look for infinite loops and for work repeated per call."
    if "could not be loaded" in out or "did not finish loading" in out:
        return "The file must load on its own: keep only imports, functions, classes and constants at the top level."
    if "NotImplementedError" in out:
        return "This is still the starter's stub: write the function (CONTRACT.md says what it must do)."
    if "NameError" in out:
        return "A name your functions use is not defined when the file is loaded on its own."
    hints = questions(out)
    if hints:
        return "Check: " + " ".join(hints)
    return "Compare your function with the contract's description of it (shapes, in-place updates, return values)."


@dataclasses.dataclass
class Finding:
    """One failed test as its student reads it (feedback.md and feedback.html say the same)."""
    test: str
    score: float
    max_score: float
    diagnosis: str
    what_to_check: str
    output: str  # the test's whole message (first 3000 characters)


def findings(g: Graded) -> list[Finding]:
    return [Finding(t["name"], float(t["score"]), float(t["max_score"]), diagnosis(t.get("output", "")),
                    what_to_check(t), str(t.get("output", "")).strip()[:3000]) for t in g.failed]


def _headline(g: Graded) -> str:
    if g.not_graded:
        return (f"Exercise `{g.exercise}`, file `{g.file}`: **not graded** ({NOT_GRADED}); "
                f"{g.max_score:g} points possible.")
    return (f"Exercise `{g.exercise}`, file `{g.file}`: **{g.score:g} / {g.max_score:g}** ({g.percent:.0f}%), "
            f"graded in {g.seconds:.0f} s.")


def _passed(g: Graded) -> list[str]:
    return [t["name"] for t in g.tests if t not in g.failed] if g.failed else []


def feedback_markdown(g: Graded) -> str:
    lines = [f"# Feedback: {g.name}", "", _headline(g), ""]
    if g.output:
        lines += ["```", g.output.strip()[:2000], "```", ""]
    if not g.failed:
        lines += ["Every graded test passed.", ""]
    else:
        lines += ["## What failed", ""]
        for f in findings(g):
            lines += [f"### {f.test} ({f.score:g} / {f.max_score:g})", "", f"**Diagnosis:** {f.diagnosis}", "",
                      f"**What to check:** {f.what_to_check}", "", "```", f.output, "```", ""]
    if _passed(g):
        lines += ["## Passed", "", ", ".join(f"`{n}`" for n in _passed(g)), ""]
    return "\n".join(lines)


def feedback_html(g: Graded) -> str:
    """The same feedback as a page of its own (what the dashboard links to)."""
    e = html.escape
    headline = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", re.sub(r"`(.+?)`", r"<code>\1</code>", e(_headline(g))))
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Feedback: {e(g.name)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>Feedback: {e(g.name)}</h1><p>{headline}</p>"]
    if g.output:
        parts.append(f"<pre>{e(g.output.strip()[:2000])}</pre>")
    if not g.failed:
        parts.append("<p>Every graded test passed.</p>")
    else:
        parts.append("<h2>What failed</h2>")
        for f in findings(g):
            parts.append(f"<section class='finding'><h3>{e(f.test)} ({f.score:g} / {f.max_score:g})</h3>"
                         f"<p><b>Diagnosis:</b> {e(f.diagnosis)}</p><p><b>What to check:</b> {e(f.what_to_check)}</p>"
                         f"<pre>{e(f.output)}</pre></section>")
    if _passed(g):
        parts.append("<h2>Passed</h2><p>" + ", ".join(f"<code>{e(n)}</code>" for n in _passed(g)) + "</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


_STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;
vertical-align:top}th{background:#eee}td.n{text-align:right}img{max-width:100%;border:1px solid #ddd}
figure{margin:1.5em 0}pre{background:#f6f6f6;padding:8px;white-space:pre-wrap}
table.sortable th{cursor:pointer}th[data-order=asc]::after{content:" \\25B2"}th[data-order=desc]::after{content:" \\25BC"}
.bars{margin:1em 0}.bar{display:flex;align-items:center;margin:3px 0}.bar .label{width:50%;font-size:90%;
padding-right:8px}.bar .fill{background:#9bbb59;
color:#fff;text-align:right;padding:2px 6px;min-width:1.5em}input.filter{margin:.5em 0;padding:4px;width:20em}"""

# Sorting (click a header; numbers by value, the rest as text) and filtering (rows that contain the box's
# text), for every table.sortable and input.filter of the page; nothing is fetched.
_SCRIPT = """document.querySelectorAll('table.sortable').forEach(table => {
  table.querySelectorAll('thead th').forEach((th, col) => th.addEventListener('click', () => {
    const asc = th.dataset.order !== 'asc';
    table.querySelectorAll('thead th').forEach(h => delete h.dataset.order);
    th.dataset.order = asc ? 'asc' : 'desc';
    const key = row => {
      const cell = row.cells[col], text = cell.dataset.sort ?? cell.textContent.trim(), n = Number(text);
      return text !== '' && !isNaN(n) ? n : text.toLowerCase();
    };
    const body = table.tBodies[0];
    [...body.rows].sort((a, b) => {
      const x = key(a), y = key(b);
      const c = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === 'number' ? -1 : 1);
      return asc ? c : -c;
    }).forEach(row => body.appendChild(row));
  }));
});
document.querySelectorAll('input.filter').forEach(box => box.addEventListener('input', () => {
  const words = box.value.trim().toLowerCase();
  [...document.getElementById(box.dataset.table).tBodies[0].rows].forEach(row => {
    row.hidden = words !== '' && !row.textContent.toLowerCase().includes(words);
  });
}));"""


def _table(table_id: str, headers: list[str], rows: list[str]) -> str:
    """A sortable table with a filter box above it; `rows` are <tr> elements."""
    return (f"<input class='filter' data-table='{table_id}' placeholder='filter rows' aria-label='filter {table_id}'>"
            f"<table id='{table_id}' class='sortable'><thead><tr>" + "".join(f"<th>{h}</th>" for h in headers)
            + "</tr></thead><tbody>" + "\n".join(rows) + "</tbody></table>")


def mistake_label(m: Mistake) -> str:
    return f"{m.test}: {m.example}"


def index_html(graded: list[Graded], ranked: list[Mistake], figures: dict[str, str], links: list[str]) -> str:
    e = html.escape
    scores = sorted(g.percent for g in graded if not g.not_graded)
    median = scores[len(scores) // 2] if scores else 0.0
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>labcheck class dashboard</title>"
             f"<style>{_STYLE}</style></head><body><h1>Class dashboard</h1>",
             f"<p>{len(graded)} submissions ({', '.join(sorted({g.exercise for g in graded}))}); median score "
             f"{median:.0f}%, full marks: {sum(g.failed == [] for g in graded)}"
             + (f", <b>not graded (grading failed on our side): {sum(g.not_graded for g in graded)}</b>"
                if any(g.not_graded for g in graded) else "") + ". "
             + " ".join(f"<a href='{e(link)}'>{e(link)}</a>" for link in links) + "</p>"]
    for title, name in figures.items():
        parts.append(f"<figure><figcaption><h2>{e(title)}</h2></figcaption>"
                     f"<img src='{FIGURES}/{e(name)}' alt='{e(title)}'></figure>")
    most = max((len(m.students) for m in ranked), default=1)
    parts.append("<h2>Diagnosed mistakes, most frequent first</h2><div class='bars' id='mistake-bars'>")
    for rank, m in enumerate(ranked, start=1):
        label = mistake_label(m)
        parts.append(f"<div class='bar' title='{e(label)} ({len(m.students)} students)'><span class='label'>"
                     f"#{rank} {e(label)}</span><span class='fill' style='width:{50 * len(m.students) / most:.1f}%'>"
                     f"{len(m.students)}</span></div>")
    parts.append("</div><h2>Mistakes</h2>")
    rows = []
    for rank, m in enumerate(ranked, start=1):
        who = ", ".join(f"<a href='{e(s)}/feedback.html'>{e(s)}</a>" for s in m.students)
        rows.append(f"<tr><td class='n'>{rank}</td><td class='n'>{len(m.students)}</td><td>{e(m.test)}</td>"
                    f"<td>{e(m.example)}</td><td>{who}</td></tr>")
    parts.append(_table("mistakes", ["#", "students", "test", "diagnosis (one example)", "who"], rows))
    parts.append("<h2>Students</h2>")
    rows = []
    for g in graded:
        lost = ", ".join(sorted({base_name(t["name"]) for t in g.failed})) or "-"
        rows.append(f"<tr><td>{e(g.name)}</td><td>{e(g.file)}</td><td>{e(g.exercise)}</td>"
                    + (f"<td class='n' data-sort='-1'>not graded</td><td class='n'>-</td>" if g.not_graded else
                       f"<td class='n' data-sort='{g.score:g}'>{g.score:g}/{g.max_score:g}</td>"
                       f"<td class='n'>{g.percent:.0f}</td>") + f"<td>{e(lost)}</td><td>{e(g.isolation)}</td>"
                    f"<td class='n'>{g.seconds:.0f}</td><td><a href='{e(g.name)}/feedback.html'>feedback</a> "
                    f"<a href='{e(g.name)}/results.json'>results.json</a></td></tr>")
    parts.append(_table("students", ["submission", "file", "exercise", "score", "%", "lost points on", "isolation",
                                     "time (s)", "reports"], rows))
    parts.append("<p>Isolation levels, weakest first: none &lt; hook-only &lt; no-network &lt; whitelist-fs.</p>"
                 f"<script>{_SCRIPT}</script></body></html>\n")
    return "\n".join(parts)


def write(out: Path) -> Path | None:
    """Write OUT/index.html, its figures and every OUT/<name>/feedback.md and feedback.html; None when
    nothing is graded."""
    out = Path(out)
    graded = collect(out)
    if not graded:
        return None
    ranked = mistakes(graded)
    for g in graded:
        (out / g.name / "feedback.md").write_text(feedback_markdown(g))
        (out / g.name / "feedback.html").write_text(feedback_html(g))
    figures = _figures(graded, out / FIGURES)
    links = [name for name in ("gradebook.csv", "summary.md") if (out / name).is_file()]
    index = out / "index.html"
    index.write_text(index_html(graded, ranked, figures, links))
    return index


if __name__ == "__main__":
    written = write(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/grades"))
    print(written or "no finished results.json found")
