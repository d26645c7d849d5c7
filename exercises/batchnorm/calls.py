"""Calls for `batchnorm` (BatchNorm MLPs; CONTRACTS.md `batchnorm`), worker side.

The architecture is judged by behaviour: a call finds the submission's nn.Linear and BatchNorm modules
by type, gives the BatchNorms non-trivial affine parameters and running statistics, and returns the
model's outputs together with those parameters; the grader recomputes the outputs from them
(exercises/batchnorm/probes.py.canonical_forward). `train_trace` runs the submission's train() once with a
forward pre-hook that records every input the model sees, and returns the batches, the initial and final
parameters and the trained model's eval-mode logits. Batch ids, metrics and SGD replays are the grader's.
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn

from labcheck.untrusted.calls import ContractError, Registry, require

CALLS = Registry()
# The contract's signatures as CONTRACT.md states them (tests/test_registry.py checks they agree): named in
# the message when a submission's own signature cannot take a call.
CONTRACT = {
    "MLP": "MLP()",
    "MLP4": "MLP4()",
    "train": "train(model, X, Y, X_test, Y_test, n_epochs=20, batch_size=64, lr=0.01, momentum=0.9)",
}

TRAIN_PARAMS = ("model", "X", "Y", "X_test", "Y_test")


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
    cls = require(impl, model, (), CONTRACT.get(model))
    torch.manual_seed(seed)
    net = cls()
    if not isinstance(net, nn.Module):
        raise ContractError(f"`{model}()` returned a {type(net).__name__}, not a torch.nn.Module")
    return net


@CALLS.call
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


@CALLS.call
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


def _slots(net: nn.Module) -> list:
    """Per parameter of net.parameters(): ["linear"|"norm", index among describe()'s modules, attribute]."""
    where = {}
    for kind, modules in (("linear", _linear_modules(net)), ("norm", _norm_modules(net))):
        for i, m in enumerate(modules):
            for attr in ("weight", "bias"):
                p = getattr(m, attr, None)
                if isinstance(p, nn.Parameter):
                    where[id(p)] = [kind, i, attr]
    return [where.get(id(p)) for p in net.parameters()]


@CALLS.call
def train_trace(impl, model: str, seed: int, X: torch.Tensor, Y: torch.Tensor, X_test: torch.Tensor,
                Y_test: torch.Tensor, n_epochs: int, batch_size: int, lr: float, momentum: float) -> dict:
    """Run the submission's train() once and return what it did (see the module docstring)."""
    train = require(impl, "train", TRAIN_PARAMS, CONTRACT["train"])
    net = _build(impl, model, seed)
    initial_layers = describe(net)
    initial = [p.detach().clone() for p in net.parameters()]
    calls = []

    def record(module, args):
        if args and isinstance(args[0], torch.Tensor):
            calls.append((module.training, torch.is_grad_enabled(), args[0].detach().clone().cpu()))

    first_output = []

    def record_output(module, args, out):
        if not first_output and module.training and torch.is_grad_enabled() and isinstance(out, torch.Tensor):
            first_output.append(out.detach().clone())

    handle = net.register_forward_pre_hook(record)
    out_handle = net.register_forward_hook(record_output)
    torch.manual_seed(seed + 1)
    start = time.perf_counter()
    history = train(net, X.clone(), Y.clone(), X_test.clone(), Y_test.clone(), n_epochs=n_epochs,
                    batch_size=batch_size, lr=lr, momentum=momentum)
    wall = time.perf_counter() - start
    handle.remove()
    out_handle.remove()
    if not isinstance(history, dict):
        raise ContractError(f"train() returned a {type(history).__name__}, not a dict")
    net.eval()
    with torch.no_grad():
        logits = {"train": net(X.float()).detach(), "test": net(X_test.float()).detach()}  # (N, 10) each
    return {
        "history": {str(k): [_plain(v) for v in vals] if isinstance(vals, (list, tuple)) else _plain(vals)
                    for k, vals in history.items()},
        "wall_time": wall,
        # the mini-batches: forward passes in train mode with autograd on (one per optimizer step)
        "steps": [x for training, grad, x in calls if training and grad],
        "other_calls": [{"training": training, "grad": grad, "size": len(x)} for training, grad, x in calls
                        if not (training and grad)],
        "eval_logits": logits,
        "initial_layers": initial_layers,
        "first_output": first_output[0] if first_output else None,  # (B, 10) of the first training step
        "initial": initial,
        "slots": _slots(net),
        "threads": torch.get_num_threads(),  # the grader's replay uses as many (float sums depend on it)
        "final": [p.detach().clone() for p in net.parameters()],
    }


@CALLS.call
def train_defaults(impl, model: str, seed: int, X: torch.Tensor, Y: torch.Tensor, X_test: torch.Tensor,
                   Y_test: torch.Tensor, settings: dict) -> dict:
    """train() from the same weights and RNG state, once with every setting in `settings` passed and once per
    setting with that one left out (train's own default then stands in): history lengths, losses, the batch
    sizes it trained on and its final parameters, for the grader to compare."""
    train = require(impl, "train", TRAIN_PARAMS, CONTRACT["train"])

    def run(kwargs: dict) -> dict:
        net = _build(impl, model, seed)
        sizes = []
        handle = net.register_forward_pre_hook(
            lambda module, args: sizes.append(len(args[0])) if module.training and torch.is_grad_enabled() else None)
        torch.manual_seed(seed + 1)
        history = train(net, X.clone(), Y.clone(), X_test.clone(), Y_test.clone(), **kwargs)
        handle.remove()
        if not isinstance(history, dict):
            raise ContractError(f"train() returned a {type(history).__name__}, not a dict")
        return {"lengths": {str(k): len(v) for k, v in history.items() if isinstance(v, (list, tuple))},
                "losses": [float(v) for key in ("train_loss", "test_loss") for v in history.get(key, [])],
                "batch_sizes": sizes, "final": [p.detach().clone() for p in net.parameters()]}

    return {"explicit": run(dict(settings)),
            "omitted": {name: run({k: v for k, v in settings.items() if k != name}) for name in settings}}
