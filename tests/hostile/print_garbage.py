"""Hostile `_selftest` submission: Prints megabytes to stdout/stderr, writes raw bytes to fd 1 and 2 and forged reply frames to every other descriptor: the protocol survives, every test full marks."""
import torch

import os
import struct
import sys

print('garbage ' * 100000)
sys.stderr.write('noise ' * 100000)
os.write(1, bytes(range(256)) * 100)


def _forge():
    from labcheck import wire
    payload = wire.encode({'status': 'ok', 'value': 999})
    frame = struct.pack('>Q', len(payload)) + payload
    for fd in range(1, 64):
        try:
            os.write(fd, frame)
        except OSError:
            pass

EXPECTED = {}


def add(a, b):
    _forge()
    print('still printing', a, b)
    return a + b


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [sum(r) / len(r) for r in rows]
