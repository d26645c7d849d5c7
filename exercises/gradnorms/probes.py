"""Probes for exercise `gradnorms` (CONTRACTS.md section `gradnorms`), grader side.

Weights, images and sensing problems are built here from seeds and sizes and sent to the worker
(exercises/gradnorms/calls.py), which sets the weights in the model's Linear layers in call order
and returns raw results. Derived numbers (gradient norms of every parameter) are computed here.
"""
from __future__ import annotations

import math

import torch

from labcheck.probes import Probes
from labcheck.probes import calls_module

linears_in_call_order = calls_module("gradnorms").linears_in_call_order  # noqa: F401  (tests use it)

PROBES = Probes("gradnorms")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def mlp_weights(hidden_sizes, seed: int, input_size: int = 784, output_size: int = 10, scale: float = 1.0) -> list:
    """W_j ~ N(0, 1/fan_in) (times `scale`) of shape (out, in), input to output, from `seed`."""
    sizes = [input_size, *hidden_sizes, output_size]
    gen = _generator(seed)
    return [scale * torch.randn((b, a), generator=gen) / math.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]


def sensing_problem(seed: int, m: int, d: int, r: int):
    """(A (m, d, d), X* (d, d), y (m,)): A ~ N(0, 1), U* ~ N(0, 1)/sqrt(d), y_i = sum(A_i * X*) (trusted)."""
    gen = _generator(seed)
    A = torch.randn(m, d, d, generator=gen)  # (m, d, d)
    U_star = torch.randn(d, r, generator=gen) / math.sqrt(d)  # (d, r)
    X_star = U_star @ U_star.T  # (d, d)
    y = torch.einsum("mij,ij->m", A.double(), X_star.double()).float()  # (m,)
    return A, X_star, y, gen


# Part 1


def bias_free_logits(weights: list, x: torch.Tensor) -> torch.Tensor:
    """The contract's MLP before its LogSoftmax, in float64: Flatten, ReLU(x W_j^T) per hidden layer, x W^T."""
    h = x.reshape(len(x), -1).double()  # (n, 784)
    for w in weights[:-1]:
        h = torch.relu(h @ w.double().T)  # (n, hidden)
    return h @ weights[-1].double().T  # (n, 10)


def double_centered(z: torch.Tensor) -> torch.Tensor:
    """z less its row and column means: what no per-row or per-column shift changes (a LogSoftmax over either
    dimension, or none), so the layers can be judged apart from the output's normalisation."""
    z = z.double()
    return z - z.mean(dim=1, keepdim=True) - z.mean(dim=0, keepdim=True) + z.mean()


def _architecture_inputs(seed: int, hidden_sizes, n: int = 8) -> dict:
    return {"hidden_sizes": list(hidden_sizes), "weights": mlp_weights(hidden_sizes, seed),
            "x": torch.randn(n, 1, 28, 28, generator=_generator(seed + 1))}


def _architecture_result(raw, inputs, kwargs) -> dict:
    """The reported output and, computed here from the grader's weights, the bias-free layers' logits (both
    double-centered, so the output's LogSoftmax is test_mlp_forward's business)."""
    want = double_centered(bias_free_logits(inputs["weights"], inputs["x"]))
    got = None if raw["out"] is None else torch.as_tensor(raw["out"])
    return {**raw, "centered": None if got is None or got.shape != want.shape else double_centered(got),
            "expected_centered": want}


PROBES.add("mlp_architecture", inputs=_architecture_inputs, result=_architecture_result)
PROBES.add("mlp_forward", inputs=lambda seed, hidden_sizes, n=16: {
    "hidden_sizes": list(hidden_sizes), "weights": mlp_weights(hidden_sizes, seed),
    "x": torch.randn(n, 1, 28, 28, generator=_generator(seed + 1))})


def _gradient_norms_inputs(seed: int, hidden_sizes, n: int = 32) -> dict:
    gen = _generator(seed + 1)
    x = torch.randn(n, 1, 28, 28, generator=gen)  # (n, 1, 28, 28)
    set_grads = [0.01 * w.abs().mean() * torch.randn(w.shape, generator=gen) * (j + 1)  # (out, in): distinct scales
                 for j, w in enumerate(mlp_weights(hidden_sizes, seed))]
    return {"hidden_sizes": list(hidden_sizes), "weights": mlp_weights(hidden_sizes, seed), "x": x,
            "labels": torch.randint(0, 10, (n,), generator=gen), "set_grads": set_grads}


PROBES.add("gradient_norms", inputs=_gradient_norms_inputs, result=lambda raw, inputs, kw: {
    **raw, "set_grad_norms": [float(torch.linalg.matrix_norm(g.double())) for g in inputs["set_grads"]]})
PROBES.add("train_epochs", inputs=lambda images, labels, hidden_sizes, seed, batch_size, lr, epochs: {
    "images": images, "labels": labels, "hidden_sizes": list(hidden_sizes),
    "weights": mlp_weights(hidden_sizes, seed), "seed": seed, "batch_size": batch_size, "lr": lr, "epochs": epochs})
PROBES.add("test_epoch", inputs=lambda images, labels, hidden_sizes, seed, batch_size, weight_scale=1.0: {
    "images": images, "labels": labels, "hidden_sizes": list(hidden_sizes),
    "weights": mlp_weights(hidden_sizes, seed, scale=weight_scale), "batch_size": batch_size})


# Part 2


def _measurements_inputs(seed: int, m: int, d: int, symmetric: bool = False) -> dict:
    """Gaussian A (m, d, d) and a Gaussian X (symmetrized if asked)."""
    gen = _generator(seed)
    A = torch.randn(m, d, d, generator=gen)  # (m, d, d)
    X = torch.randn(d, d, generator=gen)  # (d, d)
    return {"A": A, "X": (X + X.T) / 2 if symmetric else X}


def _at_random_u(seed: int, m: int, d: int, r: int, R: int) -> dict:
    """A random U (d, R) on a rank-r problem (A_i not symmetric)."""
    A, _, y, gen = sensing_problem(seed, m, d, r)
    return {"U": torch.randn(d, R, generator=gen) / math.sqrt(d), "A": A, "y": y}  # U (d, R)


def _descent_inputs(seed: int, m: int, d: int, r: int, R: int, alpha: float, lr_scale: float, steps: int) -> dict:
    """U_0 = alpha * N(0, 1) (d, R) and lr = lr_scale / ||X*||_2."""
    A, X_star, y, gen = sensing_problem(seed, m, d, r)
    U0 = alpha * torch.randn(d, R, generator=gen)  # (d, R)
    lr = lr_scale / torch.linalg.matrix_norm(X_star.double(), ord=2).item()
    return {"U0": U0, "A": A, "y": y, "X_star": X_star, "lr": lr, "steps": steps}


PROBES.add("sensing_measurements", inputs=_measurements_inputs)
PROBES.add("sensing_loss", inputs=_at_random_u)
PROBES.add("sensing_grad", inputs=_at_random_u)
PROBES.add("gradient_descent", inputs=_descent_inputs,
           result=lambda raw, inputs, kw: {**raw, "X_star": inputs["X_star"]})
