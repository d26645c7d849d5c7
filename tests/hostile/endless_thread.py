"""Hostile `_selftest` submission: Starts a background thread at import that never ends (busy, and ignores everything). Its functions are correct: full marks, and the worker (thread included) is gone when grading ends."""
import threading

import torch


def _forever():
    n = 0
    while True:
        n += 1


threading.Thread(target=_forever, daemon=False).start()

EXPECTED = {}


def add(a, b):
    return a + b


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [float(sum(r)) / len(r) for r in rows]
