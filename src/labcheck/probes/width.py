"""Probes for the `width` exercise (hw2, performance vs width; contract in CONTRACTS.md).

Each probe builds its inputs from plain data (seeds, sizes, small data arrays), calls the
submission's contract names and returns plain data. `make_problem` is shared with the graded
tests, so the grader can rebuild the very same tensors to explain a wrong answer.
"""
from __future__ import annotations

import numpy as np
import torch

from labcheck import repro
from labcheck.probes import Registry, require

PROBES = Registry()
N_CLASSES = 10


def make_problem(seed: int, n: int, d: int, width: int, weight_scale: float | None = None):
    """X (n, d), y (n,), ws [(d, width), (width, 10)], bs [(width,), (10,)] from a private generator.

    Weights have std 1/sqrt(fan_in) (times `weight_scale` if given) and biases std 0.1, so that
    scores are O(1), some are negative and every ReLU pattern occurs.
    """
    g = repro.generator(seed)
    X = torch.randn(n, d, generator=g)  # (n, d)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)  # (n,)
    scale = 1.0 if weight_scale is None else weight_scale
    ws = [torch.randn(d, width, generator=g) * scale / d**0.5,  # (d, h)
          torch.randn(width, N_CLASSES, generator=g) * scale / width**0.5]  # (h, K)
    bs = [0.1 * torch.randn(width, generator=g), 0.1 * torch.randn(N_CLASSES, generator=g)]  # (h,), (K,)
    return X, y, ws, bs


@PROBES.probe
def mlp_forward(impl, seed: int, n: int, d: int, widths: list):
    """mlp on weights for layer sizes d, *widths, 10 (std 1/sqrt(fan_in)) and biases of std 0.1."""
    mlp = require(impl, "mlp", ("X", "ws", "bs"))
    g = repro.generator(seed)
    X = torch.randn(n, d, generator=g)  # (n, d)
    sizes = [d, *widths, N_CLASSES]
    ws = [torch.randn(a, b, generator=g) / a**0.5 for a, b in zip(sizes[:-1], sizes[1:])]  # (d_j, d_j+1)
    bs = [0.1 * torch.randn(b, generator=g) for b in sizes[1:]]  # (d_j+1,)
    with torch.no_grad():
        return torch.as_tensor(mlp(X, ws, bs)).float()  # (n, K)


@PROBES.probe
def objective(impl, seed: int, n: int, d: int, width: int, reg_params: list):
    """The objective at each reg_param, and (from the probe itself) the weights' squared norms and norms."""
    compute_objective = require(impl, "compute_objective", ("ws", "bs", "X", "y", "reg_param"))
    X, y, ws, bs = make_problem(seed, n, d, width)
    values = []
    for reg in reg_params:
        with torch.no_grad():
            values.append(float(compute_objective(ws, bs, X, y, reg)))
    return {
        "values": values,
        "squared_norms": [float(w.pow(2).sum()) for w in ws],
        "norms": [float(w.norm()) for w in ws],
    }


@PROBES.probe
def accuracy(impl, seed: int, n: int, d: int, width: int):
    compute_accuracy = require(impl, "compute_accuracy", ("ws", "bs", "X", "y"))
    X, y, ws, bs = make_problem(seed, n, d, width)
    # Make the labels the network's own predictions for a known fraction of the samples.
    with torch.no_grad():
        scores = torch.relu(X @ ws[0] + bs[0]) @ ws[1] + bs[1]  # (n, K)
    y = scores.argmax(dim=1)
    flip = torch.arange(n) % 4 == 0  # every 4th label is made wrong
    y[flip] = (y[flip] + 1) % N_CLASSES
    value = compute_accuracy(ws, bs, X, y)
    return {"value": float(value), "type": type(value).__name__, "expected": float(1.0 - flip.float().mean())}


@PROBES.probe
def sgd_pass(impl, seed: int, n: int, d: int, width: int, reg_param: float, learning_rate: float):
    """Parameters after one sgd_one_pass from numpy's global RNG seeded with `seed`, and in-place facts."""
    sgd_one_pass = require(impl, "sgd_one_pass", ("ws", "bs", "X", "y", "reg_param", "learning_rate"))
    X, y, ws, bs = make_problem(seed, n, d, width)
    ws = [w.clone().requires_grad_() for w in ws]
    bs = [b.clone().requires_grad_() for b in bs]
    before = [p.detach().clone() for p in (*ws, *bs)]
    np.random.seed(seed)
    result = sgd_one_pass(ws, bs, X, y, reg_param, learning_rate)
    after_rng = float(np.random.random())  # where the student left numpy's global stream
    try:
        new_ws, new_bs = result
        returned = [torch.as_tensor(p).detach().clone().float() for p in (*new_ws, *new_bs)]
    except (TypeError, ValueError):
        returned = None
    inputs = [p.detach().clone() for p in (*ws, *bs)]
    return {
        "returned": returned,  # what sgd_one_pass returned (None when not a (ws, bs) pair)
        "inputs": inputs,  # the caller's tensors after the call
        "inputs_changed": [not torch.equal(a, b) for a, b in zip(before, inputs)],
        "next_random": after_rng,
    }


@PROBES.probe
def train_logs(impl, seed: int, X_train, y_train, X_test, y_test, hidden_size: int, learning_rate: float,
               passes: int):
    train_model = require(impl, "train_model", ("X_train", "y_train", "X_test", "y_test", "hidden_size",
                                                "learning_rate"))
    repro.seed_everything(seed)
    logs = train_model(X_train, y_train, X_test, y_test, hidden_size, learning_rate, passes=passes)
    return np.asarray(logs, dtype=np.float64)


def _quadratic_diverges(curvature: float, steps: int = 50):
    """Gradient descent on 0.5 * L * w^2 from w = 1: it grows (diverges) exactly when lr > 2 / L."""
    def diverges(lr: float) -> bool:
        w = 1.0
        for _ in range(steps):
            w -= lr * curvature * w
        return not abs(w) <= 1.0
    return diverges


@PROBES.probe
def divergent_lr(impl, cases: list):
    """find_divergent_lr on each case {"kind": "threshold"|"quadratic", "value": float, "start": float|None}."""
    find_divergent_lr = require(impl, "find_divergent_lr", ("diverges",))
    out = []
    for case in cases:
        if case["kind"] == "threshold":
            threshold = float(case["value"])
            rule = lambda lr, t=threshold: lr > t  # noqa: E731
        else:
            rule = _quadratic_diverges(float(case["value"]))
        calls: list[float] = []

        def diverges(lr, rule=rule, calls=calls):
            calls.append(float(lr))
            return bool(rule(float(lr)))

        if case.get("start") is None:
            eta = find_divergent_lr(diverges)
        else:
            eta = find_divergent_lr(diverges, start=case["start"])
        out.append({"eta": float(eta), "calls": calls[:200], "n_calls": len(calls)})
    return out


@PROBES.probe
def interpolation(impl, logs_list: list):
    interpolation_pass = require(impl, "interpolation_pass", ("logs",))
    results = []
    for logs in logs_list:
        value = interpolation_pass(np.asarray(logs))
        results.append(None if value is None else int(value))
    return results
