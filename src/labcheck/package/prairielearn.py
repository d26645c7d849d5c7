"""PrairieLearn question with external grading: `labcheck package prairielearn --exercise ID --out DIR`.

The question folder (PrairieLearn's docs/externalGrading.md and elements/pl-file-upload.md):

    info.json          "gradingMethod": "External", externalGradingOptions {image, entrypoint, timeout,
                       enableNetworking: false}
    question.html      <pl-file-upload> for ID.py / ID.ipynb / submission.py, <pl-external-grader-results>
    tests/             copied by PrairieLearn to /grade/tests for every grading job
      run.sh           the entrypoint (/grade/tests/run.sh)
      labcheck/        the grading checkout (labcheck.package: grading files + labcheck-package.json)
    image/             not used by PrairieLearn: build and push the grading image from it
      Dockerfile, setup.sh, labcheck/   (the environment only: no reference, no contract tests)

Per job PrairieLearn puts the upload in /grade/student/ and expects /grade/results/results.json:
    {"gradable", "score" in [0, 1], "message", "output", "tests": [{"name", "points", "max_points",
     "message", "output"}]}; it shows all of it to the student at once (no per-test visibility, so
    labcheck.package refuses visibility options for PrairieLearn). An upload that cannot be graded is
    {"gradable": false, "format_errors"}: "invalid, not gradable", no points and no attempt used. That is
    an upload without a gradable file, one Python cannot parse (a syntax error in the .py or in a
    notebook's cell) and one whose every test failed to load; the message names the student's file.
    So is one labcheck failed to grade (report.NOT_GRADED: a file of the package missing, an exception of ours,
    a grader that died): never a 0; the details go to the job's log (stderr), which the instructor reads.

The expected-answer cache lives in tests/labcheck/expected/ (the image holds no grading files, so it
cannot be filled when the image is built): run the image once on the question's tests/ folder,

    docker run --rm -v "$PWD/tests:/grade/tests" IMAGE /grade/tests/run.sh --warm

and commit what it writes; without it each job computes the reference's answers itself (slower).

    python -m labcheck.package.prairielearn --root /grade           (what run.sh runs)
    python -m labcheck.package.prairielearn --warm --root /grade    (run.sh --warm)
"""
from __future__ import annotations

import json
import sys
import traceback
import uuid
from pathlib import Path

from labcheck import report
from labcheck.exercises import get
from labcheck.package import (
    PL_VISIBILITY_REFUSED, PackageConfig, UploadResult, clip, copy_files, entry_point, environment_files,
    grade_upload, grading_files, provenance, template,
)
from labcheck.submission import entry_names

VENV = "/opt/labcheck-venv"  # the environment the image's setup.sh builds
DATA = "/opt/labcheck-data"  # data sets no system package provides
BASE_IMAGE = "python:3.11-slim-bookworm"  # Debian: its dataset-fashion-mnist package provides Fashion-MNIST
MAX_TIMEOUT = 600  # PrairieLearn's cap on externalGradingOptions.timeout, seconds
CHECKOUT = "labcheck"


def info_json(config: PackageConfig, image: str, question_uuid: str) -> dict:
    ex = get(config.exercise)
    return {
        "uuid": question_uuid,
        "title": f"{ex.id}: {ex.title}",
        "topic": "labcheck",
        "tags": ["labcheck", ex.id],
        "type": "v3",
        "singleVariant": True,
        "gradingMethod": "External",
        "externalGradingOptions": {
            "enabled": True,
            "image": image,
            "entrypoint": "/grade/tests/run.sh",
            "timeout": int(min(MAX_TIMEOUT, config.total_timeout + 60)),  # the grader's own cap, plus start-up
            "enableNetworking": False,
        },
    }


