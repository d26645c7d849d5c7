"""Contract tests of the internal `_selftest` exercise (graded like a course exercise).

Not collected by the default run (the name does not match test_*.py); tests/test_grading.py
grades the hostile submissions of this folder with it:
    pytest tests/hostile/contract_selftest.py --labcheck-exercise _selftest
        --labcheck-reference tests/hostile/reference_selftest.py --labcheck-submission tests/hostile/X.py
"""
import math

import pytest
import torch

pytestmark = pytest.mark.exercise("_selftest")

A = torch.arange(6, dtype=torch.float32).reshape(2, 3)  # (2, 3)
B = torch.linspace(-1, 1, 12, dtype=torch.float32).reshape(3, 4)  # (3, 4)
ROWS_CASES = [[[1.0, 2.0, 3.0], [4.0, 4.0], [0.5], [-1.0, 1.0, 3.0, 5.0]], [[3.0, 5.0], [7.0], [1.0, 1.0, 4.0]]]
ADD_CASES = [(2, 3), (-1.5, 4.0), (10, -7)]


@pytest.mark.graded(points=1)
def test_add(lab):
    for a, b in ADD_CASES:  # several answers, so no constant passes
        got = lab.call("call", name="add", args=[a, b])
        want = lab.expect("call", name="add", args=[a, b])
        assert type(got) in (int, float) and got == want, f"add({a}, {b}) returned {got!r}, expected {want!r}"


@pytest.mark.graded(points=2)
def test_matmul(lab):
    got = lab.call("call_meta", name="matmul", args=[A, B])
    want = lab.expect("call_meta", name="matmul", args=[A, B])
    meta, value = got["meta"], got["value"]
    assert meta is not None, f"matmul returned a {type(value).__name__}, not a tensor"
    assert meta["device"] == "cpu", f"matmul returned a tensor on {meta['device']}, expected the input's cpu"
    assert meta["dtype"] == want["meta"]["dtype"], f"matmul returned {meta['dtype']}, expected {want['meta']['dtype']}"
    assert meta["shape"] == want["meta"]["shape"], f"matmul returned shape {meta['shape']}, expected {want['meta']['shape']}"
    assert bool(torch.isfinite(value).all()), "matmul returned NaN or inf"
    torch.testing.assert_close(value, want["value"], rtol=1e-5, atol=1e-6, msg=lambda m: f"matmul values differ: {m}")


@pytest.mark.graded(points=1)
def test_scale(lab):
    got = lab.call("call_meta", name="scale", args=[A, 0.5])
    want = lab.expect("call_meta", name="scale", args=[A, 0.5])
    assert got["meta"] is not None and got["meta"]["dtype"] == "torch.float32", (
        f"scale should keep float32, got {got['meta'] and got['meta']['dtype']}")
    torch.testing.assert_close(got["value"], want["value"], rtol=1e-6, atol=0.0)


@pytest.mark.graded(points=2)
def test_means(lab):
    right = total = 0
    wrong = []
    for rows in ROWS_CASES:
        got = lab.call("call", name="means", args=[rows])
        want = lab.expect("call", name="means", args=[rows])
        ok = isinstance(got, list) and len(got) == len(want)
        hits = sum(isinstance(g, float) and math.isclose(g, w, rel_tol=1e-9) for g, w in zip(got, want)) if ok else 0
        right, total = right + hits, total + len(want)
        if hits < len(want):
            wrong.append(f"means returned {got!r}, expected {want!r}")
    lab.partial(right / total, f"{right} of {total} row means right")
    assert not wrong, "; ".join(wrong) + ": dividing by a fixed length?"
