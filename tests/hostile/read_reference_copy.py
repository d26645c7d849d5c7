"""Hostile `_selftest` submission: Tries to read copies of the reference placed outside the repository (the test puts them in /tmp and /var/tmp before grading: COPIES below); `add` returns what it read. With the whitelist file system (bubblewrap) nothing of them exists in the worker: full marks. Below that level the copies are readable and `add` is lost (the test states that outcome per level)."""
import glob
import os

import torch

COPIES = ['/tmp/labcheck-hostile-reference-copy', '/var/tmp/labcheck-hostile-reference-copy']
EXPECTED = {}
EXPECTED_BELOW_WHITELIST = {'test_add': 'add('}


def _read_copies():
    stolen = []
    for root in COPIES:
        for path in glob.glob(os.path.join(root, '**', '*.py'), recursive=True):
            try:
                with open(path) as f:
                    stolen.append(f.read(80))
            except OSError:
                continue
    return stolen


def add(a, b):
    stolen = _read_copies()
    return '; '.join(stolen) if stolen else a + b


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [float(sum(r)) / len(r) for r in rows]