def build(config: PackageConfig, out: Path, image: str, base_image: str = BASE_IMAGE) -> Path:
    """Write the question folder; an existing info.json keeps its uuid (the same question, regenerated)."""
    out = Path(out)
    tests, env = out / "tests", out / "image"
    grading, environment = grading_files(config.exercise), environment_files()
    config.built_from = provenance(grading + environment)
    old = out / "info.json"
    question_uuid = json.loads(old.read_text()).get("uuid") if old.is_file() else None
    out.mkdir(parents=True, exist_ok=True)
    (out / "info.json").write_text(json.dumps(info_json(config, image, question_uuid or str(uuid.uuid4())),
                                              indent=2) + "\n")
    ex = get(config.exercise)
    names = [n for n in entry_names(config.exercise) if n != "__init__.py"]
    (out / "question.html").write_text(template("question.html", TITLE=ex.title, EXERCISE=ex.id,
                                                FILE_NAMES=", ".join(names)))
    copy_files(grading, tests / CHECKOUT)
    config.write(tests / CHECKOUT)
    run_sh = tests / "run.sh"
    run_sh.write_text(template("run.sh", VENV=VENV, DATA=DATA))
    run_sh.chmod(0o755)
    copy_files(environment, env / CHECKOUT)
    (env / "setup.sh").write_text(template(
        "setup.sh", SOURCE="/opt/labcheck-src", VENV=VENV, DATA=DATA, EXERCISE=ex.id, DATASETS=ex.dataset or "",
        WARM=": # the image holds no grading files: run.sh --warm fills the question's tests/labcheck/expected/",
        WARM_WHERE="PrairieLearn: not here, see the question's run.sh"))
    (env / "Dockerfile").write_text(template("Dockerfile", BASE_IMAGE=base_image, IMAGE_NAME=image.split("/")[-1]))
    return out


def results_json(up: UploadResult, config: PackageConfig) -> dict:
    """PrairieLearn's results.json from labcheck's results of one upload."""
    if config.visibility != "visible" or config.test_visibility:  # a hand-edited package: never show them
        raise ValueError(PL_VISIBILITY_REFUSED)
    failed = report.not_graded(up.results)
    if failed is not None:  # ours: PrairieLearn keeps the submission ungraded (no score, no attempt used)
        for detail in failed.get("details") or []:
            print(f"labcheck: not graded ({', '.join(failed.get('tests') or []) or 'every test'}):\n{detail}",
                  file=sys.stderr)
        return {"gradable": False, "format_errors": [f"Not graded: {report.NOT_GRADED}."],
                "message": f"Not graded: {report.NOT_GRADED}."}
    problem = up.problem or (f"Python cannot parse these cells of your notebook:\n{up.unparsed_cells}"
                             if up.unparsed_cells else None)
    if problem:  # invalid, not gradable: no points, no attempt used
        errors = [problem] + [n for n in up.notes if n != problem and not n.startswith(("Graded ", "Received "))]
        return {"gradable": False, "format_errors": errors, "message": " ".join(problem.splitlines()[:2])}
    tests = []
    for t in up.results.get("tests", []):
        output = clip(t.get("output", ""))
        tests.append({"name": t["name"], "points": float(t["score"]), "max_points": float(t["max_score"]),
                      "message": "passed" if t["status"] == "passed" else (output.splitlines() or ["failed"])[0],
                      "output": output})
    points = sum(t["points"] for t in tests)
    total = sum(t["max_points"] for t in tests)
    score = min(1.0, max(0.0, points / total)) if total else 0.0
    return {"gradable": True, "score": round(score, 6),
            "message": " ".join(up.notes) + f" {points:g}/{total:g} points.",
            "output": clip(up.results.get("output", "")), "tests": tests}


def run(root: Path) -> dict:
    """Grade root/student and write root/results/results.json (also when labcheck itself fails)."""
    root = Path(root)
    try:
        config = PackageConfig.read(root / "tests" / CHECKOUT)
        hide = [root / "tests", root / "results", root / "data", root / "serverFilesCourse", root / "student"]
        results = results_json(grade_upload(root / "student", config, hide, parse_errors_grade=False), config)
    except Exception:  # ours: ungradable, never a 0; the traceback goes to the job's log, not to the student
        print(f"labcheck: not graded:\n{traceback.format_exc()}", file=sys.stderr)
        results = {"gradable": False, "format_errors": [f"Not graded: {report.NOT_GRADED}."],
                   "message": f"Not graded: {report.NOT_GRADED}."}
    report.write_json_atomic(root / "results" / "results.json", results)
    return results


def main(argv: list[str] | None = None) -> int:
    return entry_point(argv, "labcheck.package.prairielearn", __doc__, "GRADE_ROOT", "/grade",
                       "the grading job's folder", run, warm_paths)


def warm_paths(root: Path) -> tuple[Path, Path]:
    """(grading files, expected-answer cache) of the job folder `root` (where run.sh looks first)."""
    home = Path(root) / "tests" / CHECKOUT
    return home, home / "expected"


if __name__ == "__main__":
    sys.exit(main())
