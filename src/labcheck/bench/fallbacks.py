"""Minimal copies of the exercises' contract names, used by the bench only when exercises/<id>/reference.py is
missing, fails to import or lacks a name (labcheck.bench.workload.contract says which ran)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _fallback_initialize_nn(param_dict: dict) -> dict:
    for k, (d_in, d_out) in enumerate([(784, 100), (100, 100), (100, 10)]):
        param_dict[f"W{k}"] = (torch.randn(d_in, d_out) / math.sqrt(d_in)).requires_grad_()
        param_dict[f"b{k}"] = torch.zeros(d_out, requires_grad=True)
    return param_dict


def _fallback_my_nn(input: torch.Tensor, param_dict: dict) -> torch.Tensor:
    h = input.reshape(len(input), -1)  # (B, 784)
    h = F.relu(h @ param_dict["W0"] + param_dict["b0"])  # (B, 100)
    h = F.relu(h @ param_dict["W1"] + param_dict["b1"])  # (B, 100)
    return h @ param_dict["W2"] + param_dict["b2"]  # (B, 10)


@torch.no_grad()
def _fallback_sgd_step(params, lr: float) -> None:
    for p in params:
        if p.grad is not None:
            p -= lr * p.grad
            p.grad.zero_()


class _FallbackBatchnormMLP(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                         nn.Linear(512, 10))


def _fallback_build_net(width: int = 128) -> nn.Sequential:
    return nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width // 2), nn.ReLU(),
                         nn.Linear(width // 2, 10))


class _FallbackGradnormsMLP(nn.Module):
    def __init__(self, input_size: int, hidden_sizes: list[int], output_size: int):
        super().__init__()
        sizes = [input_size, *hidden_sizes]
        self.depth = len(hidden_sizes) + 1
        layers: list[nn.Module] = [nn.Flatten()]
        for d_in, d_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(d_in, d_out, bias=False), nn.ReLU()]
        layers += [nn.Linear(sizes[-1], output_size, bias=False), nn.LogSoftmax(dim=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _fallback_sensing_measurements(A: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    return torch.einsum("mij,ij->m", A, X)  # (m,)


def _fallback_sensing_grad(U: torch.Tensor, A: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    residual = torch.einsum("mij,ij->m", A, U @ U.T) - y  # (m,)
    S = torch.einsum("m,mij->ij", residual, A)  # (d, d)
    return (2.0 / len(A)) * (S + S.T) @ U  # (d, r)


@torch.no_grad()
def _fallback_sgd_one_pass(ws, bs, X, y, reg_param, learning_rate):
    """Per-sample SGD with the gradients of the 2-layer MLP written out (no autograd)."""
    (W0, W1), (b0, b1) = ws, bs
    n = X.shape[0]
    for _ in range(n):
        i = np.random.choice(n)
        x = X[i]  # (784,)
        a = torch.addmv(b0, W0.T, x)  # (H,)
        h = a.clamp_min(0)  # (H,)
        p = torch.softmax(torch.addmv(b1, W1.T, h), dim=0)  # (K,)
        p[y[i]] -= 1.0  # dLoss/dlogits
        gh = (W1 @ p) * (a > 0)  # (H,)
        if reg_param:
            W1.mul_(1 - learning_rate * reg_param)
            W0.mul_(1 - learning_rate * reg_param)
        W1.addr_(h, p, alpha=-learning_rate)
        b1.add_(p, alpha=-learning_rate)
        W0.addr_(x, gh, alpha=-learning_rate)
        b0.add_(gh, alpha=-learning_rate)
    return ws, bs


FALLBACKS = {
    "sgd": SimpleNamespace(initialize_nn=_fallback_initialize_nn, my_nn=_fallback_my_nn,
                           sgd_step=_fallback_sgd_step),
    "batchnorm": SimpleNamespace(MLP=_FallbackBatchnormMLP),
    "hyperparams": SimpleNamespace(build_net=_fallback_build_net),
    "gradnorms": SimpleNamespace(MNISTClassifierMLP=_FallbackGradnormsMLP,
                                 sensing_measurements=_fallback_sensing_measurements,
                                 sensing_grad=_fallback_sensing_grad),
    "width": SimpleNamespace(sgd_one_pass=_fallback_sgd_one_pass),  # no fast_sgd_pass: build uses this
}


