"""Hostile `_selftest` submission: Ignores SIGTERM and SIGINT, then `add` loops forever. `add` is lost with a timeout (the worker is killed with SIGKILL, which cannot be ignored); the other three keep full marks."""
import signal

import torch

signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)

EXPECTED = {'test_add': 'did not return within'}


def add(a, b):
    while True:
        pass


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [float(sum(r)) / len(r) for r in rows]
