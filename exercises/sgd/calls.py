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


def _tensors(param_dict) -> dict:
    """The dict's tensors as they are (dtype kept: the grader checks it on the values)."""
    return {str(k): v.detach().cpu().clone() for k, v in param_dict.items() if isinstance(v, torch.Tensor)}


@CALLS.call
def init_params(impl, param_dict: dict, seed: int, x, y, lr: float):
    """initialize_nn on the grader's seed-style dict after seeding every RNG with `seed`, its return value
    ignored (the course's cells ignore it), then one training step on the dict's tensors as the course's loop
    takes it: cross-entropy of plain_forward on (x, y), backward, p -= lr * p.grad for every leaf tensor that
    received a gradient. The dict's tensors before and after the step (the grader replays the step)."""
    initialize_nn = require(impl, "initialize_nn", ("param_dict",))
    param_dict = dict(param_dict)
    repro.seed_everything(seed)
    initialize_nn(param_dict)
    before, after, step_error = _tensors(param_dict), None, None
    try:
        params = {k: param_dict[k] for k in KEYS}
        F.cross_entropy(plain_forward(x, params), y).backward()
        with torch.no_grad():
            for p in params.values():
                if p.is_leaf and p.grad is not None:  # what a .grad-driven step sees (a non-leaf has none)
                    p -= lr * p.grad
        after = _tensors(param_dict)
    except Exception as e:  # no tensor requires grad, a wrong dtype or shape: the step cannot run
        step_error = f"{type(e).__name__}: {str(e)[:300]}"
    return {"tensors": before, "after_step": after, "step_error": step_error}


@CALLS.call
def forward(impl, params: dict, x, y, shapes: list):
    """my_nn on one batch in each of `shapes`; gradients of the cross-entropy of its (B, 784) output."""
    my_nn = require(impl, "my_nn", ("input", "param_dict"))
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
    sgd_step = require(impl, "sgd_step", ("params", "lr"))
    params = leaf_params(params)
    plist = [params[k] for k in KEYS]
    trajectory = []
    for lr in lrs:
        F.cross_entropy(plain_forward(x, params), y).backward()
        sgd_step(plist, lr)
        trajectory.append([p.detach().clone() for p in plist])
    return {"params": trajectory}


@CALLS.call
def sgd_then_step(impl, params: dict, x, y, lr: float, next_lr: float):
    """backward + sgd_step(the 6 tensors, lr), then the next round as a loop written against the contract
    takes it, with no zeroing of its own: backward, p -= next_lr * p.grad wherever p has a gradient. The
    parameters after each (the grader replays the second round from the first's parameters)."""
    sgd_step = require(impl, "sgd_step", ("params", "lr"))
    params = leaf_params(params)
    plist = [params[k] for k in KEYS]
    F.cross_entropy(plain_forward(x, params), y).backward()
    sgd_step(plist, lr)
    first = [p.detach().clone() for p in plist]
    F.cross_entropy(plain_forward(x, params), y).backward()
    with torch.no_grad():
        for p in plist:
            if p.grad is not None:
                p -= next_lr * p.grad
    return {"params": [first, [p.detach().clone() for p in plist]]}


@CALLS.call
def momentum_steps(impl, params: dict, x, y, lrs: list, mu: float):
    """len(lrs) rounds of backward + sgd_momentum_step(params, velocities, lr, mu), velocities from zeros."""
    step = require(impl, "sgd_momentum_step", ("params", "velocities", "lr", "mu"))
    params = leaf_params(params)
    plist = [params[k] for k in KEYS]
    velocities = [torch.zeros_like(p) for p in plist]
    trajectory, vel = [], []
    for lr in lrs:
        F.cross_entropy(plain_forward(x, params), y).backward()
        step(plist, velocities, lr, mu)
        trajectory.append([p.detach().clone() for p in plist])
        vel.append([torch.as_tensor(v).detach().clone() for v in velocities])
    return {"params": trajectory, "velocities": vel}


@CALLS.call
def evaluate_loader(impl, params: dict, x, y, batch_size: int):
    """evaluate(param_dict, DataLoader(x, y, batch_size, no shuffle, last batch kept))."""
    evaluate = require(impl, "evaluate", ("param_dict", "loader"))
    return _pair(evaluate(leaf_params(params), _loader(x, y, batch_size)), "evaluate")


@CALLS.call
def train(impl, params: dict, x, y, batch_size: int, lr: float, epochs: int, momentum: float):
    """train_sgd from the given parameters on an unshuffled DataLoader (same batches every epoch)."""
    train_sgd = require(impl, "train_sgd", ("param_dict", "loader"))
    param_dict = leaf_params(params)
    result = train_sgd(param_dict, _loader(x, y, batch_size), lr=lr, epochs=epochs, momentum=momentum)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(f"train_sgd should return (batch_losses, batch_accuracies), got {type(result).__name__}")
    losses, accs = result
    return {"losses": [_as_float(v, "a batch loss") for v in losses],
            "accuracies": [_as_float(v, "a batch accuracy") for v in accs],
            "params": {k: torch.as_tensor(param_dict[k]).detach().clone() for k in KEYS}}


@CALLS.call
def initialized(impl, param_dict: dict, seed: int):
    """The parameters initialize_nn draws (after seeding every RNG with `seed`); the grader evaluates them."""
    initialize_nn = require(impl, "initialize_nn", ("param_dict",))
    param_dict = dict(param_dict)
    repro.seed_everything(seed)
    initialize_nn(param_dict)
    return _tensors(param_dict)


@CALLS.call
def trained(impl, param_dict: dict, seed: int, x_train, y_train, epochs: int, lr: float, momentum: float,
            batch_size: int):
    """initialize_nn then train_sgd on a shuffled loader: the parameters it ends with (evaluated by the grader)."""
    initialize_nn = require(impl, "initialize_nn", ("param_dict",))
    train_sgd = require(impl, "train_sgd", ("param_dict", "loader"))
    param_dict = dict(param_dict)
    repro.seed_everything(seed)
    initialize_nn(param_dict)
    loader = _loader(x_train, y_train, batch_size, shuffle=True, seed=seed)
    train_sgd(param_dict, loader, lr=lr, epochs=epochs, momentum=momentum)
    return _tensors(param_dict)
