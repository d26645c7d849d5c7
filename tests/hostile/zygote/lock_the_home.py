"""At import, takes every permission away from the worker zygote's home (two levels above its cwd), the
folder above it, /tmp, /dev/shm and /dev/null, by descriptor (`os.fchmod`: no audit hook sees a path).
Before the zygote put permissions back, its clean-up could not list its home, took that for "nothing left",
reported clean, and every later child failed to make its scratch: the students graded after it on the
same job got 0 (issue #22). Its own functions are correct. (tests/test_zygote.py; as nobody,
tests/test_isolation.py)"""
import os

EXPECTED = {}


def _lock_all():
    home = os.path.realpath(os.path.join(os.getcwd(), "..", ".."))
    locked = []
    for path in (home, os.path.dirname(home), "/tmp", "/dev/shm", "/dev/null"):
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fchmod(fd, 0)
                locked.append(path)
            finally:
                os.close(fd)
        except OSError:
            pass
    return locked


LOCKED = _lock_all()


def add(a, b):
    return a + b


def matmul(a, b):
    return a @ b


def scale(x, s):
    return s * x


def means(rows):
    return [float(sum(r)) / len(r) for r in rows]
