"""Hostile `_selftest` submission: Wrong shape, dtype and type: each test says which."""
import torch


EXPECTED = {'test_add': "'5'", 'test_matmul': 'shape', 'test_scale': 'float32'}


def add(a, b):
    return str(a + b)


def matmul(a, b):
    return (a @ b).T


def scale(x, s):
    return x.double() * s


def means(rows):
    return [sum(r) / len(r) for r in rows]
