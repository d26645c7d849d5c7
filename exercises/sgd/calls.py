"""Calls for the `sgd` exercise (lab 3, SGD from scratch; CONTRACTS.md `sgd`).

Inputs arrive built by the grader (exercises/sgd/probes.py). Where a call must drive the student's state
with a forward pass that is not under test (the gradients sgd_step consumes), it uses `plain_forward`,
so one mistake costs points in one place; the grader replays the same steps on the reference.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from labcheck import repro
from labcheck.untrusted.calls import Registry, require

CALLS = Registry()
# The contract's signatures as CONTRACT.md states them (tests/test_registry.py checks they agree): named in
# the message when a submission's own signature cannot take a call.
CONTRACT = {
    "initialize_nn": "initialize_nn(param_dict)",
    "my_nn": "my_nn(input, param_dict)",
    "sgd_step": "sgd_step(params, lr)",
    "sgd_momentum_step": "sgd_momentum_step(params, velocities, lr, mu)",
    "evaluate": "evaluate(param_dict, loader)",
    "train_sgd": "train_sgd(param_dict, loader, lr=0.01, epochs=20, momentum=0.0)",
}
KEYS = ("W0", "b0", "W1", "b1", "W2", "b2")


def leaf_params(params: dict) -> dict[str, torch.Tensor]:
    """Fresh float32 leaves requiring grad from plain tensors (what arrives over the wire)."""
    return {k: torch.as_tensor(params[k]).detach().clone().float().requires_grad_() for k in KEYS}


def plain_forward(x: torch.Tensor, params: dict) -> torch.Tensor:
    h = torch.relu(x.flatten(start_dim=1) @ params["W0"] + params["b0"])  # (B, 100)
    h = torch.relu(h @ params["W1"] + params["b1"])  # (B, 100)
    return h @ params["W2"] + params["b2"]  # (B, 10)


def _loader(x, y, batch_size, shuffle=False, seed=0):
    from torch.utils.data import DataLoader, TensorDataset

    generator = repro.generator(seed) if shuffle else None
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=generator)


def _as_float(value, what: str) -> float:
    try:
        return float(torch.as_tensor(value).detach().cpu().item())
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{what} should be a number, got {type(value).__name__}: {str(value)[:80]}") from None


def _pair(result, what: str) -> tuple[float, float]:
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(f"{what} should return a pair (mean_loss, accuracy), got {type(result).__name__}")
    return _as_float(result[0], f"{what}'s mean_loss"), _as_float(result[1], f"{what}'s accuracy")


def _grad_sizes(params) -> list:
    """Largest |grad| per parameter, or None where .grad is None (a measurement, not a verdict)."""
    return [None if p.grad is None else float(p.grad.detach().abs().max()) for p in params]


def _tensors(param_dict) -> dict:
    return {str(k): v.detach().cpu().float().clone() for k, v in param_dict.items() if isinstance(v, torch.Tensor)}


@CALLS.call
def init_params(impl, param_dict: dict, seed: int):
    """initialize_nn on the grader's seed-style dict, after seeding every RNG with `seed`: what it left in the
    dict (the course's cells ignore the return value) and what it returned."""
    initialize_nn = require(impl, "initialize_nn", ("param_dict",), CONTRACT["initialize_nn"])
    param_dict = dict(param_dict)
    given = dict(param_dict)
    repro.seed_everything(seed)
    returned = initialize_nn(param_dict)
    unchanged = [str(k) for k, v in param_dict.items() if k in given and v is given[k] and isinstance(v, torch.Tensor)
                 and not v.requires_grad]
    meta = {}
    for key, value in param_dict.items():
        if isinstance(value, torch.Tensor):
            meta[str(key)] = {"shape": list(value.shape), "dtype": str(value.dtype), "device": str(value.device),
                              "requires_grad": bool(value.requires_grad), "is_leaf": bool(value.is_leaf)}
        else:
            meta[str(key)] = {"type": type(value).__name__}
    return {"returned_same_dict": returned is param_dict, "returned_none": returned is None,
            "returned_type": type(returned).__name__, "unchanged": unchanged,
            "tensors": _tensors(param_dict), "meta": meta}


@CALLS.call
def forward(impl, params: dict, x, y, shapes: list):
    """my_nn on one batch in each of `shapes`; gradients of the cross-entropy of its (B, 784) output."""
    my_nn = require(impl, "my_nn", ("input", "param_dict"), CONTRACT["my_nn"])
    params = leaf_params(params)
    outputs = []
    for shape in shapes:
        try:
            with torch.no_grad():
                outputs.append(torch.as_tensor(my_nn(x.clone().reshape(shape), params)).detach().float())
        except Exception as e:  # one failing shape must not hide the others
            outputs.append(f"{type(e).__name__}: {str(e)[:300]}")
    grads, grad_error = None, None
    try:
        out = my_nn(x.clone(), params)  # (B, 10)
        if not (isinstance(out, torch.Tensor) and out.requires_grad):
            grad_error = "my_nn's output does not depend on the parameters through autograd (no grad_fn)"
        else:
            F.cross_entropy(out, y).backward()
            grads = {k: None if p.grad is None else p.grad.detach().clone() for k, p in params.items()}
    except Exception as e:
        grad_error = f"{type(e).__name__}: {str(e)[:300]}"
    return {"outputs": outputs, "grads": grads, "grad_error": grad_error}


@CALLS.call
def sgd_steps(impl, params: dict, x, y, lrs: list):
    """len(lrs) rounds of backward + sgd_step(list of the 6 tensors, lr); the call never zeroes grads."""
    sgd_step = require(impl, "sgd_step", ("params", "lr"), CONTRACT["sgd_step"])
    params = leaf_params(params)
    plist = [params[k] for k in KEYS]
    trajectory, grads_after = [], []
    for lr in lrs:
        F.cross_entropy(plain_forward(x, params), y).backward()
        sgd_step(plist, lr)
        trajectory.append([p.detach().clone() for p in plist])
        grads_after.append(_grad_sizes(plist))
    return {"params": trajectory, "grads_after": grads_after}


@CALLS.call
def momentum_steps(impl, params: dict, x, y, lrs: list, mu: float):
    """len(lrs) rounds of backward + sgd_momentum_step(params, velocities, lr, mu), velocities from zeros."""
    step = require(impl, "sgd_momentum_step", ("params", "velocities", "lr", "mu"),
                   CONTRACT["sgd_momentum_step"])
    params = leaf_params(params)
    plist = [params[k] for k in KEYS]
    velocities = [torch.zeros_like(p) for p in plist]
    trajectory, vel, grads_after = [], [], []
    for lr in lrs:
        F.cross_entropy(plain_forward(x, params), y).backward()
        step(plist, velocities, lr, mu)
        trajectory.append([p.detach().clone() for p in plist])
        vel.append([torch.as_tensor(v).detach().clone() for v in velocities])
        grads_after.append(_grad_sizes(plist))
    return {"params": trajectory, "velocities": vel, "grads_after": grads_after}


@CALLS.call
def evaluate_loader(impl, params: dict, x, y, batch_size: int):
    """evaluate(param_dict, DataLoader(x, y, batch_size, no shuffle, last batch kept))."""
    evaluate = require(impl, "evaluate", ("param_dict", "loader"), CONTRACT["evaluate"])
    return _pair(evaluate(leaf_params(params), _loader(x, y, batch_size)), "evaluate")


def _training(result, param_dict: dict) -> dict:
    """train_sgd's (batch_losses, batch_accuracies) and the parameters it left, as plain data."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(f"train_sgd should return (batch_losses, batch_accuracies), got {type(result).__name__}")
    losses, accs = result
    return {"losses": [_as_float(v, "a batch loss") for v in losses],
            "accuracies": [_as_float(v, "a batch accuracy") for v in accs],
            "params": {k: torch.as_tensor(param_dict[k]).detach().clone() for k in KEYS}}


@CALLS.call
def train(impl, params: dict, x, y, batch_size: int, lr: float, epochs: int, momentum: float):
    """train_sgd from the given parameters on an unshuffled DataLoader (same batches every epoch)."""
    train_sgd = require(impl, "train_sgd", ("param_dict", "loader"), CONTRACT["train_sgd"])
    param_dict = leaf_params(params)
    result = train_sgd(param_dict, _loader(x, y, batch_size), lr=lr, epochs=epochs, momentum=momentum)
    return _training(result, param_dict)


@CALLS.call
def train_defaults(impl, params: dict, x, y, batch_size: int, settings: dict):
    """train_sgd from the same parameters on the same batches, once with every setting in `settings` passed and
    once per setting with that one left out (train_sgd's own default then stands in): the grader compares them."""
    train_sgd = require(impl, "train_sgd", ("param_dict", "loader"), CONTRACT["train_sgd"])

    def run(kwargs: dict) -> dict:
        param_dict = leaf_params(params)
        return _training(train_sgd(param_dict, _loader(x, y, batch_size), **kwargs), param_dict)

    return {"explicit": run(dict(settings)),
            "omitted": {name: run({k: v for k, v in settings.items() if k != name}) for name in settings}}


@CALLS.call
def initialized(impl, param_dict: dict, seed: int):
    """The parameters initialize_nn draws (after seeding every RNG with `seed`); the grader evaluates them."""
    initialize_nn = require(impl, "initialize_nn", ("param_dict",), CONTRACT["initialize_nn"])
    param_dict = dict(param_dict)
    repro.seed_everything(seed)
    initialize_nn(param_dict)
    return _tensors(param_dict)


@CALLS.call
def trained(impl, param_dict: dict, seed: int, x_train, y_train, epochs: int, lr: float, momentum: float,
            batch_size: int):
    """initialize_nn then train_sgd on a shuffled loader: the parameters it ends with (evaluated by the grader)."""
    initialize_nn = require(impl, "initialize_nn", ("param_dict",), CONTRACT["initialize_nn"])
    train_sgd = require(impl, "train_sgd", ("param_dict", "loader"), CONTRACT["train_sgd"])
    param_dict = dict(param_dict)
    repro.seed_everything(seed)
    initialize_nn(param_dict)
    loader = _loader(x_train, y_train, batch_size, shuffle=True, seed=seed)
    train_sgd(param_dict, loader, lr=lr, epochs=epochs, momentum=momentum)
    return _tensors(param_dict)
