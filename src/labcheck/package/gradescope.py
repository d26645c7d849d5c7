"""Gradescope autograder package: `labcheck package gradescope --exercise ID --out autograder.zip`.

The zip, in Gradescope's layout (https://gradescope-autograders.readthedocs.io/en/latest/specs/):

    setup.sh                 run once at image build, with network: the pinned environment
    run_autograder           run per submission in /autograder (AUTOGRADER_ROOT), no network needed
    labcheck/                the grading checkout (labcheck.package: environment + grading files)
      labcheck-package.json  exercise, per-test visibility, limits, provenance

At grading time Gradescope puts the upload in /autograder/submission/ and expects
/autograder/results/results.json:
    {"score", "execution_time", "output", "stdout_visibility", "visibility"?, "extra_data",
     "tests": [{"name", "score", "max_score", "status", "output", "visibility"}]}
Per-test visibility: "visible" (default), "hidden", "after_due_date", "after_published". Gradescope
hides the total score from students while a test is not shown yet, and counts a hidden test's points
in the total it does show (its specification), so labcheck.package refuses point-carrying hidden tests
and `results_json` keeps every other test out of what students read: the top-level output holds the
visible tests' points only, no count or message of another test, and a grading that stopped early
says so without the grader's log (which names tests): that goes to stdout, which only instructors see
("stdout_visibility": "hidden").

    python -m labcheck.package.gradescope --root /autograder          (what run_autograder runs)
    python -m labcheck.package.gradescope --warm --root /autograder   (setup.sh: the expected-answer cache)
"""
from __future__ import annotations

import sys
import traceback
import zipfile
from pathlib import Path

from labcheck import report
from labcheck.exercises import get
from labcheck.roster import gradescope_submission
from labcheck.package import (
    CONFIG_NAME, NOT_YET_SHOWN, PackageConfig, UploadResult, clip, entry_point, environment_files, grade_upload,
    grading_files, provenance, template, visibility_of,
)

SOURCE = "/autograder/source"  # where Gradescope unpacks the zip
VENV = "/opt/labcheck-venv"  # the environment setup.sh builds
DATA = "/opt/labcheck-data"  # data sets no system package provides
CHECKOUT = "labcheck"  # the grading checkout's folder in the zip (and in /autograder/source)


def build(config: PackageConfig, out: Path) -> Path:
    """Write the autograder zip for `config.exercise` to `out`."""
    files = dict((arc, f) for f, arc in environment_files() + grading_files(config.exercise))
    config.built_from = provenance([(f, arc) for arc, f in files.items()])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ex = get(config.exercise)
    warm = (f'LABCHECK_HOME="$LABCHECK_SOURCE" LABCHECK_DATA="$LABCHECK_DATA" \\\n'
            f'  "$PY" -m labcheck.package.gradescope --warm --root "$(dirname "$(dirname "$LABCHECK_SOURCE")")"')
    scripts = {
        "setup.sh": template("setup.sh", SOURCE=f"{SOURCE}/{CHECKOUT}", VENV=VENV, DATA=DATA, EXERCISE=ex.id,
                             DATASETS=ex.dataset or "", WARM=warm,
                             WARM_WHERE=f"{SOURCE}/{CHECKOUT}/expected, which run_autograder reads"),
        "run_autograder": template("run_autograder", VENV=VENV, DATA=DATA),
    }
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, text in scripts.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o100755 << 16  # executable, as Gradescope runs them
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text)
        for arc, f in sorted(files.items()):
            zf.write(f, f"{CHECKOUT}/{arc}")
        zf.writestr(f"{CHECKOUT}/{CONFIG_NAME}", config.to_json())
    return out


NOT_GRADED = "not graded: grading stopped before this test finished (your instructor can see why)"
GRADING_STOPPED = ("Grading stopped before every test finished; the tests it did not reach say 'not graded' "
                   "(your instructor can see why).")


