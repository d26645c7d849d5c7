"""Hostile `_selftest` submission: Replaces torch's comparison functions (in its own worker only) and returns wrong values."""
import torch

import torch.testing

torch.testing.assert_close = lambda *a, **k: None
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
torch.isfinite = lambda t: torch.ones_like(t, dtype=torch.bool)
torch.Tensor.__eq__ = lambda self, other: True

EXPECTED = {'test_matmul': 'differ', 'test_scale': ''}


def add(a, b):
    return a + b


def matmul(a, b):
    return torch.zeros(a.shape[0], b.shape[1])


def scale(x, s):
    return x


def means(rows):
    return [sum(r) / len(r) for r in rows]
