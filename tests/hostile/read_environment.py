"""Hostile `_selftest` submission: Reads its environment and /proc (every process's environ and cmdline, mounts) looking for the grader's secrets (the test puts LABCHECK_HOSTILE_CANARY in the grader's environment; the graders also hold the secret the graded inputs are drawn from, LABCHECK_SECRET, which the suite fixes to "labcheck's own tests") and for the paths of the reference and tests; `add` returns what it found. The worker's environment is built from scratch and its /proc shows only its own processes: nothing is found, full marks."""
import os

import torch

EXPECTED = {}
SECRETS = (b'LABCHECK_HOSTILE_CANARY', b'reference_selftest', b'contract_selftest', b'LABCHECK_SECRET',
           b"labcheck's own tests")


def _look():
    found = [k for k in os.environ if k.encode() in SECRETS]
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        for name in ('environ', 'cmdline'):
            try:
                with open(f'/proc/{pid}/{name}', 'rb') as f:
                    data = f.read()
            except OSError:
                continue
            found += [f'/proc/{pid}/{name}: {s.decode()}' for s in SECRETS if s in data]
    for name in ('/proc/self/mounts', '/proc/self/mountinfo'):
        try:
            with open(name, 'rb') as f:
                data = f.read()
        except OSError:
            continue
        found += [f'{name}: {s.decode()}' for s in SECRETS if s in data]
    return found


def add(a, b):
    found = _look()
    return '; '.join(found) if found else a + b


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [float(sum(r)) / len(r) for r in rows]
