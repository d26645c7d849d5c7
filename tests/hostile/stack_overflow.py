"""Hostile `_selftest` submission: `add` overflows the C stack (CPython's own `faulthandler._stack_overflow()`, an unbounded C recursion; else a deeply nested list's repr with the recursion limit lifted): the worker dies with SIGSEGV. `add` is lost with the crash's signal; a fresh worker serves the other three, which keep full marks."""
import faulthandler
import sys

import torch

EXPECTED = {'test_add': 'SIGSEGV'}


def add(a, b):
    overflow = getattr(faulthandler, "_stack_overflow", None)
    if overflow is not None:
        faulthandler.disable()  # die by the signal itself, as a crash in C code does
        return overflow()
    sys.setrecursionlimit(10**8)
    nested = []
    for _ in range(150_000):
        nested = [nested]
    return repr(nested)


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [float(sum(r)) / len(r) for r in rows]
