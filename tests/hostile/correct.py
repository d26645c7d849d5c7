"""A correct `_selftest` submission (the control case): full marks."""
import torch

EXPECTED = {}


def add(a, b):
    return a + b


def matmul(a, b):
    return torch.matmul(a, b)


def scale(x, s):
    return s * x


def means(rows):
    return [float(sum(r)) / len(r) for r in rows]
