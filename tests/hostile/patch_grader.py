"""Hostile `_selftest` submission: Imports the grader's modules and patches them to claim full marks: it only patches its own worker."""
import torch

import labcheck.plugin
import labcheck.report
import labcheck.sandbox
import labcheck.grade
import pytest

def _full(tests, output=''):
    return {'score': 100.0, 'max_score': 6.0, 'tests': []}


labcheck.report.gradescope_results = _full
labcheck.plugin.LabcheckState._record = lambda *a, **k: None
labcheck.plugin.LabSession.call = lambda self, *a, **k: None
labcheck.sandbox.SubmissionFailure = Exception
labcheck.grade.is_finished = lambda *a: True
pytest.fail = lambda *a, **k: None

EXPECTED = {'test_matmul': '', 'test_means': ''}


def add(a, b):
    return a + b


def matmul(a, b):
    return torch.ones(a.shape[0], b.shape[1])


def scale(x, s):
    return x * s


def means(rows):
    return [0.0 for r in rows]
