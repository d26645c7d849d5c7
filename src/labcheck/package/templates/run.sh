#!/usr/bin/env bash
# PrairieLearn's entry point (info.json externalGradingOptions.entrypoint): grade /grade/student/,
# write /grade/results/results.json. With --warm: fill tests/labcheck/expected/ with the reference's
# answers instead, once, in the grading image (the command is printed by `labcheck package`).
#   GRADE_ROOT       the job folder (PrairieLearn: /grade; tests: a temporary folder)
#   LABCHECK_PYTHON  the Python of the grading image (image/Dockerfile; tests: the developer's .venv)
set -uo pipefail
GRADE_ROOT="${GRADE_ROOT:-/grade}"
LABCHECK_PYTHON="${LABCHECK_PYTHON:-@VENV@/bin/python}"
export LABCHECK_HOME="$GRADE_ROOT/tests/labcheck"
export LABCHECK_DATA="${LABCHECK_DATA:-@DATA@}"
# The reference's answers (filled by run.sh --warm); where there are none, a scratch folder: the grading files stay unchanged.
if [ -z "${LABCHECK_EXPECTED_CACHE:-}" ]; then
  if [ -d "$LABCHECK_HOME/expected" ]; then LABCHECK_EXPECTED_CACHE="$LABCHECK_HOME/expected"; else LABCHECK_EXPECTED_CACHE="$(mktemp -d)"; fi
fi
export LABCHECK_EXPECTED_CACHE
exec "$LABCHECK_PYTHON" -m labcheck.package.prairielearn --root "$GRADE_ROOT" "$@"
