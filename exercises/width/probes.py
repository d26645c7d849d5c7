"""Probes for the `width` exercise (hw2, performance vs width; contract in CONTRACTS.md), grader side.

Inputs are built here from seeds and sizes and sent to the worker (exercises/width/calls.py);
whatever is derived from a reply (norms of the weights, which inputs changed, the true accuracy of the
labels) is computed here from the grader's own copy of the inputs. `make_problem` is shared with the
graded tests, so the grader can rebuild the very same tensors to explain a wrong answer.
"""
from __future__ import annotations

import torch

from labcheck import repro
from labcheck.probes import Probes

PROBES = Probes("width")
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


def _problem(seed: int, n: int, d: int, width: int) -> dict:
    X, y, ws, bs = make_problem(seed, n, d, width)
    return {"X": X, "y": y, "ws": ws, "bs": bs}


def _mlp_inputs(seed: int, n: int, d: int, widths: list) -> dict:
    """Weights for layer sizes d, *widths, 10 (std 1/sqrt(fan_in)) and biases of std 0.1."""
    g = repro.generator(seed)
    X = torch.randn(n, d, generator=g)  # (n, d)
    sizes = [d, *widths, N_CLASSES]
    ws = [torch.randn(a, b, generator=g) / a**0.5 for a, b in zip(sizes[:-1], sizes[1:])]  # (d_j, d_j+1)
    bs = [0.1 * torch.randn(b, generator=g) for b in sizes[1:]]  # (d_j+1,)
    return {"X": X, "ws": ws, "bs": bs}


PROBES.add("mlp_forward", inputs=_mlp_inputs)


def _objective_inputs(seed: int, n: int, d: int, width: int, reg_params: list) -> dict:
    return {**_problem(seed, n, d, width), "reg_params": list(reg_params)}


def _objective_result(values, inputs, kwargs) -> dict:
    """The objective at each reg_param, and (computed here) the weights' squared norms and norms."""
    return {"values": values, "squared_norms": [float(w.pow(2).sum()) for w in inputs["ws"]],
            "norms": [float(w.norm()) for w in inputs["ws"]]}


PROBES.add("objective", inputs=_objective_inputs, result=_objective_result)


def _accuracy_inputs(seed: int, n: int, d: int, width: int) -> dict:
    """Labels that are the network's own predictions except for a number of wrong ones drawn from
    the seed (1 .. n-1), so the right accuracy differs from call to call and no constant passes."""
    problem = _problem(seed, n, d, width)
    X, ws, bs = problem["X"], problem["ws"], problem["bs"]
    scores = torch.relu(X @ ws[0] + bs[0]) @ ws[1] + bs[1]  # (n, K)
    y = scores.argmax(dim=1)  # (n,)
    g = repro.generator(seed + 104729)
    n_wrong = int(torch.randint(1, n, (1,), generator=g))
    wrong = torch.randperm(n, generator=g)[:n_wrong]  # (n_wrong,)
    y[wrong] = (y[wrong] + 1 + torch.randint(0, N_CLASSES - 1, (n_wrong,), generator=g)) % N_CLASSES
    return {**problem, "y": y}


def _accuracy_result(raw, inputs, kwargs) -> dict:
    X, y, ws, bs = inputs["X"], inputs["y"], inputs["ws"], inputs["bs"]
    scores = torch.relu(X @ ws[0] + bs[0]) @ ws[1] + bs[1]  # (n, K)
    return {**raw, "expected": float((scores.argmax(dim=1) == y).double().mean())}


PROBES.add("accuracy", inputs=_accuracy_inputs, result=_accuracy_result)


def _sgd_pass_inputs(seed: int, n: int, d: int, width: int, reg_param: float, learning_rate: float) -> dict:
    return {**_problem(seed, n, d, width), "seed": seed, "reg_param": reg_param, "learning_rate": learning_rate}


def _sgd_pass_result(raw, inputs, kwargs) -> dict:
    before = [*inputs["ws"], *inputs["bs"]]
    changed = [not (torch.is_tensor(a) and a.shape == b.shape and torch.equal(a, b))
               for a, b in zip(raw["inputs"], before)]
    return {**raw, "inputs_changed": changed}


PROBES.add("sgd_pass", inputs=_sgd_pass_inputs, result=_sgd_pass_result)
PROBES.passthrough("train_logs", "train_defaults", "divergent_lr", "divergent_defaults", "interpolation")


def _quadratic_diverges(curvature: float, steps: int = 50):
    """Gradient descent on 0.5 * L * w^2 from w = 1: it grows (diverges) exactly when lr > 2 / L."""
    def diverges(lr: float) -> bool:
        w = 1.0
        for _ in range(steps):
            w -= lr * curvature * w
        return not abs(w) <= 1.0
    return diverges
