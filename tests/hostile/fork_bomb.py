"""Hostile `_selftest` submission: A fork bomb (os.fork loop), multiprocessing, subprocess, os.system and _posixsubprocess: `add` reports how many processes it started (a failed test) or the right sum if none."""
import torch

import os


def _spawn():
    started = []
    for _ in range(20):
        try:
            pid = os.fork()
        except Exception:
            break
        if pid == 0:
            os._exit(0)
        started.append('fork')
    try:
        import multiprocessing
        with multiprocessing.Pool(4) as pool:
            pool.map(abs, range(8))
        started.append('multiprocessing fork')
    except Exception:
        pass
    try:
        import multiprocessing
        p = multiprocessing.get_context('spawn').Process(target=abs, args=(1,))
        p.start()
        p.join()
        started.append('multiprocessing spawn')
    except Exception:
        pass
    try:
        import subprocess
        subprocess.Popen(['sleep', '300'])
        started.append('Popen')
    except Exception:
        pass
    try:
        if os.system('sleep 300 &') == 0:
            started.append('os.system')
    except Exception:
        pass
    try:
        import _posixsubprocess
        import subprocess
        r, w = os.pipe()
        _posixsubprocess.fork_exec([b'/bin/sleep', b'300'], [b'/bin/sleep'], True, (), None, None,
                                   -1, -1, -1, -1, -1, -1, r, w, True, False, -1, None, None, None, -1, None, False)
        started.append('_posixsubprocess')
    except Exception:
        pass
    return started

EXPECTED = {}


def add(a, b):
    started = _spawn()
    return '; '.join(started) if started else a + b


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [sum(r) / len(r) for r in rows]
