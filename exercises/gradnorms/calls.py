"""Calls for exercise `gradnorms` (CONTRACTS.md `gradnorms`): MLP gradient norms, matrix sensing; worker side.

Weights and data arrive from the grader (exercises/gradnorms/probes.py). The call sets the weights into the
model's Linear layers in the order the forward pass calls them (forward hooks), so the same weights give
the same network whatever the student named or registered their layers. Results go back raw.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn
import torch.nn.functional as F

from labcheck.untrusted.calls import ContractError, Registry, require

CALLS = Registry()
# The contract's signatures as CONTRACT.md states them (tests/test_registry.py checks they agree): named in
# the message when a submission's own signature cannot take a call.
CONTRACT = {
    "MNISTClassifierMLP": "MNISTClassifierMLP(input_size, hidden_sizes, output_size)",
    "get_gradient_norms": "get_gradient_norms(model)",
    "train_one_epoch": "train_one_epoch(train_loader, model, device, optimizer, epoch=None)",
    "test_one_epoch": "test_one_epoch(test_loader, model, device)",
    "sensing_measurements": "sensing_measurements(A, X)",
    "sensing_loss": "sensing_loss(U, A, y)",
    "sensing_grad": "sensing_grad(U, A, y)",
    "gradient_descent": "gradient_descent(U0, A, y, X_star, lr, steps)",
}

MLP_PARAMS = ("input_size", "hidden_sizes", "output_size")
EPOCH_PARAMS = ("train_loader", "model", "device", "optimizer")
TEST_PARAMS = ("test_loader", "model", "device")


def linears_in_call_order(model: nn.Module, x: torch.Tensor) -> tuple[list[nn.Linear], torch.Tensor]:
    """The model's nn.Linear modules in the order a forward pass on `x` first calls them, and the output."""
    called: list[nn.Linear] = []
    hooks = [module.register_forward_hook(lambda mod, inp, out: called.append(mod) if mod not in called else None)
             for module in model.modules() if isinstance(module, nn.Linear)]
    try:
        out = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return called, out


def build_model(impl, hidden_sizes, weights: list, input_size: int = 784, output_size: int = 10):
    """The submission's MLP with the grader's weights set in call order; biases (if any) zeroed."""
    cls = require(impl, "MNISTClassifierMLP", MLP_PARAMS, CONTRACT["MNISTClassifierMLP"])
    model = cls(input_size, list(hidden_sizes), output_size)
    with torch.no_grad():
        linears, _ = linears_in_call_order(model, torch.zeros(2, 1, 28, 28))
    if len(linears) != len(weights):
        raise ContractError(f"the forward pass calls {len(linears)} Linear layers; hidden_sizes={list(hidden_sizes)} "
                            f"needs {len(weights)}")
    with torch.no_grad():
        for j, (linear, w) in enumerate(zip(linears, weights)):
            if tuple(linear.weight.shape) != tuple(w.shape):
                raise ContractError(f"Linear layer {j + 1} (in call order) has weight shape "
                                    f"{tuple(linear.weight.shape)}; expected {tuple(w.shape)}")
            linear.weight.copy_(w)
            if linear.bias is not None:
                linear.bias.zero_()
    return model, linears


def _floats(values, name: str) -> list[float]:
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError, RuntimeError) as e:
        raise ContractError(f"{name} must return a list of floats, got {type(values).__name__}: {e}") from None


def _image_loader(images, labels, batch_size: int, shuffle_seed: int | None):
    dataset = torch.utils.data.TensorDataset(images.float(), labels.long())
    gen = torch.Generator().manual_seed(int(shuffle_seed)) if shuffle_seed is not None else None
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle_seed is not None,
                                       generator=gen, num_workers=0)


@CALLS.call
def mlp_architecture(impl, hidden_sizes, x, input_size: int = 784, output_size: int = 10):
    """Depth, every Linear's (in, out, has_bias) in registration order, call order and output shape on x."""
    cls = require(impl, "MNISTClassifierMLP", MLP_PARAMS, CONTRACT["MNISTClassifierMLP"])
    model = cls(input_size, list(hidden_sizes), output_size)
    registered = [m for m in model.modules() if isinstance(m, nn.Linear)]
    depth = getattr(model, "depth", None)
    result = {
        "depth": depth if isinstance(depth, int) else repr(depth),
        "linears": [[m.in_features, m.out_features, m.bias is not None] for m in registered],
        "num_parameters": [list(p.shape) for p in model.parameters()],
        "call_order": None, "output_shape": None, "forward_error": None,
    }
    try:
        with torch.no_grad():
            called, out = linears_in_call_order(model, x)
        result["call_order"] = [registered.index(m) for m in called]
        result["output_shape"] = list(out.shape)
    except Exception as e:  # a wrongly sized layer fails in the forward pass: report it as data
        result["forward_error"] = f"{type(e).__name__}: {e}"
    return result


