"""Probes for `batchnorm` (BatchNorm MLPs, shared/CONTRACTS.md), grader side, and the canonical forward.

The architecture is judged by behaviour, never by attribute names: the worker's call
(exercises/batchnorm/calls.py) returns the model's outputs together with its Linear and
BatchNorm parameters; the grader recomputes the outputs with `canonical_forward` (Linear-ReLU,
[Linear-BatchNorm-ReLU] * k, Linear) from the submission's own parameters; BatchNorm after the ReLU,
on the first layer, or missing gives different numbers whatever the modules are called.

Training is judged from a trace of one `train()` call: the worker returns every input the model saw
(with its train/eval mode and whether autograd was on), the initial and final parameters and the
trained model's eval-mode logits. Here, in the grader, the batches become sample ids (which samples,
in which order, reshuffled or not), the logits become losses and accuracies, and SGD is replayed on the
same batches from the same initial weights with and without momentum (`replay_sgd`, with the grader's
own torch.optim.SGD: a submission that patches torch in its worker changes nothing here).
"""
from __future__ import annotations

import itertools
import math
import os

import torch
import torch.nn.functional as F

from labcheck.probes import Probes
from labcheck.probes import calls_module

describe = calls_module("batchnorm").describe  # noqa: F401  (tests use it)

PROBES = Probes("batchnorm")
HISTORY_KEYS = ("train_accuracy", "test_accuracy", "train_loss", "test_loss", "epoch_time")


# ---------------------------------------------------------------------------------------------
# Helpers shared by the probes (worker side) and the grader


PLACEMENTS = ("before_relu", "after_relu", "first_layers", "unused")


def canonical_forward(x: torch.Tensor, linears: list[dict], norms: list[dict], training: bool = False,
                      momentum: float = 0.1, placement: str = "before_relu",
                      dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, list[dict]]:
    """Linear-ReLU, then Linear-BatchNorm-ReLU per norm, then Linear: the contract's MLP/MLP4.

    Returns the logits (B, 10) and, per BatchNorm, its input and its running statistics after
    this pass (updated with `momentum` when `training`, unbiased variance, as nn.BatchNorm1d).
    Other `placement`s are the classic mistakes, used to name one in feedback: "after_relu"
    (Linear-ReLU-BatchNorm), "first_layers" (the BatchNorms on the first hidden layers instead),
    "unused" (BatchNorm defined but never applied). In float64 by default; `dtype=torch.float32` computes
    as nn.Linear/nn.BatchNorm1d do (and stays differentiable in the layers' tensors: the SGD replay).
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement {placement!r} not in {PLACEMENTS}")
    if len(linears) != len(norms) + 2:
        raise ValueError(f"{len(linears)} Linear layers and {len(norms)} BatchNorms do not fit "
                         "Linear-ReLU, (Linear-BatchNorm-ReLU)*k, Linear")
    h = x.reshape(len(x), -1).to(dtype)  # (B, 784)
    stats = []

    def lin(h, layer):
        return F.linear(h, layer["weight"].to(dtype), None if layer["bias"] is None else layer["bias"].to(dtype))

    def norm(z, bn):
        rm, rv = bn["running_mean"].to(dtype).clone(), bn["running_var"].to(dtype).clone()
        weight = None if bn["weight"] is None else bn["weight"].to(dtype)
        bias = None if bn["bias"] is None else bn["bias"].to(dtype)
        stats.append({"input": z, "running_mean": rm, "running_var": rv})
        return F.batch_norm(z, rm, rv, weight, bias, training, momentum, bn["eps"])  # (B, 512)

    hidden = len(linears) - 1
    first = 0 if placement == "first_layers" else 1  # index of the first hidden layer with a BatchNorm
    for i, layer in enumerate(linears[:-1]):
        z = lin(h, layer)  # (B, 512)
        k = i - first
        has_norm = placement != "unused" and 0 <= k < len(norms) and i < hidden
        if has_norm and placement == "after_relu":
            h = norm(F.relu(z), norms[k])
        elif has_norm:
            h = F.relu(norm(z, norms[k]))
        else:
            h = F.relu(z)
    return lin(h, linears[-1]), stats  # (B, 10)


def layer_orders(linears: list[dict], norms: list[dict]):
    """Candidate forward orders of the found modules: the input layer first (784 inputs), the output
    layer last (10 outputs), every order of the hidden layers and of the BatchNorms in between.
    So a submission is not penalised for registering modules in another order than it applies them."""
    first = [i for i, m in enumerate(linears) if m["weight"].shape[-1] == 784]
    last = [i for i, m in enumerate(linears) if m["weight"].shape[0] == 10]
    for f, l in itertools.product(first, last):
        if f == l:
            continue
        middle = [i for i in range(len(linears)) if i not in (f, l)]
        for mid in itertools.islice(itertools.permutations(middle), 24):
            for norm_order in itertools.islice(itertools.permutations(range(len(norms))), 6):
                yield [linears[f], *(linears[i] for i in mid), linears[l]], [norms[j] for j in norm_order]


def match_canonical(x: torch.Tensor, got: torch.Tensor, layers: dict, training: bool = False,
                    rtol: float = 1e-4, atol: float = 1e-4, placement: str = "before_relu"):
    """(matched, best_max_abs_error, best_stats) over the candidate layer orders."""
    best = (False, math.inf, None)
    if len(layers["linears"]) != len(layers["norms"]) + 2:
        return best
    for linears, norms in layer_orders(layers["linears"], layers["norms"]):
        try:
            want, stats = canonical_forward(x, linears, norms, training=training, placement=placement)
        except (RuntimeError, ValueError):  # shapes that do not chain
            continue
        if want.shape != got.shape:
            continue
        err = (got.double() - want).abs().max().item()
        ok = torch.allclose(got.double(), want, rtol=rtol, atol=atol)
        if ok or err < best[1]:
            best = (ok, err, stats)
        if ok:
            break
    return best


def _match_rows(batch: torch.Tensor, X: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Index of each batch row in X by cosine similarity (robust to a rescaling such as /255)."""
    a = F.normalize(batch.reshape(len(batch), -1).double(), dim=1)  # (b, 784)
    b = F.normalize(X.reshape(len(X), -1).double(), dim=1)  # (N, 784)
    sim = a @ b.T  # (b, N)
    best, ids = sim.max(dim=1)
    return ids, bool((best > 1 - 1e-9).all())


