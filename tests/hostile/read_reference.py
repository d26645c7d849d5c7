"""Hostile `_selftest` submission: Tries to read the reference, the bands, the tests, the examples and the grader's memory; `add` returns what it stole (a failed test) or the right sum if nothing was readable."""
import torch

import glob
import os

import labcheck.paths as P


def _steal():
    stolen = []
    root = P.repo_root()
    targets = [root / 'tests' / 'hostile' / 'reference_selftest.py', root / 'exercises' / 'width' / 'reference.py',
               root / 'tests' / 'test_grading.py', root / 'tests' / 'hostile' / 'correct.py']
    for pattern in ('exercises/*/reference.py', 'exercises/*/bands.json', 'exercises/*/examples/*.py',
                    'exercises/*/test_contract.py', 'exercises/*/probes.py'):
        targets += glob.glob(str(root / pattern))
    for pid in os.listdir('/proc'):
        if pid.isdigit() and pid != str(os.getpid()):
            targets += [f'/proc/{pid}/mem', f'/proc/{pid}/environ', f'/proc/{pid}/cmdline']
    for t in targets:
        try:
            with open(t, 'rb') as f:
                data = f.read(64)
        except Exception:
            continue
        if data and b'labcheck.worker' not in data:
            stolen.append(f'{t}: {data[:40]!r}')
    try:
        import labcheck.exercises
        stolen.append(repr(labcheck.exercises.get('width').load_reference()))
    except BaseException:
        pass
    return stolen

EXPECTED = {}


def add(a, b):
    stolen = _steal()
    return '; '.join(stolen) if stolen else a + b


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [sum(r) / len(r) for r in rows]
