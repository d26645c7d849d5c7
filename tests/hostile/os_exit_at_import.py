"""Hostile `_selftest` submission: os._exit() at module level kills the worker while loading: every test 0 with the reason."""
import torch

import os

os._exit(0)

EXPECTED = {'test_add': 'could not be loaded', 'test_matmul': 'could not be loaded', 'test_scale': 'could not be loaded', 'test_means': 'could not be loaded'}


def add(a, b):
    return a + b


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [sum(r) / len(r) for r in rows]
