"""Hostile `_selftest` submission: Returns plausible hard-coded numbers instead of computing (add -> 5, means -> 2.5 for every row). The graded tests try several inputs with different answers, so both are lost; `matmul` and `scale` are computed and keep full marks."""
import torch

EXPECTED = {'test_add': 'add(', 'test_means': 'means returned'}


def add(a, b):
    return 5


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [2.5] * len(rows)
