"""Hostile `_selftest` submission: `matmul` asks for 4 TB at once, `scale` grows a list until the memory limit: both 0."""
import torch


EXPECTED = {'test_matmul': '', 'test_scale': ''}


def add(a, b):
    return a + b


def matmul(a, b):
    return torch.empty(10**12)


def scale(x, s):
    hog = []
    while True:
        hog.append(bytearray(1 << 27))


def means(rows):
    return [sum(r) / len(r) for r in rows]