def _chain_order(layers: dict) -> tuple[list[int], list[int]] | None:
    """Indices of the Linears and BatchNorms in the first canonical order whose shapes chain."""
    lin = [dict(m, _index=i) for i, m in enumerate(layers["linears"])]
    nrm = [dict(m, _index=i) for i, m in enumerate(layers["norms"])]
    if len(lin) != len(nrm) + 2:
        return None
    for linears, norms in layer_orders(lin, nrm):
        chain = [m["weight"].shape for m in linears]
        if all(a[0] == b[-1] for a, b in zip(chain[:-1], chain[1:])) and all(
                n["weight"] is None or n["weight"].shape[0] == m["weight"].shape[0]
                for n, m in zip(norms, linears[1:-1])):
            return [m["_index"] for m in linears], [n["_index"] for n in norms]
    return None


def _ordered(layers: dict, order, leaves: dict | None = None) -> tuple[list[dict], list[dict]]:
    """The Linear and BatchNorm dicts in forward order; weights swapped for `leaves` where given."""
    lin_ids, norm_ids = order

    def swap(kind, i, m):
        if leaves is None:
            return m
        return {**m, **{attr: leaves[(kind, i, attr)] for attr in ("weight", "bias") if (kind, i, attr) in leaves}}

    return ([swap("linear", i, layers["linears"][i]) for i in lin_ids],
            [swap("norm", i, layers["norms"][i]) for i in norm_ids])


