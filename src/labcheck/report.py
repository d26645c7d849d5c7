"""Grade reports: Gradescope results.json, a Markdown summary and a class gradebook CSV.

Every report names a submission by its report folder (a sanitised, unique name) and by the file the
student handed in, as it was named; with a roster (labcheck.roster) also by the student.
"""
from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

GRADESCOPE_STATUS = ("passed", "failed")  # what Gradescope's tests[].status accepts
# What a student reads when a test, or the whole submission, could not be graded because of labcheck, not of
# the submission (a missing bands or data file, an exception of labcheck's own, a grader that died): never a 0.
NOT_GRADED = "grading failed on our side; your instructor has been told"


def gradescope_results(tests: list[dict], output: str = "") -> dict:
    """Gradescope's results.json: the total and one entry per graded test (in test order)."""
    entries = []
    for t in tests:
        entry = {key: t.get(key) for key in ("name", "score", "max_score", "status", "output", "visibility")}
        entry["score"] = round(float(entry["score"] or 0.0), 4)
        entry["max_score"] = float(entry["max_score"] or 0.0)
        entry["output"] = str(entry["output"] or "")
        entry["visibility"] = entry["visibility"] or "visible"
        if entry["status"] not in GRADESCOPE_STATUS:  # a skipped graded test scores 0: say why
            entry["output"] = f"{entry['status']}: {entry['output']}".strip()
            entry["status"] = "failed"
        entries.append(entry)
    results = {
        "score": round(sum(t["score"] for t in entries), 4),
        "max_score": round(sum(t["max_score"] for t in entries), 4),
        "tests": entries,
    }
    if output:
        results["output"] = output
    return results


def not_graded(results: dict) -> dict | None:
    """extra_data.labcheck.not_graded of a results.json: {"tests": [...], "details": [...]} for the instructor
    when labcheck failed to grade (some of) it, else None."""
    found = (((results or {}).get("extra_data") or {}).get("labcheck") or {}).get("not_graded")
    return found if isinstance(found, dict) and found else None


def mark_not_graded(results: dict, tests: list[str], details: list[str]) -> dict:
    """`results` (Gradescope-shaped) marked as not graded: the named tests (every test when `tests` is empty)
    score nothing and say NOT_GRADED, the top-level output says it first, and extra_data.labcheck.not_graded
    keeps the names and the details (tracebacks, the grader's last output) for the instructor."""
    names = set(tests) or {t.get("name") for t in results.get("tests", [])}
    for t in results.get("tests", []):
        if t.get("name") in names:
            t.update(score=0.0, status="failed", output=f"not graded: {NOT_GRADED}")
    results["score"] = round(sum(float(t.get("score") or 0.0) for t in results.get("tests", [])), 4)
    headline = f"Not graded: {NOT_GRADED}."
    output = str(results.get("output") or "").replace(headline, "").strip()
    results["output"] = headline + (f"\n\n{output}" if output else "")
    meta = results.setdefault("extra_data", {}).setdefault("labcheck", {})
    meta["not_graded"] = {"tests": sorted(n for n in names if n), "details": [str(d)[:6000] for d in details]}
    return results


def write_json_atomic(path: str | os.PathLike, data: dict) -> None:
    """Write via a temporary file and rename, so a reader never sees half a report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def base_name(test_name: str) -> str:
    """`test_x[param]` -> `test_x` (EXPECTED_FAILURES lists test functions)."""
    return test_name.split("[", 1)[0]


def lost_points(results: dict) -> list[dict]:
    return [t for t in results.get("tests", []) if float(t.get("score", 0)) < float(t.get("max_score", 0))]


def isolation_of(results: dict) -> str:
    """The worker's confinement level recorded in a results.json ("?" when no call reached a worker)."""
    iso = (((results or {}).get("extra_data") or {}).get("labcheck") or {}).get("isolation") or {}
    return str(iso.get("level") or "?")


def rows(subs, results: dict[str, dict], roster=None) -> list[dict]:
    """One row per submission: totals, tests that lost points, the student (with a labcheck.roster.Roster)
    and (examples) the expectation."""
    out = []
    for sub in subs:
        res = results.get(sub.name) or {"score": 0.0, "max_score": 0.0, "tests": []}
        failed = lost_points(res)
        failed_names = sorted({base_name(t["name"]) for t in failed})
        expected = sub.expected_failures
        unchecked = not_graded(res)
        out.append({
            "name": sub.name,
            "file": Path(sub.path).name,  # as the student named it
            "student": roster.find(sub.path, sub.name) if roster is not None else None,
            "exercise": sub.exercise,
            "submission": str(sub.path),
            "score": float(res.get("score", 0.0)),
            "max_score": float(res.get("max_score", 0.0)),
            "tests": res.get("tests", []),
            "failed": failed,
            "failed_names": failed_names,
            "output": res.get("output", ""),
            "expected": sorted(expected) if expected is not None else None,
            "expectation_met": unchecked is None and (expected is None or set(expected) == set(failed_names)
                                                      and bool(res.get("tests"))),
            "isolation": isolation_of(res),
            "not_graded": unchecked is not None,  # labcheck failed to grade it (or some of its tests): no grade
            "not_graded_details": list((unchecked or {}).get("details") or []),
        })
    return out


