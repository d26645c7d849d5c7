"""Probes for exercise `gradnorms` (CONTRACTS.md section `gradnorms`): MLP gradient norms, matrix sensing.

Each probe builds what it needs from plain arguments (seeds, sizes, small tensors), calls the contract's
names and returns plain data. Weights are set by the probe, not by the submission's init: the probe finds
the model's Linear layers in the order the forward pass calls them (forward hooks), so the same seed gives
the same network whatever the student named or registered their layers. Verdicts are the grader's.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from labcheck.probes import ContractError, Registry, require

PROBES = Registry()

MLP_PARAMS = ("input_size", "hidden_sizes", "output_size")
EPOCH_PARAMS = ("train_loader", "model", "device", "optimizer")
TEST_PARAMS = ("test_loader", "model", "device")


# ---------------------------------------------------------------------------------------------
# Helpers (trusted code that runs next to the submission)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


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


def build_model(impl, hidden_sizes, seed: int, input_size: int = 784, output_size: int = 10) -> tuple[nn.Module, list]:
    """The submission's MLP with weights W_j ~ N(0, 1/fan_in) from `seed` in call order; biases (if any) zeroed."""
    cls = require(impl, "MNISTClassifierMLP", MLP_PARAMS)
    model = cls(input_size, list(hidden_sizes), output_size)
    with torch.no_grad():
        linears, _ = linears_in_call_order(model, torch.zeros(2, 1, 28, 28))
    sizes = [input_size, *hidden_sizes, output_size]
    if len(linears) != len(sizes) - 1:
        raise ContractError(f"the forward pass calls {len(linears)} Linear layers; hidden_sizes={list(hidden_sizes)} "
                            f"needs {len(sizes) - 1}")
    gen = _generator(seed)
    with torch.no_grad():
        for j, linear in enumerate(linears):
            shape = (sizes[j + 1], sizes[j])
            if tuple(linear.weight.shape) != shape:
                raise ContractError(f"Linear layer {j + 1} (in call order) has weight shape "
                                    f"{tuple(linear.weight.shape)}; expected {shape}")
            linear.weight.copy_(torch.randn(shape, generator=gen) / math.sqrt(sizes[j]))
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
    gen = _generator(shuffle_seed) if shuffle_seed is not None else None
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle_seed is not None,
                                       generator=gen, num_workers=0)


def sensing_problem(seed: int, m: int, d: int, r: int):
    """(A (m, d, d), X* (d, d), y (m,)): A ~ N(0, 1), U* ~ N(0, 1)/sqrt(d), y_i = sum(A_i * X*) (trusted)."""
    gen = _generator(seed)
    A = torch.randn(m, d, d, generator=gen)  # (m, d, d)
    U_star = torch.randn(d, r, generator=gen) / math.sqrt(d)  # (d, r)
    X_star = U_star @ U_star.T  # (d, d)
    y = torch.einsum("mij,ij->m", A.double(), X_star.double()).float()  # (m,)
    return A, X_star, y, gen


# ---------------------------------------------------------------------------------------------
# Part 1


@PROBES.probe
def mlp_architecture(impl, hidden_sizes, input_size: int = 784, output_size: int = 10):
    """Depth, every Linear's (in, out, has_bias) in registration order, call order and output shape."""
    cls = require(impl, "MNISTClassifierMLP", MLP_PARAMS)
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
            called, out = linears_in_call_order(model, torch.randn(3, 1, 28, 28, generator=_generator(0)))
        result["call_order"] = [registered.index(m) for m in called]
        result["output_shape"] = list(out.shape)
    except Exception as e:  # a wrongly sized layer fails in the forward pass: report it as data
        result["forward_error"] = f"{type(e).__name__}: {e}"
    return result


@PROBES.probe
def mlp_forward(impl, seed: int, hidden_sizes, n: int = 16):
    """Log-probabilities of the MLP (probe-set weights) on n standard-normal 28x28 inputs."""
    model, _ = build_model(impl, hidden_sizes, seed)
    x = torch.randn(n, 1, 28, 28, generator=_generator(seed + 1))  # (n, 1, 28, 28)
    with torch.no_grad():
        return model(x)  # (n, 10)


@PROBES.probe
def gradient_norms(impl, seed: int, hidden_sizes, n: int = 32):
    """get_gradient_norms after one nll_loss backward, with the weight gradients in call order for diagnosis."""
    get_norms = require(impl, "get_gradient_norms", ("model",))
    model, linears = build_model(impl, hidden_sizes, seed)
    gen = _generator(seed + 1)
    x = torch.randn(n, 1, 28, 28, generator=gen)  # (n, 1, 28, 28)
    labels = torch.randint(0, 10, (n,), generator=gen)  # (n,)
    model.zero_grad()
    F.nll_loss(model(x), labels).backward()
    norms = _floats(get_norms(model), "get_gradient_norms")
    return {
        "norms": norms,
        "weight_grads": [linear.weight.grad.detach().clone() for linear in linears],
        "parameter_grad_norms": [float(p.grad.norm()) for p in model.parameters() if p.grad is not None],
    }