def results_json(up: UploadResult, config: PackageConfig) -> dict:
    """Gradescope's results.json from labcheck's results of one upload. Nothing a student reads before a test
    is shown (the top-level output, the visible tests' outputs) names, counts or totals that test."""
    tests = []
    for t in up.results.get("tests", []):
        tests.append({"name": t["name"], "score": float(t["score"]), "max_score": float(t["max_score"]),
                      "status": t["status"], "output": clip(t.get("output", "")),
                      "visibility": visibility_of(config, t["name"])})
    score = round(sum(t["score"] for t in tests), 4)
    total = round(sum(t["max_score"] for t in tests), 4)
    later = {report.base_name(t["name"]) for t in tests if t["visibility"] in NOT_YET_SHOWN}
    labcheck_meta = (up.results.get("extra_data") or {}).get("labcheck") or {}
    failed = report.not_graded(up.results)  # ours (labcheck's failure): never a score, and said so first
    headline = f"Not graded: {report.NOT_GRADED}."
    lines = ([headline] if failed else []) + list(up.notes)
    if up.problem and up.problem not in lines:
        lines.append(up.problem)
    if failed:
        said = str(up.results.get("output") or "").replace(headline, "").strip()  # (the headline: once)
        if said:
            lines.append(clip(said))
    elif not later:
        lines.append(f"Score: {score:g}/{total:g}.")
        if up.results.get("output") and up.results["output"] != up.problem:
            lines.append(clip(up.results["output"]))
    else:
        shown = [t for t in tests if t["visibility"] == "visible"]
        if shown:
            lines.append(f"Tests shown now: {sum(t['score'] for t in shown):g}/{sum(t['max_score'] for t in shown):g} "
                         "points.")
        notes = list(labcheck_meta.get("load_notes") or [])
        if notes:
            lines.append("What did not load:\n" + "\n".join(f"- {n}" for n in notes))
        output = str(up.results.get("output") or "")
        if output and not output.startswith("What did not load") and output != up.problem:
            lines.append(GRADING_STOPPED)
            up.instructor_notes.append(f"labcheck: the grading stopped early: {output}")
        for t in tests:  # a visible test's output may quote the grader's log, which names and quotes other tests
            if t["visibility"] == "visible":
                if t["output"].startswith("not graded:"):
                    t["output"] = NOT_GRADED
                for name in later:
                    t["output"] = t["output"].replace(name, "another test")
    results = {"score": score, "execution_time": int(round(up.seconds)), "output": "\n".join(lines),
               "stdout_visibility": "hidden", "tests": tests,
               "extra_data": {"labcheck": {"exercise": config.exercise, "max_score": total,
                                           "graded_file": up.entry.name if up.entry else None,
                                           "isolation": labcheck_meta.get("isolation"),
                                           "expected_computed": labcheck_meta.get("expected_computed"),
                                           "built_from": config.built_from.get("labcheck_commit")}}}
    if config.visibility != "visible":
        results["visibility"] = config.visibility
    if failed is not None:  # ours: Gradescope has no "ungradable"; the output says so, the details stay hidden
        results["extra_data"]["labcheck"]["not_graded"] = failed
    return results


def run(root: Path) -> dict:
    """Grade root/submission and write root/results/results.json (also when labcheck itself fails)."""
    root = Path(root)
    results_file = root / "results" / "results.json"
    try:
        config = PackageConfig.read(root / "source" / CHECKOUT)
        hide = [root / "source", root / "results", root / "submission", root / "submission_metadata.json",
                root / "run_autograder"]
        up = grade_upload(root / "submission", config, hide)
        results = results_json(up, config)
        for note in up.instructor_notes:  # stdout: instructors only ("stdout_visibility": "hidden")
            print(note)
        # who submitted and when, for the instructor's exports (never shown to the student's code)
        results["extra_data"]["labcheck"]["submission_metadata"] = gradescope_submission(
            root / "submission_metadata.json")
    except Exception:  # still a results.json: the student reads that it is ours, the instructor the traceback
        results = {"score": 0.0, "execution_time": 0, "tests": [], "stdout_visibility": "hidden",
                   "output": f"Not graded: {report.NOT_GRADED}.",
                   "extra_data": {"labcheck": {"not_graded": {"tests": [],
                                                              "details": [clip(traceback.format_exc(), 6000)]}}}}
    report.write_json_atomic(results_file, results)
    return results


def main(argv: list[str] | None = None) -> int:
    return entry_point(argv, "labcheck.package.gradescope", __doc__, "AUTOGRADER_ROOT", "/autograder",
                       "the autograder folder", run, warm_paths)


def warm_paths(root: Path) -> tuple[Path, Path]:
    """(grading files, expected-answer cache) of the autograder folder `root` (where run_autograder looks first)."""
    home = Path(root) / "source" / CHECKOUT
    return home, home / "expected"


if __name__ == "__main__":
    sys.exit(main())
