"""Hostile `_selftest` submission: A result on the meta device (not checkable) and a numpy array instead of a tensor."""
import torch


EXPECTED = {'test_matmul': 'cannot be checked', 'test_scale': 'float32'}


def add(a, b):
    return a + b


def matmul(a, b):
    return torch.empty(a.shape[0], b.shape[1], device='meta')


def scale(x, s):
    return (x * s).numpy()


def means(rows):
    return [sum(r) / len(r) for r in rows]
