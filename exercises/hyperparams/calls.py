"""Calls for the `hyperparams` exercise (a2_fashion_hyperparams.txt; CONTRACTS.md `hyperparams`), worker side.

Each call wraps the grader's inputs in what the contract takes (small networks built from the grader's
layer specs, TensorDatasets, an SGD optimizer), calls the submission's names and returns raw results;
the graded tests (exercises/hyperparams/test_contract.py) compare them with the reference's.
"""
from __future__ import annotations

import torch
from torch import nn

from labcheck.untrusted.calls import Registry, require

CALLS = Registry()

FIT_KEYS = ("train loss", "train accuracy", "validation loss", "validation accuracy", "train steps", "time", "epochs")


@CALLS.call
def net_function(impl, builder: str, width: int | None, x: torch.Tensor, seed: int = 0) -> dict:
    """build_net(width) / build_net_bn(width), torch seeded with `seed`, and what it computes on x (N, 784): its
    parameters in net.parameters() order (values), its output in eval mode, then in train mode (batch statistics
    where it has BatchNorm), and net[0](x), its first layer as the course's code reaches it (net[0].weight). The
    grader recomputes each output from the parameters; the type's name is for feedback only."""
    fn = require(impl, builder)
    torch.manual_seed(seed)
    net = fn() if width is None else fn(width)
    parameters = [p.detach().clone() for p in net.parameters()]
    with torch.no_grad():
        net.eval()
        out_eval = torch.as_tensor(net(x)).detach().float()  # (N, 10)
        try:
            first = torch.as_tensor(net[0](x)).detach().float()  # (N, width)
        except Exception as e:  # not indexable, or not a layer: reported as data
            first = f"{type(e).__name__}: {str(e)[:200]}"
        net.train()
        out_train = torch.as_tensor(net(x)).detach().float()  # (N, 10)
    return {"parameters": parameters, "eval": out_eval, "train": out_train, "first_layer": first,
            "type": type(net).__name__}


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
    count = require(impl, "count_parameters", ("net",))
    return [int(count(_build(spec))) for spec in specs]


@CALLS.call
def noisy_draws(impl, images: torch.Tensor, labels: torch.Tensor, noise_sigma: float, flip_horizontal: bool,
                shift: bool, draws: int, seed: int = 0) -> dict:
    """`draws` passes over NoisyDataset(TensorDataset(images, labels), ...): x (draws*N, 784), y (draws*N,)."""
    cls = require(impl, "NoisyDataset", ("dataset",))
    torch.manual_seed(seed)
    ds = cls(torch.utils.data.TensorDataset(images, labels), noise_sigma=noise_sigma,
             flip_horizontal=flip_horizontal, shift=shift)
    if len(ds) != len(images):
        raise AssertionError(f"len(NoisyDataset) is {len(ds)}, but the wrapped dataset has {len(images)} items")
    xs, ys = [], []
    for _ in range(draws):
        for i in range(len(images)):
            x, y = ds[i]
            xs.append(torch.as_tensor(x, dtype=torch.float32).reshape(-1))  # (784,)
            ys.append(int(y))
    return {"x": torch.stack(xs), "y": torch.tensor(ys, dtype=torch.long)}


@CALLS.call
def fit_run(impl, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
            epochs: int, batch_size: int, lr: float, batchnorm: bool, seed: int = 0) -> dict:
    """The submission's fit on a trusted 784-32-16-10 net (optionally with BatchNorm) with SGD(lr)."""
    fit = require(impl, "fit", ("net", "train", "validation", "optimizer"))
    torch.manual_seed(seed)
    layers = [nn.Linear(784, 32)] + ([nn.BatchNorm1d(32)] if batchnorm else []) + [nn.ReLU(), nn.Linear(32, 16)]
    layers += ([nn.BatchNorm1d(16)] if batchnorm else []) + [nn.ReLU(), nn.Linear(16, 10)]
    net = nn.Sequential(*layers)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    history = fit(net, torch.utils.data.TensorDataset(x_train, y_train), torch.utils.data.TensorDataset(x_val, y_val),
                  optimizer, epochs=epochs, batch_size=batch_size, device="cpu")
    out = {"keys": sorted(str(k) for k in history.keys()), "history": {}}
    for key in FIT_KEYS:
        if key in history:
            out["history"][key] = [float(v) for v in history[key]]
    return out
