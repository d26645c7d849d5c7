#!/usr/bin/env bash
# PrairieLearn's entry point (info.json externalGradingOptions.entrypoint): grade /grade/student/,
# write /grade/results/results.json. With --warm: fill tests/labcheck/expected/ with the reference's
# answers instead, once, in the grading image (see the question's README.md).
#   GRADE_ROOT       the job folder (PrairieLearn: /grade; tests: a temporary folder)
#   LABCHECK_PYTHON  the Python of the grading image (image/Dockerfile; tests: the developer's .venv)
set -uo pipefail
GRADE_ROOT="${GRADE_ROOT:-/grade}"
LABCHECK_PYTHON="${LABCHECK_PYTHON:-@VENV@/bin/python}"
export LABCHECK_HOME="$GRADE_ROOT/tests/labcheck"
export LABCHECK_DATA="${LABCHECK_DATA:-@DATA@}"
export LABCHECK_EXPECTED_CACHE="${LABCHECK_EXPECTED_CACHE:-$LABCHECK_HOME/expected}"
exec "$LABCHECK_PYTHON" -m labcheck.package.prairielearn --root "$GRADE_ROOT" "$@"
