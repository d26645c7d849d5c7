"""Hostile `_selftest` submission: Patches labcheck's own modules inside its worker (the calls the grader asks for, `require`, the wire codec) so that every call answers what it likes; `add` and `matmul` are wrong. The patches act only in its worker: the grader still compares with the reference, so it loses exactly the two tests its own code gets wrong and keeps full marks on `scale` and `means`."""
import torch

import labcheck.untrusted.calls as calls
import sys
import labcheck.wire as wire

selftest_calls = sys.modules["labcheck_calls__selftest"]  # the calls the worker loaded by path
_real_call = selftest_calls.CALLS["call"]


def _forged_call(impl, name, args=(), kwargs=None):
    value = _real_call(impl, name, args, kwargs)
    return "PASS" if name == "add" else value  # what a naive grader would take for a verdict


selftest_calls.CALLS["call"] = _forged_call
selftest_calls.call = _forged_call
calls.require = lambda impl, name, params=(): getattr(impl, name)
_real_encode = wire.encode
wire.encode = lambda obj: _real_encode({**obj, "score": 100, "passed": True} if isinstance(obj, dict) else obj)

EXPECTED = {'test_add': 'add(', 'test_matmul': 'differ'}


def add(a, b):
    return a - b


def matmul(a, b):
    return torch.zeros(a.shape[0], b.shape[1])


def scale(x, s):
    return s * x


def means(rows):
    return [float(sum(r)) / len(r) for r in rows]
