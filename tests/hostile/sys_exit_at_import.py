"""Hostile `_selftest` submission: sys.exit() at module level (e.g. a leftover script ending): every test 0 with the reason."""
import torch

import sys

sys.exit(0)

EXPECTED = {'test_add': 'SystemExit', 'test_matmul': 'SystemExit', 'test_scale': 'SystemExit', 'test_means': 'SystemExit'}


def add(a, b):
    return a + b


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [sum(r) / len(r) for r in rows]