@PROBES.probe
def train_epochs(impl, images, labels, hidden_sizes, seed: int, batch_size: int, lr: float, epochs: int):
    """train_one_epoch `epochs` times (SGD, seeded shuffling): losses, per-epoch norms, final weights."""
    train_one_epoch = require(impl, "train_one_epoch", EPOCH_PARAMS)
    model, linears = build_model(impl, hidden_sizes, seed)
    loader = _image_loader(images, labels, batch_size, shuffle_seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses, norms = [], []
    for _ in range(epochs):
        out = train_one_epoch(loader, model, "cpu", optimizer)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise ContractError(f"train_one_epoch must return (mean_loss, mean_gradient_norms), got {out!r:.200}")
        losses.append(float(out[0]))
        norms.append(_floats(out[1], "train_one_epoch's mean_gradient_norms"))
    return {"losses": losses, "norms": norms, "weights": [linear.weight.detach().clone() for linear in linears],
            "num_parameter_tensors": len(list(model.parameters()))}


@PROBES.probe
def test_epoch(impl, images, labels, hidden_sizes, seed: int, batch_size: int, weight_scale: float = 1.0):
    """test_one_epoch on the probe-set model (weights scaled by weight_scale): (mean_loss, num_correct)."""
    test_one_epoch = require(impl, "test_one_epoch", TEST_PARAMS)
    model, linears = build_model(impl, hidden_sizes, seed)
    with torch.no_grad():
        for linear in linears:
            linear.weight.mul_(weight_scale)
    out = test_one_epoch(_image_loader(images, labels, batch_size, shuffle_seed=None), model, "cpu")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ContractError(f"test_one_epoch must return (mean_loss, num_correct), got {out!r:.200}")
    return {"loss": float(out[0]), "correct": float(out[1])}


# ---------------------------------------------------------------------------------------------
# Part 2


@PROBES.probe
def sensing_measurements(impl, seed: int, m: int, d: int, symmetric: bool = False):
    """y = sensing_measurements(A, X) for Gaussian A (m, d, d) and a Gaussian X (symmetrized if asked)."""
    fn = require(impl, "sensing_measurements", ("A", "X"))
    gen = _generator(seed)
    A = torch.randn(m, d, d, generator=gen)  # (m, d, d)
    X = torch.randn(d, d, generator=gen)  # (d, d)
    if symmetric:
        X = (X + X.T) / 2
    return torch.as_tensor(fn(A, X))


@PROBES.probe
def sensing_loss(impl, seed: int, m: int, d: int, r: int, R: int):
    """sensing_loss(U, A, y) at a random U (d, R) on a rank-r problem."""
    fn = require(impl, "sensing_loss", ("U", "A", "y"))
    A, _, y, gen = sensing_problem(seed, m, d, r)
    U = torch.randn(d, R, generator=gen) / math.sqrt(d)  # (d, R)
    return torch.as_tensor(fn(U, A, y))


@PROBES.probe
def sensing_grad(impl, seed: int, m: int, d: int, r: int, R: int):
    """sensing_grad(U, A, y) at a random U (d, R) on a rank-r problem (A_i not symmetric)."""
    fn = require(impl, "sensing_grad", ("U", "A", "y"))
    A, _, y, gen = sensing_problem(seed, m, d, r)
    U = torch.randn(d, R, generator=gen) / math.sqrt(d)  # (d, R)
    return torch.as_tensor(fn(U, A, y))


@PROBES.probe
def gradient_descent(impl, seed: int, m: int, d: int, r: int, R: int, alpha: float, lr_scale: float, steps: int):
    """gradient_descent from U_0 = alpha * N(0, 1) (d, R) with lr = lr_scale / ||X*||_2: final U and distances."""
    fn = require(impl, "gradient_descent", ("U0", "A", "y", "X_star", "lr", "steps"))
    A, X_star, y, gen = sensing_problem(seed, m, d, r)
    U0 = alpha * torch.randn(d, R, generator=gen)  # (d, R)
    lr = lr_scale / torch.linalg.matrix_norm(X_star.double(), ord=2).item()
    out = fn(U0, A, y, X_star, lr, steps)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ContractError(f"gradient_descent must return (U, distances), got {type(out).__name__}")
    U, distances = out
    return {"U": torch.as_tensor(U).detach(), "distances": _floats(distances, "gradient_descent's distances"),
            "X_star": X_star}
