"""Hostile `_selftest` submission: An infinite loop at module level: loading times out, every test 0, graded quickly after."""
import torch

while True:
    pass

EXPECTED = {'test_add': 'did not finish loading', 'test_matmul': 'did not finish loading', 'test_scale': 'did not finish loading', 'test_means': 'did not finish loading'}


def add(a, b):
    return a + b


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [sum(r) / len(r) for r in rows]
