"""Hostile `_selftest` submission: A syntax error: every test 0 with the SyntaxError."""
import torch


EXPECTED = {'test_add': 'SyntaxError', 'test_matmul': 'SyntaxError', 'test_scale': 'SyntaxError', 'test_means': 'SyntaxError'}


def add(a, b)
    return a + b


def matmul(a, b):
    return a @ b


def scale(x, s):
    return x * s


def means(rows):
    return [sum(r) / len(r) for r in rows]
