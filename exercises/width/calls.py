"""Calls for the `width` exercise (hw2, performance vs width; CONTRACTS.md `width`).

Inputs arrive built by the grader (exercises/width/probes.py); results go back raw.
"""
from __future__ import annotations

import numpy as np
import torch

from labcheck import repro
from labcheck.untrusted.calls import Registry, require

CALLS = Registry()


@CALLS.call
def mlp_forward(impl, X, ws: list, bs: list):
    mlp = require(impl, "mlp", ("X", "ws", "bs"))
    with torch.no_grad():
        return torch.as_tensor(mlp(X, ws, bs)).float()  # (n, K)


@CALLS.call
def objective(impl, X, y, ws: list, bs: list, reg_params: list):
    compute_objective = require(impl, "compute_objective", ("ws", "bs", "X", "y", "reg_param"))
    values = []
    for reg in reg_params:
        with torch.no_grad():
            values.append(float(compute_objective(ws, bs, X, y, reg)))
    return values


@CALLS.call
def accuracy(impl, X, y, ws: list, bs: list):
    value = require(impl, "compute_accuracy", ("ws", "bs", "X", "y"))(ws, bs, X, y)
    return {"value": float(value)}


@CALLS.call
def sgd_pass(impl, X, y, ws: list, bs: list, seeds: list, reg_param: float, learning_rate: float):
    """sgd_one_pass once per seed on the same caller's ws and bs (numpy's global RNG seeded before each), its
    return value set aside between passes, as a loop written against the contract ("updates in place") runs
    it: after each pass, the caller's tensors, what the call returned, and where it left numpy's stream. An
    update that is not in place shows in the values: the caller's tensors stay put, and the next pass starts
    from the old ones."""
    sgd_one_pass = require(impl, "sgd_one_pass", ("ws", "bs", "X", "y", "reg_param", "learning_rate"))
    ws = [w.clone().requires_grad_() for w in ws]
    bs = [b.clone().requires_grad_() for b in bs]
    passes = []
    for seed in seeds:
        np.random.seed(seed)
        result = sgd_one_pass(ws, bs, X, y, reg_param, learning_rate)
        after_rng = float(np.random.random())  # where the student left numpy's global stream
        try:
            new_ws, new_bs = result
            returned = [torch.as_tensor(p).detach().clone().float() for p in (*new_ws, *new_bs)]
        except (TypeError, ValueError):
            returned = None
        passes.append({"caller": [p.detach().clone() for p in (*ws, *bs)], "returned": returned,
                       "next_random": after_rng})
    return {"passes": passes}


@CALLS.call
def train_logs(impl, seed: int, X_train, y_train, X_test, y_test, hidden_size: int, learning_rate: float,
               passes: int):
    train_model = require(impl, "train_model", ("X_train", "y_train", "X_test", "y_test", "hidden_size",
                                                "learning_rate"))
    repro.seed_everything(seed)
    logs = train_model(X_train, y_train, X_test, y_test, hidden_size, learning_rate, passes=passes)
    return np.asarray(logs, dtype=np.float64)


@CALLS.call
def divergent_lr(impl, cases: list):
    """find_divergent_lr on each case; `diverges` answers from the case's table of thresholds.

    A case is {"kind": "threshold", "value": t} (diverges iff lr > t) or {"kind": "quadratic", "value": L}
    (gradient descent on 0.5*L*w^2 from w = 1 for 50 steps grows: iff lr > 2/L, computed exactly here).
    The grader checks the returned eta itself; the calls made are returned for feedback only."""
    find_divergent_lr = require(impl, "find_divergent_lr", ("diverges",))
    out = []
    for case in cases:
        value = float(case["value"])
        threshold = value if case["kind"] == "threshold" else None
        calls: list[float] = []

        def diverges(lr, value=value, threshold=threshold, calls=calls):
            calls.append(float(lr))
            if threshold is not None:
                return float(lr) > threshold
            w = 1.0
            for _ in range(50):
                w -= float(lr) * value * w
            return not abs(w) <= 1.0

        if case.get("start") is None:
            eta = find_divergent_lr(diverges)
        else:
            eta = find_divergent_lr(diverges, start=case["start"])
        out.append({"eta": float(eta), "calls": calls[:200], "n_calls": len(calls)})
    return out


@CALLS.call
def interpolation(impl, logs_list: list):
    interpolation_pass = require(impl, "interpolation_pass", ("logs",))
    results = []
    for logs in logs_list:
        value = interpolation_pass(np.asarray(logs))
        results.append(None if value is None else int(value))
    return results