@CALLS.call
def mlp_forward(impl, hidden_sizes, weights: list, x):
    """Log-probabilities of the MLP with the grader's weights on x (n, 1, 28, 28)."""
    model, _ = build_model(impl, hidden_sizes, weights)
    with torch.no_grad():
        return model(x)  # (n, 10)


@CALLS.call
def gradient_norms(impl, hidden_sizes, weights: list, x, labels):
    """get_gradient_norms after one nll_loss backward, with every gradient (in call order) for the grader."""
    get_norms = require(impl, "get_gradient_norms", ("model",), CONTRACT["get_gradient_norms"])
    model, linears = build_model(impl, hidden_sizes, weights)
    model.zero_grad()
    F.nll_loss(model(x), labels).backward()
    norms = _floats(get_norms(model), "get_gradient_norms")
    return {"norms": norms, "weight_grads": [linear.weight.grad.detach().clone() for linear in linears],
            "parameter_grads": [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]}


def _epoch_argument(fn) -> str | None:
    """How the course's fifth argument reaches train_one_epoch: "keyword" where a parameter is named `epoch`,
    "positional" where a fifth positional parameter has no default under another name, None where the
    signature has no room for it (the contract lets it be required, optional or absent)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    if "epoch" in params and params["epoch"].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                      inspect.Parameter.KEYWORD_ONLY):
        return "keyword"
    positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 5 and positional[4].default is inspect.Parameter.empty:
        return "positional"
    return None


@CALLS.call
def train_epochs(impl, images, labels, hidden_sizes, weights: list, seed: int, batch_size: int, lr: float,
                 epochs: int):
    """train_one_epoch `epochs` times (SGD, seeded shuffling; the epoch's index 0, 1, ... as the course's fifth
    argument where the signature has it): losses, per-epoch norms, final weights."""
    train_one_epoch = require(impl, "train_one_epoch", EPOCH_PARAMS, CONTRACT["train_one_epoch"])
    model, linears = build_model(impl, hidden_sizes, weights)
    loader = _image_loader(images, labels, batch_size, shuffle_seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses, norms = [], []
    epoch_argument = _epoch_argument(train_one_epoch)
    for epoch in range(epochs):
        if epoch_argument == "keyword":
            out = train_one_epoch(loader, model, "cpu", optimizer, epoch=epoch)
        elif epoch_argument == "positional":
            out = train_one_epoch(loader, model, "cpu", optimizer, epoch)
        else:
            out = train_one_epoch(loader, model, "cpu", optimizer)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise ContractError(f"train_one_epoch must return (mean_loss, mean_gradient_norms), got {out!r:.200}")
        losses.append(float(out[0]))
        norms.append(_floats(out[1], "train_one_epoch's mean_gradient_norms"))
    return {"losses": losses, "norms": norms, "weights": [linear.weight.detach().clone() for linear in linears],
            "num_parameter_tensors": len(list(model.parameters()))}


@CALLS.call
def test_epoch(impl, images, labels, hidden_sizes, weights: list, batch_size: int):
    """test_one_epoch on the model with the grader's weights: (mean_loss, num_correct)."""
    test_one_epoch = require(impl, "test_one_epoch", TEST_PARAMS, CONTRACT["test_one_epoch"])
    model, _ = build_model(impl, hidden_sizes, weights)
    out = test_one_epoch(_image_loader(images, labels, batch_size, shuffle_seed=None), model, "cpu")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ContractError(f"test_one_epoch must return (mean_loss, num_correct), got {out!r:.200}")
    return {"loss": float(out[0]), "correct": float(out[1])}


@CALLS.call
def sensing_measurements(impl, A, X):
    fn = require(impl, "sensing_measurements", ("A", "X"), CONTRACT["sensing_measurements"])
    return torch.as_tensor(fn(A, X))


@CALLS.call
def sensing_loss(impl, U, A, y):
    return torch.as_tensor(require(impl, "sensing_loss", ("U", "A", "y"), CONTRACT["sensing_loss"])(U, A, y))


@CALLS.call
def sensing_grad(impl, U, A, y):
    return torch.as_tensor(require(impl, "sensing_grad", ("U", "A", "y"), CONTRACT["sensing_grad"])(U, A, y))


@CALLS.call
def gradient_descent(impl, U0, A, y, X_star, lr: float, steps: int):
    """gradient_descent(U0, A, y, X_star, lr, steps): final U and distances."""
    fn = require(impl, "gradient_descent", ("U0", "A", "y", "X_star", "lr", "steps"), CONTRACT["gradient_descent"])
    out = fn(U0, A, y, X_star, lr, steps)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ContractError(f"gradient_descent must return (U, distances), got {type(out).__name__}")
    U, distances = out
    return {"U": torch.as_tensor(U).detach(), "distances": _floats(distances, "gradient_descent's distances")}
