"""Calls for the `hyperparams` exercise (a2_fashion_hyperparams.txt; CONTRACTS.md `hyperparams`), worker side.

Each call wraps the grader's inputs in what the contract takes (small networks built from the grader's
layer specs, TensorDatasets, an SGD optimizer), calls the submission's names and returns raw results;
the graded tests (exercises/hyperparams/test_contract.py) compare them with the reference's.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from labcheck.untrusted.calls import Registry, require

CALLS = Registry()
# The contract's signatures as CONTRACT.md states them (tests/test_registry.py checks they agree): named in
# the message when a submission's own signature cannot take a call.
CONTRACT = {
    "build_net": "build_net(width=128)",
    "build_net_bn": "build_net_bn(width=128)",
    "NoisyDataset": "NoisyDataset(dataset, noise_sigma=0, flip_horizontal=False, shift=False)",
    "count_parameters": "count_parameters(net)",
    "fit": "fit(net, train, validation, optimizer, epochs=25, batch_size=10, device='cpu')",
}

FIT_KEYS = ("train loss", "train accuracy", "validation loss", "validation accuracy", "train steps", "time", "epochs")


def _describe(module: nn.Module) -> list:
    """[type, in, out] per Linear, [type, num_features] per BatchNorm, [type] otherwise."""
    if isinstance(module, nn.Linear):
        return ["Linear", module.in_features, module.out_features]
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return [type(module).__name__, module.num_features]
    return [type(module).__name__]


@CALLS.call
def describe_net(impl, builder: str, width: int | None, x: torch.Tensor, seed: int = 0) -> dict:
    """The layers of build_net(width) / build_net_bn(width) and its eval-mode output on x (N, 784)."""
    fn = require(impl, builder, (), CONTRACT.get(builder))
    torch.manual_seed(seed)
    net = fn() if width is None else fn(width)
    layers = [_describe(m) for m in net] if isinstance(net, nn.Sequential) else [_describe(net)]
    net.eval()
    with torch.no_grad():
        out = net(x)  # (N, 10)
    return {"class": type(net).__name__, "layers": layers, "logits": out.detach().float()}


def _build(spec: list) -> nn.Sequential:
    layers = []
    for item in spec:
        kind = item[0]
        if kind == "linear":
            layers.append(nn.Linear(item[1], item[2], bias=bool(item[3])))
        elif kind == "bn":
            layers.append(nn.BatchNorm1d(item[1]))
        elif kind == "relu":
            layers.append(nn.ReLU())
        else:
            raise ValueError(f"unknown layer spec {item!r}")
    return nn.Sequential(*layers)


@CALLS.call
def count_parameters_of(impl, specs: list) -> list:
    """count_parameters on trusted networks built from specs like [["linear", 784, 128, True], ["relu"]]."""
    count = require(impl, "count_parameters", ("net",), CONTRACT["count_parameters"])
    return [int(count(_build(spec))) for spec in specs]


@CALLS.call
def noisy_draws(impl, images: torch.Tensor, labels: torch.Tensor, noise_sigma: float, flip_horizontal: bool,
                shift: bool, draws: int, seed: int = 0) -> dict:
    """`draws` passes over NoisyDataset(TensorDataset(images, labels), ...): x (draws*N, 784), y (draws*N,)."""
    return _draws(require(impl, "NoisyDataset", ("dataset",), CONTRACT["NoisyDataset"]), images, labels, draws, seed,
                  dict(noise_sigma=noise_sigma, flip_horizontal=flip_horizontal, shift=shift))


@CALLS.call
def noisy_defaults(impl, images: torch.Tensor, labels: torch.Tensor, draws: int, seed: int, settings: dict) -> dict:
    """The draws of NoisyDataset with every option in `settings` passed and with each one left out (its own default
    then stands in), from the same RNG state: the grader compares them."""
    cls = require(impl, "NoisyDataset", ("dataset",), CONTRACT["NoisyDataset"])
    return {"explicit": _draws(cls, images, labels, draws, seed, dict(settings)),
            "omitted": {name: _draws(cls, images, labels, draws, seed, {k: v for k, v in settings.items() if k != name})
                        for name in settings}}


def _draws(cls, images, labels, draws: int, seed: int, options: dict) -> dict:
    torch.manual_seed(seed)
    ds = cls(torch.utils.data.TensorDataset(images, labels), **options)
    if len(ds) != len(images):
        raise AssertionError(f"len(NoisyDataset) is {len(ds)}, but the wrapped dataset has {len(images)} items")
    xs, ys = [], []
    for _ in range(draws):
        for i in range(len(images)):
            x, y = ds[i]
            xs.append(torch.as_tensor(x, dtype=torch.float32).reshape(-1))  # (784,)
            ys.append(int(y))
    return {"x": torch.stack(xs), "y": torch.tensor(ys, dtype=torch.long)}


def _trusted_net(batchnorm: bool, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers = [nn.Linear(784, 32)] + ([nn.BatchNorm1d(32)] if batchnorm else []) + [nn.ReLU(), nn.Linear(32, 16)]
    layers += ([nn.BatchNorm1d(16)] if batchnorm else []) + [nn.ReLU(), nn.Linear(16, 10)]
    return nn.Sequential(*layers)


def _fit(fit, x_train, y_train, x_val, y_val, lr: float, batchnorm: bool, seed: int, settings: dict) -> dict:
    """fit on a trusted 784-32-16-10 net (optionally with BatchNorm) with SGD(lr), from a seeded RNG."""
    net = _trusted_net(batchnorm, seed)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    start = time.perf_counter()
    history = fit(net, torch.utils.data.TensorDataset(x_train, y_train), torch.utils.data.TensorDataset(x_val, y_val),
                  optimizer, **settings)
    out = {"keys": sorted(str(k) for k in history.keys()), "history": {}, "wall_time": time.perf_counter() - start}
    for key in FIT_KEYS:
        if key in history:
            out["history"][key] = [float(v) for v in history[key]]
    return out


@CALLS.call
def fit_run(impl, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
            epochs: int, batch_size: int, lr: float, batchnorm: bool, seed: int = 0) -> dict:
    """The submission's fit on a trusted 784-32-16-10 net (optionally with BatchNorm) with SGD(lr)."""
    fit = require(impl, "fit", ("net", "train", "validation", "optimizer"), CONTRACT["fit"])
    return _fit(fit, x_train, y_train, x_val, y_val, lr, batchnorm, seed,
                dict(epochs=epochs, batch_size=batch_size, device="cpu"))


@CALLS.call
def fit_defaults(impl, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
                 lr: float, settings: dict, seed: int = 0) -> dict:
    """fit from the same net and RNG state, once with every setting in `settings` passed and once per setting with
    that one left out (fit's own default then stands in): the grader compares the histories."""
    fit = require(impl, "fit", ("net", "train", "validation", "optimizer"), CONTRACT["fit"])
    return {"explicit": _fit(fit, x_train, y_train, x_val, y_val, lr, False, seed, dict(settings)),
            "omitted": {name: _fit(fit, x_train, y_train, x_val, y_val, lr, False, seed,
                                   {k: v for k, v in settings.items() if k != name}) for name in settings}}