def write_gradebook(path: str | os.PathLike, table: list[dict]) -> None:
    """CSV: name, the file as handed in, the student (roster), exercise, score, max_score, then one column
    per graded test (its score)."""
    exercises = sorted({r["exercise"] for r in table})
    columns: list[str] = []
    for r in table:
        for t in r["tests"]:
            col = t["name"] if len(exercises) == 1 else f"{r['exercise']}::{t['name']}"
            if col not in columns:
                columns.append(col)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "file", "student_id", "email", "student", "exercise", "score", "max_score", *columns])
        for r in table:
            scores = {(t["name"] if len(exercises) == 1 else f"{r['exercise']}::{t['name']}"): t["score"]
                      for t in r["tests"]}
            who = r.get("student")
            writer.writerow([r["name"], r["file"], *((who.student_id, who.email, who.name) if who else ("", "", "")),
                             r["exercise"], "not graded" if r.get("not_graded") else f"{r['score']:g}",
                             f"{r['max_score']:g}",
                             *[f"{scores[c]:g}" if c in scores else "" for c in columns]])


def first_lines(text: str, n: int = 12, width: int = 200) -> str:
    lines = [line[:width] for line in str(text).strip().splitlines()]
    return "\n".join(lines[:n] + (["..."] if len(lines) > n else []))


def score_text(r: dict) -> str:
    """A row's score as reports show it: "12/26", or "not graded (of 26)" when labcheck failed to grade it."""
    return f"not graded (of {r['max_score']:g})" if r.get("not_graded") else f"{r['score']:g}/{r['max_score']:g}"


def not_graded_section(table: list[dict]) -> list[str]:
    """Markdown: the submissions labcheck failed to grade, each with what went wrong (for the instructor)."""
    failed = [r for r in table if r.get("not_graded")]
    if not failed:
        return []
    lines = [f"## Not graded: {len(failed)} submission(s) labcheck failed to grade", "",
             "Not the students' doing (a file of the grading package missing, an exception of labcheck's own, a "
             "grader process that died): they were told that grading failed on our side. Fix the cause and run "
             "the same command again: it grades these again (and resumes the others).", ""]
    for r in failed:
        lines += [f"- **{r['name']}** ({r['file']})", "", "  ```"]
        for detail in r.get("not_graded_details") or ["(no details recorded)"]:
            lines += ["  " + line for line in first_lines(detail, n=20).splitlines()]
        lines += ["  ```", ""]
    return lines


def summary_markdown(table: list[dict], examples: bool = False) -> str:
    lines = ["# labcheck grades", ""]
    if examples:
        lines += ["| example | score | expected to lose points on | lost points on | as expected | isolation |",
                  "|---|---:|---|---|:-:|---|"]
        for r in table:
            exp = ", ".join(r["expected"] or []) or "(none)" if r["expected"] is not None else "(no EXPECTED_FAILURES)"
            got = ", ".join(r["failed_names"]) or "(none)"
            lines.append(f"| {r['name']} | {score_text(r)} | {exp} | {got} | "
                         f"{'yes' if r['expectation_met'] else '**NO**'} | {r['isolation']} |")
    else:
        lines += ["| submission | file | student | exercise | score | % | lost points on | isolation |",
                  "|---|---|---|---|---:|---:|---|---|"]
        for r in table:
            pct = f"{100.0 * r['score'] / r['max_score']:.0f}" if r["max_score"] and not r.get("not_graded") else "-"
            got = ", ".join(r["failed_names"]) or "-"
            who = r["student"].name if r.get("student") else "-"
            lines.append(f"| {r['name']} | {r['file']} | {who} | {r['exercise']} | {score_text(r)} | "
                         f"{pct} | {got} | {r['isolation']} |")
    lines += ["", "Isolation levels, weakest first: none < hook-only < no-network < whitelist-fs (bubblewrap); "
              "each report's extra_data.labcheck.isolation says how its worker was confined.", ""]
    lines += not_graded_section(table)
    for r in table:
        if not r["failed"] and not r["output"]:
            continue
        lines += [f"## {r['name']} ({score_text(r)})", ""]
        if r["output"]:
            lines += ["```", first_lines(r["output"]), "```", ""]
        for t in r["failed"]:
            lines += [f"- **{t['name']}** ({t['score']:g}/{t['max_score']:g})", "", "  ```",
                      *["  " + line for line in first_lines(t["output"]).splitlines()], "  ```", ""]
    return "\n".join(lines) + "\n"


def summary_terminal(table: list[dict], examples: bool = False) -> str:
    width = max([len(r["name"]) for r in table] + [10])
    out = []
    for r in table:
        score = f"{'NOT GRADED':>7s} / {r['max_score']:<7g}" if r.get("not_graded") else \
            f"{r['score']:7g} / {r['max_score']:<7g}"
        line = f"{r['name']:{width}s}  {score}  [{r['isolation']}]"
        if examples:
            mark = "ok " if r["expectation_met"] else "MISMATCH"
            exp = ",".join(r["expected"] or []) if r["expected"] is not None else "?"
            line += f"  {mark:8s} expected: {exp or '-'}; lost: {','.join(r['failed_names']) or '-'}"
        else:
            line += f"  lost: {', '.join(r['failed_names']) or '-'}"
        out.append(line)
    if examples:
        bad = sum(not r["expectation_met"] for r in table)
        out.append(f"\n{len(table) - bad}/{len(table)} examples lost points exactly where expected")
    failed = [r["name"] for r in table if r.get("not_graded")]
    if failed:
        out.append(f"\nNOT GRADED (grading failed on our side, not the students'; details in summary.md and each "
                   f"results.json's extra_data.labcheck.not_graded): {', '.join(failed)}")
    return "\n".join(out)
