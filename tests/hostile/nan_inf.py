"""Hostile `_selftest` submission: NaN and inf outputs: the tests that get them fail."""
import torch


EXPECTED = {'test_add': 'nan', 'test_matmul': 'NaN', 'test_scale': ''}


def add(a, b):
    return float('nan')


def matmul(a, b):
    return torch.full((a.shape[0], b.shape[1]), float('nan'))


def scale(x, s):
    return x * float('inf')


def means(rows):
    return [sum(r) / len(r) for r in rows]
