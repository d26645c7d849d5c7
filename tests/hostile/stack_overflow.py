"""Hostile `_selftest` submission: `add` lifts the recursion limit and recurses until the C stack overflows (the worker dies with SIGSEGV). `add` is lost with the crash's signal; a fresh worker serves the other three, which keep full marks."""
import sys

import torch

EXPECTED = {'test_add': 'SIGSEGV'}


def _deeper(n):
    return _deeper(n + 1) + 1


def add(a, b):
    sys.setrecursionlimit(10**8)
    return _deeper(0)


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [float(sum(r)) / len(r) for r in rows]
