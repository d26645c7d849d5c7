"""Probes for the `hyperparams` exercise (a2_fashion_hyperparams.txt; names in CONTRACTS.md), grader side.

The inputs are the graded tests' own (real images, layer specs, budgets, drawn per run from its secret);
the worker's calls (exercises/hyperparams/calls.py) return raw results, which
exercises/hyperparams/test_contract.py compares with the same calls run on the reference. The networks
build_net and build_net_bn return are judged by what they compute: `canonical_forward` recomputes their
outputs here from their own parameters, as the contract's layer order would, and `net_result` names the
classic ways an output can differ (a final activation, BatchNorm after the ReLU).
"""
import torch
import torch.nn.functional as F

from labcheck.probes import Probes
from labcheck.probes import calls_module

FIT_KEYS = calls_module("hyperparams").FIT_KEYS  # noqa: F401  (the graded tests use it)

PROBES = Probes("hyperparams")
PROBES.passthrough("count_parameters_of", "noisy_draws", "fit_run")

BN_EPS = 1e-5  # nn.BatchNorm1d's default


def expected_shapes(width: int, bn: bool) -> list[tuple]:
    """net.parameters() shapes of Linear(784, w)-[BN]-ReLU-Linear(w, w//2)-[BN]-ReLU-Linear(w//2, 10)."""
    shapes = []
    for d_in, d_out in ((784, width), (width, width // 2)):
        shapes += [(d_out, d_in), (d_out,)] + ([(d_out,), (d_out,)] if bn else [])
    return shapes + [(10, width // 2), (10,)]


def canonical_forward(params: list, x: torch.Tensor, bn: bool, training: bool, bn_after_relu: bool = False):
    """The contract's network computed here (float64) from parameters in net.parameters() order: Linear, then
    BatchNorm1d (weight, bias; fresh running statistics 0 and 1 in eval mode, batch statistics in train mode)
    before each hidden ReLU, then the output Linear with no activation. `bn_after_relu` is the classic mistake."""
    p = [t.double() for t in params]
    h, i = x.double(), 0  # (N, 784)
    for _ in range(2):
        h = F.linear(h, p[i], p[i + 1])  # (N, hidden)
        i += 2
        if bn:
            gamma, beta = p[i], p[i + 1]
            i += 2
            if bn_after_relu:
                h = F.relu(h)
            mean, var = (h.mean(dim=0), h.var(dim=0, unbiased=False)) if training else (0.0, 1.0)
            h = (h - mean) / torch.sqrt(torch.as_tensor(var, dtype=torch.float64) + BN_EPS) * gamma + beta
            if not bn_after_relu:
                h = F.relu(h)
        else:
            h = F.relu(h)
    return F.linear(h, p[i], p[i + 1])  # (N, 10)


def _net_result(raw, inputs, kwargs) -> dict:
    """The outputs and, computed here from the net's own parameters, what the contract's layers give."""
    width = 128 if inputs["width"] is None else inputs["width"]
    bn = inputs["builder"] == "build_net_bn"
    params, x = raw["parameters"], inputs["x"]
    shapes = [tuple(p.shape) for p in params]
    out = {**raw, "shapes": shapes, "expected_shapes": expected_shapes(width, bn), "expected": None}
    if shapes != out["expected_shapes"]:
        return out
    logits = {mode: canonical_forward(params, x, bn, training=mode == "train") for mode in ("eval", "train")}
    out["expected"] = logits
    out["first_expected"] = F.linear(x.double(), params[0].double(), params[1].double())  # (N, width)
    out["variants"] = {  # what the eval-mode output is if it ends with an activation
        "Softmax": torch.softmax(logits["eval"], dim=1), "LogSoftmax": torch.log_softmax(logits["eval"], dim=1),
        "Sigmoid": torch.sigmoid(logits["eval"]), "ReLU": torch.relu(logits["eval"])}
    if bn:
        out["bn_after_relu"] = canonical_forward(params, x, bn, training=True, bn_after_relu=True)
    return out


PROBES.add("net_function", result=_net_result)
