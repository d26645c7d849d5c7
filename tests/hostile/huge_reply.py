"""Hostile `_selftest` submission: `matmul` returns 400 MB instead of a (2, 4) result: refused by the reply size limit."""
import torch


EXPECTED = {'test_matmul': 'limit'}


def add(a, b):
    return a + b


def matmul(a, b):
    return torch.zeros(100_000_000)


def scale(x, s):
    return x * s


def means(rows):
    return [sum(r) / len(r) for r in rows]
