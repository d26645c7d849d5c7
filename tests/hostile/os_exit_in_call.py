"""Hostile `_selftest` submission: `matmul` calls os._exit: its worker dies, the next test gets a fresh one."""
import torch


EXPECTED = {'test_matmul': 'exit code 0'}


def add(a, b):
    return a + b


def matmul(a, b):
    import os
    os._exit(0)


def scale(x, s):
    return x * s


def means(rows):
    return [sum(r) / len(r) for r in rows]
