"""Hostile `_selftest` submission: An exception at import: every test 0, the student's line in the message."""
import torch

raise RuntimeError('boom at import')

EXPECTED = {'test_add': 'boom at import', 'test_matmul': 'boom at import', 'test_scale': 'boom at import', 'test_means': 'boom at import'}


def add(a, b):
    return a + b


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [sum(r) / len(r) for r in rows]
