"""Hostile lines for width (grafted onto examples/width/correct.py by tests/test_trust.py): compute_accuracy
returns a plausible constant, 0.75 (the fraction of right labels the old probe always used). The grader
now draws the number of wrong labels per call, so the right answer differs between cases: the test is
lost; compute_objective keeps its points."""


def compute_accuracy(ws, bs, X, y):
    return 0.75


BASE = "width"
TESTS = ["test_compute_accuracy", "test_compute_objective"]
EXPECTED = {"test_compute_accuracy": "compute_accuracy = 0.75"}
