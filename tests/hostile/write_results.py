"""Hostile `_selftest` submission: Tries to forge its results file, write into the repository and outside its scratch folder; `add` reports what it managed to write (a failed test) or the right sum."""
import torch

import glob
import json
import os

import labcheck.paths as P


def _forge():
    done = []
    root = P.repo_root()
    forged = json.dumps({'score': 100, 'tests': []})
    targets = glob.glob('/tmp/pytest-of-*/**/results.json', recursive=True)[:50]
    targets += glob.glob('/tmp/pytest-of-*/**/grader-results.json', recursive=True)[:50]
    targets += glob.glob(str(root / 'runs' / '**' / 'results.json'), recursive=True)[:50]
    targets += [str(root / 'PWNED.txt'), str(root / 'src' / 'labcheck' / 'report.py'), '/tmp/labcheck-pwned.txt',
                str(root / 'tests' / 'hostile' / 'reference_selftest.py')]
    for t in targets:
        for how in ('open', 'os.open'):
            try:
                if how == 'open':
                    with open(t, 'a') as f:
                        f.write(forged)
                else:
                    fd = os.open(t, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                    os.write(fd, forged.encode())
                    os.close(fd)
                done.append(f'{how} {t}')
            except Exception:
                pass
    for t in (str(root / 'PWNED_DIR'), '/tmp/labcheck-pwned-dir'):
        try:
            os.mkdir(t)
            done.append(f'mkdir {t}')
        except Exception:
            pass
    with open('scratch-ok.txt', 'w') as f:  # its own scratch folder is fine
        f.write('ok')
    return done

EXPECTED = {}


def add(a, b):
    done = _forge()
    return '; '.join(done) if done else a + b


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [sum(r) / len(r) for r in rows]
