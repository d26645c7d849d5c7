"""Hostile `_selftest` submission: Replaces builtins (sum, len, round, print, open) in its worker at import. Its own `means` then uses the broken `sum` and is wrong (test_means lost); `add`, `matmul` and `scale` do not use them and keep full marks: the grader's comparisons do not run in the worker."""
import builtins

import torch

builtins.sum = lambda *a, **k: 0.0
builtins.round = lambda *a, **k: 0
builtins.print = lambda *a, **k: None
builtins.open = lambda *a, **k: (_ for _ in ()).throw(OSError("no files"))

EXPECTED = {'test_means': 'means returned'}


def add(a, b):
    return a + b


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [sum(r) / len(r) for r in rows]
