"""Reference of labcheck's internal `_selftest` exercise, graded by contract_selftest.py.

Used only by tests/test_grading.py: a tiny, fast contract that does not depend on any course
exercise, so the hostile-submission cases exercise the whole grading path in seconds.
"""
import torch


def add(a, b):
    return a + b


def matmul(a, b):
    return a @ b  # (n, k) @ (k, m) -> (n, m)


def scale(x, s):
    return x * s


def means(rows):
    return [sum(r) / len(r) for r in rows]
