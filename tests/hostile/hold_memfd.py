"""Hostile `_selftest` submission: `add` holds 1 GB in an anonymous memory file (os.memfd_create), memory
that RLIMIT_DATA never counts (issue #22: 4.5 GB held so). The seccomp filter refuses memfd_create at every
level that has seccomp: `add` then returns the right sum, and every test keeps its marks."""
import os

import torch

EXPECTED = {}


def add(a, b):
    try:
        fd = os.memfd_create("hog")
    except OSError:
        return a + b
    chunk = b"\1" * (1 << 20)
    for _ in range(1024):
        os.write(fd, chunk)
    return "held 1 GB in a memfd"


def matmul(a, b):
    return a @ b


def scale(x, s):
    return s * x


def means(rows):
    return [float(sum(r)) / len(r) for r in rows]
