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
Per-test visibility: "visible" (default), "hidden", "after_due_date", "after_published".

    python -m labcheck.package.gradescope --root /autograder    (what run_autograder runs)
"""
from __future__ import annotations

import sys
import traceback
import zipfile
from pathlib import Path

from labcheck import report
from labcheck.roster import gradescope_submission
from labcheck.package import (
    CONFIG_NAME, PackageConfig, UploadResult, clip, entry_point, environment_files, grade_upload, grading_files,
    provenance, template,
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
    scripts = {
        "setup.sh": template("setup.sh", SOURCE=f"{SOURCE}/{CHECKOUT}", VENV=VENV, DATA=DATA),
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


def results_json(up: UploadResult, config: PackageConfig) -> dict:
    """Gradescope's results.json from labcheck's results of one upload."""
    tests = []
    for t in up.results.get("tests", []):
        tests.append({"name": t["name"], "score": float(t["score"]), "max_score": float(t["max_score"]),
                      "status": t["status"], "output": clip(t.get("output", "")),
                      "visibility": config.test_visibility.get(report.base_name(t["name"]), config.visibility)})
    score = round(sum(t["score"] for t in tests), 4)
    total = round(sum(t["max_score"] for t in tests), 4)
    failed = report.not_graded(up.results)
    headline = f"Not graded: {report.NOT_GRADED}."
    lines = [headline] if failed else []
    lines += list(up.notes) + ([] if failed else [f"Score: {score:g}/{total:g}."])
    said = str(up.results.get("output") or "").replace(headline, "").strip()  # (labcheck's own headline: once)
    if said:
        lines.append(clip(said))
    results = {"score": score, "execution_time": int(round(up.seconds)), "output": "\n".join(lines),
               "stdout_visibility": "hidden", "tests": tests,
               "extra_data": {"labcheck": {"exercise": config.exercise, "max_score": total,
                                           "graded_file": up.entry.name if up.entry else None,
                                           "isolation": ((up.results.get("extra_data") or {}).get("labcheck")
                                                         or {}).get("isolation"),
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
        results = results_json(grade_upload(root / "submission", config, hide), config)
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
                       "the autograder folder", run)


if __name__ == "__main__":
    sys.exit(main())
