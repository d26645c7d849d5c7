"""Hostile `_selftest` submission: `add` writes 50 MB to stdout and 50 MB to stderr. Both go to the worker's log file, whose size is capped (RLIMIT_FSIZE, 64 MB; Python ignores SIGXFSZ, so the write fails with "File too large"): `add` is lost with that error; the other three keep full marks, and the replies were never corrupted."""
import os
import sys

import torch

EXPECTED = {'test_add': 'File too large'}

CHUNK = "x" * (1 << 20)


def add(a, b):
    for _ in range(50):
        sys.stdout.write(CHUNK)
        sys.stderr.write(CHUNK)
    sys.stdout.flush()
    sys.stderr.flush()
    return a + b


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [float(sum(r)) / len(r) for r in rows]
