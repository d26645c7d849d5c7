"""Hostile `_selftest` submission: at import, 8 threads spin forever (issue #22: 16 threads spinning for 60 s
at import, which had no CPU deadline, slowed the students graded beside it). Loading now has a CPU deadline
as well as a wall-clock one, counted over all the worker's threads: the load fails fast, every test is lost
with a load error, and no spinning worker is left behind."""
import threading

EXPECTED = {'test_add': 'did not finish loading', 'test_matmul': 'did not finish loading', 'test_scale': 'did not finish loading', 'test_means': 'did not finish loading'}


def _spin():
    while True:
        pass


for _ in range(8):
    threading.Thread(target=_spin, daemon=True).start()
threading.Event().wait()  # the import never returns


def add(a, b):
    return a + b