def training_placement(layers: dict, x: torch.Tensor, out: torch.Tensor) -> str:
    """Where the submission's BatchNorm sits, read from its first training forward pass (`out` on `x` at the
    initial weights), so the replay follows the submission's own architecture; "before_relu" if none fits."""
    order = _chain_order(layers)
    if order is not None and out is not None:
        linears, norms = _ordered(layers, order)
        for placement in PLACEMENTS:
            want, _ = canonical_forward(x, linears, norms, training=True, placement=placement)
            if want.shape == out.shape and torch.allclose(out.double(), want, rtol=1e-3, atol=1e-4):
                return placement
    return "before_relu"


def replay_sgd(layers: dict, slots: list, steps: list, targets: list, lr: float, momentum: float,
               placement: str = "before_relu", threads: int = 1):
    """The parameters SGD(lr, momentum) on cross-entropy reaches from `layers` on these batches, computed
    in float32 with the grader's own torch (canonical_forward, the given BatchNorm placement), in the order
    `slots` gives (the submission's net.parameters()). None when the parameters do not chain as
    Linear, (Linear, BatchNorm)*k, Linear."""
    order = _chain_order(layers)
    if order is None or not slots or any(s is None for s in slots):
        return None
    leaves = {}
    for kind, modules in (("linear", layers["linears"]), ("norm", layers["norms"])):
        for i, m in enumerate(modules):
            for attr in ("weight", "bias"):
                if m[attr] is not None:
                    leaves[(kind, i, attr)] = m[attr].detach().clone().float().requires_grad_()
    linears, norms = _ordered(layers, order, leaves)
    opt = torch.optim.SGD(list(leaves.values()), lr=lr, momentum=momentum)
    saved_threads = torch.get_num_threads()
    # as many as the worker used (float sums depend on it), never more than this machine has: the count
    # comes from the worker
    torch.set_num_threads(max(1, min(int(threads), os.cpu_count() or 1)))
    try:
        for xb, yb in zip(steps, targets):
            logits, _ = canonical_forward(xb.float(), linears, norms, training=True, placement=placement,
                                          dtype=torch.float32)  # (B, 10)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(saved_threads)
    try:
        return [leaves[tuple(s)].detach().clone() for s in slots]
    except KeyError:
        return None


def _trace_result(raw: dict, inputs: dict, kwargs: dict) -> dict:
    """Batch ids, eval-mode metrics and SGD replays of one train() trace, computed here."""
    X, Y = inputs["X"], inputs["Y"]
    batch_ids, all_matched = [], True
    for xb in raw["steps"]:
        ids, ok = _match_rows(xb, X)
        batch_ids.append(ids)
        all_matched &= ok
    metrics = {}
    for split, ys in (("train", Y), ("test", inputs["Y_test"])):
        logits = raw["eval_logits"][split].float()  # (N, 10)
        if tuple(logits.shape) != (len(ys), 10):
            raise AssertionError(f"the trained model gives outputs of shape {tuple(logits.shape)} on the "
                                 f"{split} set, expected ({len(ys)}, 10)")
        metrics[f"{split}_loss"] = F.cross_entropy(logits, ys).item()
        metrics[f"{split}_accuracy"] = (logits.argmax(dim=1) == ys).double().mean().item()
    replays = {}
    if all_matched and raw["steps"]:
        targets = [Y[ids] for ids in batch_ids]
        placement = training_placement(raw["initial_layers"], raw["steps"][0], raw["first_output"])
        for name, mom in (("momentum", inputs["momentum"]), ("plain", 0.0)):
            replayed = replay_sgd(raw["initial_layers"], raw["slots"], raw["steps"], targets, inputs["lr"], mom,
                                  placement, raw.get("threads", 1))
            if replayed is not None:
                replays[name] = replayed
    return {"history": raw["history"], "wall_time": raw["wall_time"], "batch_ids": batch_ids,
            "rows_matched": all_matched, "other_calls": raw["other_calls"], "eval_metrics": metrics,
            "initial": raw["initial"], "final": raw["final"], "replays": replays}


PROBES.passthrough("architecture", "train_mode_pass", "train_defaults")
PROBES.add("train_trace", result=_trace_result)
architecture = PROBES["architecture"]  # callable in-process on a trusted module: architecture(ref, "MLP", ...)
train_mode_pass = PROBES["train_mode_pass"]
train_trace = PROBES["train_trace"]
