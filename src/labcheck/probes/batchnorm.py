"""Probes for `batchnorm` (BatchNorm MLPs, shared/CONTRACTS.md), and the canonical forward the grader uses.

The architecture is judged by behaviour, never by attribute names: a probe finds the submission's
nn.Linear and BatchNorm modules by type, gives the BatchNorms non-trivial affine parameters and
running statistics, and returns the model's outputs together with those parameters. The grader
recomputes the outputs with `canonical_forward` (Linear-ReLU, [Linear-BatchNorm-ReLU] * k, Linear)
from the submission's own parameters; BatchNorm after the ReLU, on the first layer, or missing
gives different numbers whatever the modules are called.

Training is judged from a trace of one `train()` call: a forward pre-hook records every input the
model sees (with its train/eval mode and whether autograd was on), so the grader can tell the
mini-batches (which samples, in which order, reshuffled or not), and the probe replays SGD on the
same batches from the same initial weights with and without momentum for comparison. Verdicts are
computed in the grader (tests/contract/test_batchnorm_contract.py), never here.
"""
from __future__ import annotations

import itertools
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from labcheck.probes import ContractError, Registry, require

PROBES = Registry()

TRAIN_PARAMS = ("model", "X", "Y", "X_test", "Y_test")
HISTORY_KEYS = ("train_accuracy", "test_accuracy", "train_loss", "test_loss", "epoch_time")


# ---------------------------------------------------------------------------------------------
# Helpers shared by the probes (worker side) and the grader


