"""Calls for the `width` exercise (hw2, performance vs width; CONTRACTS.md `width`).

Inputs arrive built by the grader (exercises/width/probes.py); results go back raw.
"""
from __future__ import annotations

import numpy as np
import torch

from labcheck import repro
from labcheck.untrusted.calls import Registry, require

CALLS = Registry()
# The contract's signatures as CONTRACT.md states them (tests/test_registry.py checks they agree): named in
# the message when a submission's own signature cannot take a call.
CONTRACT = {
    "mlp": "mlp(X, ws, bs)",
    "compute_objective": "compute_objective(ws, bs, X, y, reg_param)",
    "compute_accuracy": "compute_accuracy(ws, bs, X, y)",
    "sgd_one_pass": "sgd_one_pass(ws, bs, X, y, reg_param, learning_rate)",
    "train_model": ("train_model(X_train, y_train, X_test, y_test, hidden_size, learning_rate, passes=120, "
                    "reg_param=0.0)"),
    "find_divergent_lr": "find_divergent_lr(diverges, start=1e-2)",
    "interpolation_pass": "interpolation_pass(logs)",
}


@CALLS.call
def mlp_forward(impl, X, ws: list, bs: list):
    mlp = require(impl, "mlp", ("X", "ws", "bs"), CONTRACT["mlp"])
    with torch.no_grad():
        return torch.as_tensor(mlp(X, ws, bs)).float()  # (n, K)


@CALLS.call
def objective(impl, X, y, ws: list, bs: list, reg_params: list):
    compute_objective = require(impl, "compute_objective", ("ws", "bs", "X", "y", "reg_param"),
                                CONTRACT["compute_objective"])
    values = []
    for reg in reg_params:
        with torch.no_grad():
            values.append(float(compute_objective(ws, bs, X, y, reg)))
    return values


@CALLS.call
def accuracy(impl, X, y, ws: list, bs: list):
    compute_accuracy = require(impl, "compute_accuracy", ("ws", "bs", "X", "y"), CONTRACT["compute_accuracy"])
    value = compute_accuracy(ws, bs, X, y)
    return {"value": float(value), "type": type(value).__name__}


@CALLS.call
def sgd_pass(impl, X, y, ws: list, bs: list, seed: int, reg_param: float, learning_rate: float):
    """One sgd_one_pass from numpy's global RNG seeded with `seed`: what it returned, the caller's tensors."""
    sgd_one_pass = require(impl, "sgd_one_pass", ("ws", "bs", "X", "y", "reg_param", "learning_rate"),
                           CONTRACT["sgd_one_pass"])
    ws = [w.clone().requires_grad_() for w in ws]
    bs = [b.clone().requires_grad_() for b in bs]
    np.random.seed(seed)
    result = sgd_one_pass(ws, bs, X, y, reg_param, learning_rate)
    after_rng = float(np.random.random())  # where the student left numpy's global stream
    try:
        new_ws, new_bs = result
        returned = [torch.as_tensor(p).detach().clone().float() for p in (*new_ws, *new_bs)]
    except (TypeError, ValueError):
        returned = None
    return {"returned": returned, "inputs": [p.detach().clone() for p in (*ws, *bs)], "next_random": after_rng}


@CALLS.call
def train_logs(impl, seed: int, X_train, y_train, X_test, y_test, hidden_size: int, learning_rate: float,
               passes: int):
    train_model = require(impl, "train_model", ("X_train", "y_train", "X_test", "y_test", "hidden_size",
                                                "learning_rate"), CONTRACT["train_model"])
    repro.seed_everything(seed)
    logs = train_model(X_train, y_train, X_test, y_test, hidden_size, learning_rate, passes=passes)
    return np.asarray(logs, dtype=np.float64)


@CALLS.call
def train_defaults(impl, seed: int, X_train, y_train, X_test, y_test, hidden_size: int, learning_rate: float,
                   settings: dict):
    """train_model's logs from the same seeds, once with every setting in `settings` passed and once per setting
    with that one left out (its own default then stands in): the grader compares them."""
    train_model = require(impl, "train_model", ("X_train", "y_train", "X_test", "y_test", "hidden_size",
                                                "learning_rate"), CONTRACT["train_model"])

    def run(kwargs: dict):
        repro.seed_everything(seed)
        return np.asarray(train_model(X_train, y_train, X_test, y_test, hidden_size, learning_rate, **kwargs),
                          dtype=np.float64)

    return {"explicit": run(dict(settings)),
            "omitted": {name: run({k: v for k, v in settings.items() if k != name}) for name in settings}}


def _divergent(find_divergent_lr, case: dict, settings: dict) -> dict:
    """find_divergent_lr on one case; `diverges` answers from the case (see divergent_lr) and records its calls."""
    value = float(case["value"])
    threshold = value if case["kind"] == "threshold" else None
    calls: list[float] = []

    def diverges(lr):
        calls.append(float(lr))
        if threshold is not None:
            return float(lr) > threshold
        w = 1.0
        for _ in range(50):
            w -= float(lr) * value * w
        return not abs(w) <= 1.0

    eta = find_divergent_lr(diverges, **settings)
    return {"eta": float(eta), "calls": calls[:200], "n_calls": len(calls)}


@CALLS.call
def divergent_lr(impl, cases: list):
    """find_divergent_lr on each case; `diverges` answers from the case's table of thresholds.

    A case is {"kind": "threshold", "value": t} (diverges iff lr > t) or {"kind": "quadratic", "value": L}
    (gradient descent on 0.5*L*w^2 from w = 1 for 50 steps grows: iff lr > 2/L, computed exactly here).
    The grader checks the returned eta itself; the calls made are returned for feedback only."""
    find_divergent_lr = require(impl, "find_divergent_lr", ("diverges",), CONTRACT["find_divergent_lr"])
    return [_divergent(find_divergent_lr, case, {} if case.get("start") is None else {"start": case["start"]})
            for case in cases]


@CALLS.call
def divergent_defaults(impl, cases: list, settings: dict):
    """Per case, find_divergent_lr with every setting in `settings` passed and with each left out (its own default
    then stands in): the learning rates it tried and what it returned, for the grader to compare."""
    find_divergent_lr = require(impl, "find_divergent_lr", ("diverges",), CONTRACT["find_divergent_lr"])
    return [{"explicit": _divergent(find_divergent_lr, case, dict(settings)),
             "omitted": {name: _divergent(find_divergent_lr, case, {k: v for k, v in settings.items() if k != name})
                         for name in settings}} for case in cases]


@CALLS.call
def interpolation(impl, logs_list: list):
    interpolation_pass = require(impl, "interpolation_pass", ("logs",), CONTRACT["interpolation_pass"])
    results = []
    for logs in logs_list:
        value = interpolation_pass(np.asarray(logs))
        results.append(None if value is None else int(value))
    return results
