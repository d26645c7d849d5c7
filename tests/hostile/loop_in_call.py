"""Hostile `_selftest` submission: `add` never returns: that test times out, the others are graded normally."""
import torch


EXPECTED = {'test_add': 'did not return within'}


def add(a, b):
    while True:
        pass


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [sum(r) / len(r) for r in rows]