def _norm_modules(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _linear_modules(net: nn.Module) -> list[nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


def _clone(t):
    return None if t is None else t.detach().clone().cpu()


def describe(net: nn.Module) -> dict:
    """The model's parameters by module type, in registration order (plain data)."""
    owners = sorted({type(m).__name__ for m in net.modules()
                     if any(True for _ in m.parameters(recurse=False))
                     and not isinstance(m, (nn.Linear, nn.modules.batchnorm._BatchNorm))})
    return {
        "param_shapes": [list(p.shape) for p in net.parameters()],
        "linears": [{"weight": _clone(m.weight), "bias": _clone(m.bias)} for m in _linear_modules(net)],
        "norms": [{
            "weight": _clone(m.weight), "bias": _clone(m.bias),
            "running_mean": _clone(m.running_mean), "running_var": _clone(m.running_var),
            "eps": float(m.eps), "momentum": None if m.momentum is None else float(m.momentum),
            "type": type(m).__name__,
        } for m in _norm_modules(net)],
        "other_parameter_modules": owners,
    }


PLACEMENTS = ("before_relu", "after_relu", "first_layers", "unused")


def canonical_forward(x: torch.Tensor, linears: list[dict], norms: list[dict], training: bool = False,
                      momentum: float = 0.1, placement: str = "before_relu") -> tuple[torch.Tensor, list[dict]]:
    """Linear-ReLU, then Linear-BatchNorm-ReLU per norm, then Linear: the contract's MLP/MLP4.

    Returns the logits (B, 10) and, per BatchNorm, its input and its running statistics after
    this pass (updated with `momentum` when `training`, unbiased variance, as nn.BatchNorm1d).
    Other `placement`s are the classic mistakes, used to name one in feedback: "after_relu"
    (Linear-ReLU-BatchNorm), "first_layers" (the BatchNorms on the first hidden layers instead),
    "unused" (BatchNorm defined but never applied).
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement {placement!r} not in {PLACEMENTS}")
    if len(linears) != len(norms) + 2:
        raise ValueError(f"{len(linears)} Linear layers and {len(norms)} BatchNorms do not fit "
                         "Linear-ReLU, (Linear-BatchNorm-ReLU)*k, Linear")
    h = x.reshape(len(x), -1).double()  # (B, 784)
    stats = []

    def lin(h, layer):
        return F.linear(h, layer["weight"].double(), None if layer["bias"] is None else layer["bias"].double())

    def norm(z, bn):
        rm, rv = bn["running_mean"].double().clone(), bn["running_var"].double().clone()
        weight = None if bn["weight"] is None else bn["weight"].double()
        bias = None if bn["bias"] is None else bn["bias"].double()
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


def randomize_norms(net: nn.Module, x_stats: torch.Tensor, seed: int) -> None:
    """Give every BatchNorm realistic but non-default state: running statistics near those of a real
    batch (so outputs stay in a sane range) and random affine parameters (beta < 0 for some features,
    so a ReLU before or after the BatchNorm makes a difference)."""
    g = torch.Generator().manual_seed(seed)
    norms = _norm_modules(net)
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda m, a: inputs.__setitem__(m, a[0].detach().clone())) for m in norms]
    was_training = net.training
    net.train()
    with torch.no_grad():
        net(x_stats)
    net.train(was_training)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        for m in norms:
            z = inputs.get(m)
            if z is not None:  # statistics of its real input
                z = z.transpose(0, 1).reshape(z.shape[1], -1) if z.dim() > 1 else z[:, None]  # (C, B*)
                mean, var = z.mean(dim=1), z.var(dim=1)  # (C,)
            else:  # never called in forward(): still make it differ from the identity
                mean, var = torch.zeros(m.num_features), torch.ones(m.num_features)
            if m.running_mean is not None:
                m.running_mean.copy_(mean + 0.2 * var.sqrt() * torch.randn(mean.shape, generator=g))
                m.running_var.copy_(var * torch.empty(var.shape).uniform_(0.7, 1.4, generator=g) + 1e-3)
            if m.weight is not None:
                m.weight.copy_(torch.empty(m.weight.shape).uniform_(0.5, 1.5, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))


def _build(impl, model: str, seed: int) -> nn.Module:
    cls = require(impl, model)
    torch.manual_seed(seed)
    net = cls()
    if not isinstance(net, nn.Module):
        raise ContractError(f"`{model}()` returned a {type(net).__name__}, not a torch.nn.Module")
    return net


# ---------------------------------------------------------------------------------------------
# Probes


@PROBES.probe
def architecture(impl, model: str, seed: int, x: torch.Tensor, x_stats: torch.Tensor) -> dict:
    """Eval-mode outputs on `x` (whole batch and a few samples alone), with the parameters that made them."""
    net = _build(impl, model, seed)
    shapes = [list(p.shape) for p in net.parameters()]
    randomize_norms(net, x_stats, seed)
    net.eval()
    with torch.no_grad():
        out = net(x)  # (B, 10)
        alone = torch.cat([net(x[i : i + 1]) for i in range(min(4, len(x)))])  # (4, 10) one sample per call
    return {"param_shapes": shapes, "layers": describe(net), "out": out, "out_alone": alone,
            "num_parameters": sum(p.numel() for p in net.parameters())}


@PROBES.probe
def train_mode_pass(impl, model: str, seed: int, x: torch.Tensor, x_stats: torch.Tensor) -> dict:
    """One train-mode forward on `x`: outputs, and the BatchNorm state before and after it."""
    net = _build(impl, model, seed)
    randomize_norms(net, x_stats, seed)
    before = describe(net)
    net.train()
    with torch.no_grad():
        out = net(x)  # (B, 10), BatchNorm with batch statistics
    after = describe(net)
    return {"before": before, "after": after, "out": out}


def _match_rows(batch: torch.Tensor, X: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Index of each batch row in X by cosine similarity (robust to a rescaling such as /255)."""
    a = F.normalize(batch.reshape(len(batch), -1).double(), dim=1)  # (b, 784)
    b = F.normalize(X.reshape(len(X), -1).double(), dim=1)  # (N, 784)
    sim = a @ b.T  # (b, N)
    best, ids = sim.max(dim=1)
    return ids, bool((best > 1 - 1e-9).all())


def _plain(value):
    """History entries as they came (tensors stay tensors, so the grader can say so)."""
    if isinstance(value, (bool, int, float, str, torch.Tensor)) or value is None:
        return value
    try:
        import numpy as np

        if isinstance(value, (np.generic, np.ndarray)):
            return value
    except ImportError:  # pragma: no cover
        pass
    return repr(value)[:200]


@PROBES.probe
def train_trace(impl, model: str, seed: int, X: torch.Tensor, Y: torch.Tensor, X_test: torch.Tensor,
                Y_test: torch.Tensor, n_epochs: int, batch_size: int, lr: float, momentum: float) -> dict:
    """Run the submission's train() once and return what it did (see module docstring)."""
    train = require(impl, "train", TRAIN_PARAMS)
    net = _build(impl, model, seed)
    init = {k: v.detach().clone() for k, v in net.state_dict().items()}
    calls = []

    def record(module, args):
        if args and isinstance(args[0], torch.Tensor):
            calls.append((module.training, torch.is_grad_enabled(), args[0].detach().clone().cpu()))

    handle = net.register_forward_pre_hook(record)
    torch.manual_seed(seed + 1)
    start = time.perf_counter()
    history = train(net, X.clone(), Y.clone(), X_test.clone(), Y_test.clone(), n_epochs=n_epochs,
                    batch_size=batch_size, lr=lr, momentum=momentum)
    wall = time.perf_counter() - start
    handle.remove()
    if not isinstance(history, dict):
        raise ContractError(f"train() returned a {type(history).__name__}, not a dict")

    # The mini-batches: forward passes in train mode with autograd on (one per optimizer step).
    steps = [x for training, grad, x in calls if training and grad]
    others = [{"training": training, "grad": grad, "size": len(x)} for training, grad, x in calls
              if not (training and grad)]
    batch_ids, all_matched = [], True
    for xb in steps:
        ids, ok = _match_rows(xb, X)
        batch_ids.append(ids)
        all_matched &= ok

    # The final model in eval mode over both full sets.
    net.eval()
    with torch.no_grad():
        metrics = {}
        for split, xs, ys in (("train", X, Y), ("test", X_test, Y_test)):
            logits = net(xs.float())  # (N, 10)
            metrics[f"{split}_loss"] = F.cross_entropy(logits, ys).item()
            metrics[f"{split}_accuracy"] = (logits.argmax(dim=1) == ys).double().mean().item()

    # SGD replayed on the recorded batches from the same initial weights, with and without momentum.
    replays = {}
    if all_matched and steps:
        for name, mom in (("momentum", momentum), ("plain", 0.0)):
            twin = _build(impl, model, seed)
            twin.load_state_dict(init)
            twin.train()
            opt = torch.optim.SGD(twin.parameters(), lr=lr, momentum=mom)
            for xb, ids in zip(steps, batch_ids):
                loss = F.cross_entropy(twin(xb), Y[ids])
                opt.zero_grad()
                loss.backward()
                opt.step()
            replays[name] = [p.detach().clone() for p in twin.parameters()]

    return {
        "history": {str(k): [_plain(v) for v in vals] if isinstance(vals, (list, tuple)) else _plain(vals)
                    for k, vals in history.items()},
        "wall_time": wall,
        "batch_ids": batch_ids,
        "rows_matched": all_matched,
        "other_calls": others,
        "eval_metrics": metrics,
        "initial": [init[k].clone() for k, _ in net.named_parameters()] if all(
            k in init for k, _ in net.named_parameters()) else None,
        "final": [p.detach().clone() for p in net.parameters()],
        "replays": replays,
    }
