"""Registry entry of `_selftest`: labcheck's own exercise for the sandbox's tests and the hostile corpus
(four graded tests, 6 points; the contract and reference sit beside this folder, where the corpus's files
refer to them). Never listed among the exercises."""
from labcheck.exercises import Exercise

EXERCISE = Exercise(
    id="_selftest",
    title="labcheck's own grading tests",
    reference_file="../reference_selftest.py",
    contract_file="../contract_selftest.py",
)
