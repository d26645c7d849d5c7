"""Hostile `_selftest` submission: `add` calls sys.exit: only that test fails."""
import torch


EXPECTED = {'test_add': 'SystemExit'}


def add(a, b):
    import sys
    sys.exit(1)


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [sum(r) / len(r) for r in rows]
