"""Training study on Fashion-MNIST: optimizers, learning rates, batch size, batchnorm, augmentation, width.

Reference for the `hyperparams` exercise (labcheck issue #7). Source: Radboud University, Deep Learning
(NWI-IMC070) 2024, Assignment 2 (version 7ac2078), as exported with a student's answers in
../shared/seeds/a2_fashion_hyperparams.txt. Everything the exercise asks for is in this one file:

  contract (CONTRACTS.md): build_net, build_net_bn, NoisyDataset, count_parameters, fit
  fast path:               BatchAugment, fit_resident (the same loop on resident tensors)
  experiment:              Config, QUICK, DRY_RUN, get_args_parser, main, band_metrics
                           (`labcheck reproduce hyperparams [--quick] [--workers 2]`, `labcheck bands hyperparams`)

Tasks: 2.3d (Adam lr 0.01, batch 16, 100 epochs), 2.5 optimizers and batch size, 2.6 batchnorm, 2.7 augmentation,
2.8 width, 2.9a repeated baselines, 2.9b the chosen settings on an independent test set. The study's runs are
independent: each seeds itself (run k: seed * 10_000 + k) and uses one torch thread, so `--workers N` spreads
them over N processes without changing a number.

Data: Fashion-MNIST train set, `random_split` into 1000 train / 500 validation images, pixels in [0, 1]
(torchvision's ToTensor), flattened to 784 values, as in the seed (In [39]). 2.9b also scores every run's final
network on Fashion-MNIST's own 10k test split, which no choice of the study ever looks at.

Where we knowingly differ from the seed's course code (each is reported in answers.json):
  1. Epoch metrics are weighted by batch size. The seed's `fit` averages per-batch means, so the last
     (smaller) batch counts as much as a full one; we also log that unweighted average as
     "<phase> <metric> unweighted" and report the largest difference.
  2. Per-layer output statistics (forward hooks) are the mean / mean |.| / std over every output value
     of the epoch. The seed stores the LAST batch's value and then divides it by the number of steps.
  3. Hooks are removed when `fit` returns (the seed's accumulate on every call), and validation runs
     under torch.no_grad() (same numbers, less work).
  4. The seed's train DataLoader line is truncated in the export; we shuffle the train set each epoch
     (as the course does) and never the validation set.
  5. `build_net(width)` uses width // 2 for the second layer (the seed's int(width / 2) is the same).
The experiment driver uses `fit_resident`: the data sit on the device as tensors (core.ResidentLoader)
and augmentation is drawn per batch on tensors with the same distribution as NoisyDataset;
tests/test_hyperparams.py shows it reproduces `fit` on the same batch order.
"""
from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import functools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from labcheck import core, data, repro

IMAGE_SIDE = 28
N_FEATURES = IMAGE_SIDE * IMAGE_SIDE  # 784 inputs
N_CLASSES = 10

# ---------------------------------------------------------------------------------------------
# Contract: the student-facing names


def build_net(width: int = 128) -> nn.Sequential:
    """784 -> width -> width // 2 -> 10 with ReLUs; no final activation (cross_entropy takes logits)."""
    return nn.Sequential(
        nn.Linear(N_FEATURES, width),
        nn.ReLU(),
        nn.Linear(width, width // 2),
        nn.ReLU(),
        nn.Linear(width // 2, N_CLASSES),
    )


def build_net_bn(width: int = 128) -> nn.Sequential:
    """build_net with BatchNorm1d after each hidden Linear, before its ReLU (seed 2.6a)."""
    return nn.Sequential(
        nn.Linear(N_FEATURES, width),
        nn.BatchNorm1d(width),
        nn.ReLU(),
        nn.Linear(width, width // 2),
        nn.BatchNorm1d(width // 2),
        nn.ReLU(),
        nn.Linear(width // 2, N_CLASSES),
    )


class NoisyDataset(torch.utils.data.Dataset):
    """Augmented view of a dataset of flattened 28x28 images (seed In [64]); labels pass through.

    Each access draws fresh randomness from torch's global RNG: N(0, noise_sigma) pixel noise, a
    horizontal flip with probability 0.5, and a circular shift (torch.roll) by dy, dx in {-1, 0, 1}.
    """

    def __init__(self, dataset, noise_sigma: float = 0, flip_horizontal: bool = False, shift: bool = False):
        self.dataset = dataset
        self.noise_sigma = noise_sigma
        self.flip_horizontal = flip_horizontal
        self.shift = shift

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx):
        x, y = self.dataset[idx]  # x: (784,)
        if self.noise_sigma:
            x = x + self.noise_sigma * torch.randn(x.shape)  # (784,)
        if self.flip_horizontal and torch.rand(1).item() < 0.5:
            x = x.reshape(IMAGE_SIDE, IMAGE_SIDE).flip(dims=(1,)).reshape(-1)  # mirror columns, (784,)
        if self.shift:
            dy, dx = torch.randint(-1, 2, (2,)).tolist()
            x = torch.roll(x.reshape(IMAGE_SIDE, IMAGE_SIDE), shifts=(dy, dx), dims=(0, 1)).reshape(-1)  # (784,)
        return x, y


def count_parameters(net: nn.Module) -> int:
    """Number of scalar parameters, weights and biases (109,386 for build_net(128))."""
    return sum(p.numel() for p in net.parameters())


def fit(net, train, validation, optimizer, epochs=25, batch_size=10, device="cpu", *,
        generator: torch.Generator | None = None, keep_outputs: bool = False, progress: bool = True) -> dict:
    """Train `net` on the Dataset `train`, evaluating on `validation` after every epoch (seed In [48]).

    Returns a dict of lists, one entry per epoch: 'train loss', 'train accuracy', 'validation loss',
    'validation accuracy' (sample-weighted), their seed-style '... unweighted' versions, 'train steps'
    (cumulative updates), 'time' (seconds since the start), 'epochs' (0-based), 'train mean abs grad' /
    'train mean abs weight' of the first layer, and '<phase> <i>: <Module> output mean|abs mean|std' per
    layer of a Sequential. `generator` seeds the train shuffling (default: torch's global RNG).
    """
    # shuffle=True as the course does; with a generator, one randperm per epoch drawn from it (the
    # DataLoader would also draw its worker base seed from it, and RandomSampler an extra randperm)
    order = dict(shuffle=True) if generator is None else dict(sampler=_EpochPermutation(len(train), generator))
    loaders = {
        "train": torch.utils.data.DataLoader(train, batch_size=batch_size, **order),
        "validation": torch.utils.data.DataLoader(validation, batch_size=batch_size, shuffle=False),
    }
    return _train_loop(net, loaders, optimizer, epochs, torch.device(device), keep_outputs=keep_outputs,
                       progress=progress)


class _EpochPermutation(torch.utils.data.Sampler):
    """torch.randperm(n, generator=generator) each epoch: ResidentLoader's order, for the Dataset path."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.generator).tolist())


# ---------------------------------------------------------------------------------------------
# Fast path: resident tensors, augmentation drawn per batch


class BatchAugment:
    """NoisyDataset's augmentation for a whole batch (B, 784) at once, from a private generator.

    Per sample, independently: + N(0, noise_sigma) noise, flip with p = 0.5, roll by (dy, dx) uniform
    on {-1, 0, 1}^2: the same distribution as NoisyDataset, drawn with fewer, larger kernels.
    """

    def __init__(self, noise_sigma: float = 0.0, flip_horizontal: bool = False, shift: bool = False,
                 seed: int = 0, device: str | torch.device = "cpu"):
        self.noise_sigma = noise_sigma
        self.flip_horizontal = flip_horizontal
        self.shift = shift
        self.device = torch.device(device)
        self.generator = repro.generator(seed, self.device)
        side = torch.arange(IMAGE_SIDE, device=self.device)
        self.side = side  # (28,)

    @property
    def active(self) -> bool:
        return bool(self.noise_sigma or self.flip_horizontal or self.shift)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, g = len(x), self.generator
        img = x.reshape(b, IMAGE_SIDE, IMAGE_SIDE)  # (B, 28, 28)
        if self.noise_sigma:
            img = img + self.noise_sigma * torch.randn(img.shape, generator=g, device=self.device)  # (B, 28, 28)
        if self.flip_horizontal:
            flip = torch.rand(b, generator=g, device=self.device) < 0.5  # (B,)
            img = torch.where(flip[:, None, None], img.flip(dims=(2,)), img)  # (B, 28, 28)
        if self.shift:
            s = torch.randint(-1, 2, (b, 2), generator=g, device=self.device)  # (B, 2): dy, dx
            rows = (self.side[None, :] - s[:, :1]) % IMAGE_SIDE  # (B, 28): torch.roll's out[i] = in[i - dy]
            cols = (self.side[None, :] - s[:, 1:]) % IMAGE_SIDE  # (B, 28)
            batch = torch.arange(b, device=self.device)[:, None, None]  # (B, 1, 1)
            img = img[batch, rows[:, :, None], cols[:, None, :]]  # (B, 28, 28)
        return img.reshape(b, N_FEATURES)  # (B, 784)


class _Augmented:
    """A ResidentLoader whose inputs pass through a BatchAugment."""

    def __init__(self, loader: core.ResidentLoader, augment: BatchAugment):
        self.loader, self.augment = loader, augment

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            yield self.augment(x), y


def fit_resident(net, train: tuple[torch.Tensor, torch.Tensor], validation: tuple[torch.Tensor, torch.Tensor],
                 optimizer, epochs: int = 25, batch_size: int = 10, device="cpu", *, seed: int = 0,
                 augment: BatchAugment | None = None, eval_batch_size: int | None = None,
                 keep_outputs: bool = False, progress: bool = True) -> dict:
    """`fit` on tensors (x (N, 784) float, y (N,) long): same loop and history, no per-sample Python.

    The train order is ResidentLoader(seed): torch.randperm(N, generator=Generator().manual_seed(seed))
    each epoch, exactly what fit's DataLoader draws with generator=Generator().manual_seed(seed).
    Validation runs in chunks of eval_batch_size (default: batch_size, as fit does).
    """
    device = torch.device(device)
    x_train, y_train = (t.to(device) for t in train)
    x_val, y_val = (t.to(device) for t in validation)
    train_loader = core.ResidentLoader(x_train, y_train, batch_size=batch_size, shuffle=True, seed=seed)
    loaders = {
        "train": _Augmented(train_loader, augment) if augment is not None and augment.active else train_loader,
        "validation": core.ResidentLoader(x_val, y_val, batch_size=eval_batch_size or batch_size, shuffle=False),
    }
    return _train_loop(net, loaders, optimizer, epochs, device, keep_outputs=keep_outputs, progress=progress)


# ---------------------------------------------------------------------------------------------
# The shared training loop


class LayerStats:
    """Forward hooks on every module of a Sequential, pooling output statistics over an epoch."""

    STATS = ("mean", "abs mean", "std")

    def __init__(self, net: nn.Module):
        self.phase = "train"
        # key -> [float64 (3,) sum, sum |.|, sum of squares; count]
        self.sums: dict[str, list] = {}
        self.handles = []
        modules = list(net) if isinstance(net, nn.Sequential) else []
        for idx, module in enumerate(modules):
            self.handles.append(module.register_forward_hook(self._hook(idx, type(module).__name__)))

    def _hook(self, idx: int, name: str):
        keys = {}  # phase -> key, made once: the hook runs for every module on every batch

        def hook(module, inputs, output):
            o = output.detach()
            key = keys.get(self.phase) or keys.setdefault(self.phase, f"{self.phase} {idx}: {name} output")
            moments = torch.stack([o.sum(), o.abs().sum(), (o * o).sum()]).double()  # (3,)
            acc = self.sums.get(key)
            if acc is None:
                acc = self.sums[key] = [torch.zeros(3, dtype=torch.float64, device=o.device), 0]
            acc[0] += moments
            acc[1] += o.numel()
        return hook

    def pop(self, phase: str) -> dict[str, float]:
        """The epoch's statistics for `phase`, clearing them."""
        out = {}
        for key in [k for k in self.sums if k.startswith(phase + " ")]:
            moments, n = self.sums.pop(key)
            total, total_abs, total_sq = moments.tolist()
            mean = total / n
            var = max(total_sq - n * mean * mean, 0.0) / max(n - 1, 1)
            out[f"{key} mean"], out[f"{key} abs mean"], out[f"{key} std"] = mean, total_abs / n, math.sqrt(var)
        return out

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _train_loop(net, loaders, optimizer, epochs, device, keep_outputs=False, progress=True) -> dict:
    net = net.to(device)
    history = collections.defaultdict(list)
    stats = LayerStats(net)
    first = next((m for m in net.modules() if isinstance(m, nn.Linear)), None)
    steps = {"train": 0, "validation": 0}
    core.synchronize(device)
    start = time.perf_counter()
    try:
        for epoch in tqdm(range(epochs), desc="epoch", leave=False, disable=not progress):
            for phase in ("train", "validation"):
                training = phase == "train"
                net.train(training)
                stats.phase = phase
                loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # sum over samples
                correct = torch.zeros((), dtype=torch.float64, device=device)
                loss_of_means = torch.zeros((), dtype=torch.float64, device=device)  # the seed's average
                acc_of_means = torch.zeros((), dtype=torch.float64, device=device)
                grad_sum = torch.zeros((), dtype=torch.float64, device=device)
                weight_sum = torch.zeros((), dtype=torch.float64, device=device)
                n_seen, n_batches, outputs = 0, 0, []
                for x, y in loaders[phase]:
                    x, y = x.to(device), y.to(device)  # (B, 784), (B,)
                    with torch.set_grad_enabled(training):
                        logits = net(x)  # (B, 10)
                        loss = F.cross_entropy(logits, y)  # mean over the batch
                    hits = (logits.argmax(dim=1) == y).double()  # (B,)
                    if training:
                        optimizer.zero_grad()
                        loss.backward()
                        if first is not None:
                            grad_sum += first.weight.grad.abs().mean().double()
                            weight_sum += first.weight.detach().abs().mean().double()
                        optimizer.step()
                    b = len(y)
                    loss_sum += loss.detach().double() * b
                    correct += hits.sum()
                    loss_of_means += loss.detach().double()
                    acc_of_means += hits.mean()
                    n_seen += b
                    n_batches += 1
                    if keep_outputs:
                        outputs.append(logits.detach().cpu())
                steps[phase] += n_batches
                history[f"{phase} loss"].append(loss_sum.item() / n_seen)
                history[f"{phase} accuracy"].append(correct.item() / n_seen)
                history[f"{phase} loss unweighted"].append(loss_of_means.item() / n_batches)
                history[f"{phase} accuracy unweighted"].append(acc_of_means.item() / n_batches)
                history[f"{phase} steps"].append(steps[phase])
                if training and first is not None:
                    history["train mean abs grad"].append(grad_sum.item() / n_batches)
                    history["train mean abs weight"].append(weight_sum.item() / n_batches)
                for key, value in stats.pop(phase).items():
                    history[key].append(value)
                if keep_outputs:
                    history[f"{phase} outputs"].append(torch.cat(outputs).numpy())  # (N, 10)
            core.synchronize(device)
            history["epochs"].append(epoch)
            history["time"].append(time.perf_counter() - start)
    finally:
        stats.remove()
    return dict(history)


# ---------------------------------------------------------------------------------------------
# The experiment

EXPERIMENTS = ("optimizers", "batch_size", "batchnorm", "augmentation", "width", "variance", "intro")


@dataclasses.dataclass
class Config:
    """The study's settings; every field is a flag of get_args_parser (split_seed is --split-seed)."""
    seed: int = 0  # run k of the study is seeded with seed * 10_000 + k (init, shuffling, augmentation)
    deterministic: bool = False  # run every training run inside labcheck.repro.deterministic()
    quick: bool = False  # apply QUICK: the CI budget
    dry_run: bool = False  # apply DRY_RUN: one epoch of one run per experiment on 64 images (integration test)
    out: str | None = None  # folder for plots (PNG), logs (CSV), tables (MD) and answers.json; None writes nothing
    data_root: str | None = None  # extra folder searched first for the Fashion-MNIST IDX files
    split_seed: int = 12345  # random_split of the 60k train images (the seed notebook's torch.manual_seed)
    n_train: int = 1000  # training images (seed 2.3)
    n_validation: int = 500  # validation images (seed 2.3); the 10k test split is only reported (2.9b)
    intro_epochs: int = 100  # 2.3d: epochs of the first training run (Adam, lr 0.01, batch 16)
    intro_lr: float = 0.01  # 2.3d: Adam's learning rate
    intro_batch_size: int = 16  # 2.3d: minibatch size
    epochs: int = 150  # epochs of every experiment but augmentation (seed 2.5-2.8)
    aug_epochs: int = 250  # epochs of the augmentation runs (seed 2.7)
    batch_size: int = 32  # minibatch size unless varied (seed 2.5)
    lrs: tuple = (0.1, 0.01, 0.001, 0.0001)  # learning rates tried with SGD and Adam (seed 2.5a)
    lr: float = 0.0001  # Adam's learning rate in the later experiments (seed 2.5h onwards)
    batch_sizes: tuple = (4, 16, 32, 64, 128)  # seed 2.5h
    noise_sigmas: tuple = (0.0, 0.01, 0.1, 0.2)  # pixel-noise std of the augmentation grid (seed 2.7)
    widths: tuple = (16, 32, 64, 128, 256, 512)  # first hidden layer; the second has width // 2 (seed 2.8)
    repeats: int = 5  # extra baseline runs for the run-to-run spread (seed 2.9a)
    experiments: tuple = EXPERIMENTS  # which of the study's experiments to run
    fused_adam: bool = True  # torch's fused Adam kernel (same update, ~1.6x faster on CPU here)
    workers: int = 1  # processes for the study's independent runs, one torch thread each (2 = both cores here)
    device: str = "auto"  # auto, cpu or cuda
    progress: bool = True  # tqdm progress bar over the runs

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Config":
        """The flags as a Config, then QUICK (--quick) and DRY_RUN (--dry-run) applied over them."""
        return repro.config_from_args(cls, args, QUICK, DRY_RUN)


# --quick replaces these fields: 8% of the epochs and fewer runs (~16k updates, ~1/18 of the full study,
# about 50 s on one thread here).
QUICK = dict(intro_epochs=8, epochs=12, aug_epochs=16, noise_sigmas=(0.0, 0.2), widths=(16, 128, 512), repeats=3)
DRY_RUN = dict(n_train=64, n_validation=32, intro_epochs=1, epochs=1, aug_epochs=1, lrs=(0.01,), batch_sizes=(32,),
               noise_sigmas=(0.1,), widths=(16,), repeats=1)

# The seed notebook's final-epoch numbers (student's run, unweighted per-batch averages, last epoch).
SEED_NUMBERS = {
    "SGD lr=0.1": (1.000000, 0.810156), "Adam lr=0.1": (0.199219, 0.223828),
    "SGD lr=0.01": (0.916992, 0.791016), "Adam lr=0.01": (1.000000, 0.805859),
    "SGD lr=0.001": (0.625000, 0.578125), "Adam lr=0.001": (1.000000, 0.799609),
    "SGD lr=0.0001": (0.308594, 0.275000), "Adam lr=0.0001": (0.962891, 0.802734),
    "batch_size=4": (0.992000, 0.790000), "batch_size=16": (0.989087, 0.818359),
    "batch_size=32": (0.957031, 0.817187), "batch_size=64": (0.934375, 0.799579),
    "batch_size=128": (0.900616, 0.794181),
    "without batchnorm": (0.960938, 0.813672), "with batchnorm": (1.000000, 0.813672),
    "noise=0": (0.993164, 0.800781), "noise=0, flip horizontal": (0.970703, 0.803906),
    "noise=0, shift": (0.878906, 0.816797), "noise=0, shift, flip horizontal": (0.871094, 0.787500),
    "noise=0.01": (0.994141, 0.795703), "noise=0.01, flip horizontal": (0.962891, 0.819531),
    "noise=0.01, shift": (0.875000, 0.812891), "noise=0.01, shift, flip horizontal": (0.858398, 0.783594),
    "noise=0.1": (0.971680, 0.801562), "noise=0.1, flip horizontal": (0.938477, 0.798828),
    "noise=0.1, shift": (0.885742, 0.798047), "noise=0.1, shift, flip horizontal": (0.825195, 0.799219),
    "noise=0.2": (0.945312, 0.814453), "noise=0.2, flip horizontal": (0.912109, 0.791406),
    "noise=0.2, shift": (0.855469, 0.803125), "noise=0.2, shift, flip horizontal": (0.798828, 0.777734),
    "width=16": (0.820312, 0.741406), "width=32": (0.880859, 0.789453), "width=64": (0.929688, 0.807031),
    "width=128": (0.965820, 0.806641), "width=256": (0.989258, 0.803516), "width=512": (1.000000, 0.811328),
}
SEED_BATCH_TIMES = {4: 47.780367, 16: 17.378596, 32: 11.645910, 64: 9.268409, 128: 7.942600}  # s, student's Mac
SEED_INTRO_FINAL = {"train loss": 0.07313032888082995, "train accuracy": 0.9692460317460317}  # 2.3d, epoch 99


@dataclasses.dataclass(frozen=True)
class Run:
    experiment: str  # which figure/table it belongs to
    label: str  # the seed's row name
    key: str  # the run's name in band_metrics ("adam_lr0.1", "aug_noise0.2_shift_flip", ...)
    optimizer: str = "adam"  # adam or sgd
    lr: float = 0.0001
    batch_size: int = 32
    width: int = 128
    batchnorm: bool = False
    noise_sigma: float = 0.0
    flip: bool = False
    shift: bool = False
    epochs: int = 150
    keep_outputs: bool = False  # store every epoch's logits (the 2.5f histograms)

    @property
    def updates(self) -> int:
        return self.epochs * -(-1000 // self.batch_size)  # cost estimate: updates at the seed's 1000 images


def aug_label(sigma: float, shift: bool, flip: bool) -> str:
    return f"noise={sigma:g}" + (", shift" if shift else "") + (", flip horizontal" if flip else "")


def aug_key(sigma: float, shift: bool, flip: bool) -> str:
    return f"aug_noise{sigma:g}" + ("_shift" if shift else "") + ("_flip" if flip else "")


def plan(cfg: Config) -> list[Run]:
    """Every run of the study, in the seed's order (2.3d last, so the other runs keep their seeds)."""
    base = dict(lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs)
    runs = []
    if "optimizers" in cfg.experiments:
        for lr in cfg.lrs:
            for opt in ("sgd", "adam"):
                name = "SGD" if opt == "sgd" else "Adam"
                runs.append(Run("optimizers", f"{name} lr={lr:g}", f"{opt}_lr{lr:g}", opt, lr, cfg.batch_size,
                                epochs=cfg.epochs, keep_outputs=(opt == "adam" and lr == 0.001)))
    if "batch_size" in cfg.experiments:
        runs += [Run("batch_size", f"batch_size={b}", f"batch_size{b}", **{**base, "batch_size": b})
                 for b in cfg.batch_sizes]
    if "batchnorm" in cfg.experiments:
        runs += [Run("batchnorm", "without batchnorm", "no_batchnorm", **base),
                 Run("batchnorm", "with batchnorm", "batchnorm", batchnorm=True, **base)]
    if "augmentation" in cfg.experiments:
        for sigma in cfg.noise_sigmas:
            for shift in (False, True):
                for flip in (False, True):
                    runs.append(Run("augmentation", aug_label(sigma, shift, flip), aug_key(sigma, shift, flip),
                                    noise_sigma=sigma, flip=flip, shift=shift, **{**base, "epochs": cfg.aug_epochs}))
    if "width" in cfg.experiments:
        runs += [Run("width", f"width={w}", f"width{w}", width=w, **base) for w in cfg.widths]
    if "variance" in cfg.experiments:
        runs += [Run("variance", f"baseline repeat {k}", f"baseline_repeat{k}", **base) for k in range(cfg.repeats)]
    if "intro" in cfg.experiments:
        runs.append(Run("intro", f"Adam lr={cfg.intro_lr:g}, batch_size={cfg.intro_batch_size}",
                        f"intro_adam_lr{cfg.intro_lr:g}_batch{cfg.intro_batch_size}", "adam", cfg.intro_lr,
                        cfg.intro_batch_size, epochs=cfg.intro_epochs))
    return runs


def make_optimizer(run: Run, net: nn.Module, cfg: Config, device: torch.device):
    if run.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=run.lr)
    fused = cfg.fused_adam and device.type in ("cpu", "cuda")
    return torch.optim.Adam(net.parameters(), lr=run.lr, fused=fused or None)


@functools.lru_cache(maxsize=2)
def load_splits(data_root: str | None, split_seed: int, n_train: int, n_validation: int, device: str):
    """(x, y) of train, validation and test, and the data source: the seed's random_split of the 60k train
    images (pixels / 255), and Fashion-MNIST's own 10k test split (2.9b). Cached once per process."""
    ds = data.load(data.FASHION, data_root)
    train, val = data.random_split(ds.train, [n_train, n_validation], seed=split_seed)
    to_xy = lambda s: ((s.flat_float() / 255.0).to(device), s.labels.to(device))  # (N, 784) in [0, 1], (N,)
    return to_xy(train), to_xy(val), to_xy(ds.test), ds.source


def load_split(cfg: Config, device: torch.device):
    return load_splits(cfg.data_root, cfg.split_seed, cfg.n_train, cfg.n_validation, str(device))


@torch.no_grad()
def dead_units(net: nn.Module, x: torch.Tensor) -> float:
    """Fraction of hidden ReLU units that output 0 for every image of x (eval mode)."""
    net.eval()
    dead, total, h = 0, 0, x
    for module in net:
        h = module(h)
        if isinstance(module, nn.ReLU):
            dead += int((h.amax(dim=0) <= 0).sum())
            total += h.shape[1]
    return dead / max(total, 1)


def run_one(run: Run, run_seed: int, train, val, test, cfg: Config, device: torch.device) -> dict:
    """Train one run from its own seed; the final network is also scored on the test split (2.9b only)."""
    repro.seed_everything(run_seed)
    net = (build_net_bn if run.batchnorm else build_net)(run.width).to(device)
    optimizer = make_optimizer(run, net, cfg, device)
    augment = BatchAugment(run.noise_sigma, run.flip, run.shift, seed=run_seed + 1, device=device)
    history = fit_resident(net, train, val, optimizer, run.epochs, run.batch_size, device, seed=run_seed,
                           augment=augment, eval_batch_size=len(val[0]), keep_outputs=run.keep_outputs,
                           progress=False)
    history["dead units"] = dead_units(net, val[0])
    history["parameters"] = count_parameters(net)
    net.eval()
    history["test loss"], history["test accuracy"] = core.evaluate_logits(net, *test)
    return history


def study_task(run: dict, run_seed: int, cfg: dict) -> dict:
    """One run of the study, in whichever process executes it: it seeds itself and uses one torch thread,
    so its numbers do not depend on how many processes share the study."""
    config = Config(**cfg)
    device = core.select_device(config.device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with repro.deterministic(config.deterministic):
            return run_one(Run(**run), run_seed, *load_split(config, device)[:3], config, device)
    finally:
        torch.set_num_threads(threads)


RUN_TARGET = "labcheck.study:call_reference"  # runner target that calls a function of exercises/<id>/reference.py by path


def run_tasks(tasks: list[dict], workers: int, progress: bool = False) -> list[dict]:
    """[study_task(**kwargs) for kwargs in tasks], in that order.

    workers == 1 runs them here, one after the other; otherwise labcheck.runner spreads them over `workers`
    spawned processes of one thread each, longest run first (the pool takes them in the order given).
    """
    if workers <= 1:
        return [study_task(**t) for t in tqdm(tasks, desc="hyperparams runs", disable=not progress)]
    from labcheck import runner

    order = sorted(range(len(tasks)), key=lambda i: -Run(**tasks[i]["run"]).updates)
    calls = [{"exercise": "hyperparams", "function": "study_task", "kwargs": tasks[i]} for i in order]
    values = runner.run_all(RUN_TARGET, calls, executor=f"local:{workers}", runs_per_process=8)
    results: list[dict] = [None] * len(tasks)
    for i, value in zip(order, values):
        results[i] = value
    return results


def study_tasks(cfg: Config, runs: list[Run]) -> list[dict]:
    """The study as independent tasks of plain data: run k is seeded with cfg.seed * 10_000 + k."""
    config = dataclasses.asdict(cfg)
    return [{"run": dataclasses.asdict(run), "run_seed": cfg.seed * 10_000 + k, "cfg": config}
            for k, run in enumerate(runs)]


# -- summaries -------------------------------------------------------------------------------------

SCALARS = ("train loss", "train accuracy", "validation loss", "validation accuracy", "train loss unweighted",
                 "train accuracy unweighted", "validation accuracy unweighted", "train steps", "time",
                 "train mean abs grad", "train mean abs weight")


def final_row(run: Run, h: dict) -> dict:
    row = {"experiment": run.experiment, "label": run.label}
    row.update({key: h[key][-1] for key in SCALARS})
    row["best validation accuracy"] = max(h["validation accuracy"])
    row["epoch of min validation loss"] = int(np.argmin(h["validation loss"]))
    row["test accuracy"] = h["test accuracy"]
    row["dead units"] = h["dead units"]
    row["parameters"] = h["parameters"]
    return row


def first_epoch_reaching(values: list[float], level: float) -> int | None:
    hits = [i for i, v in enumerate(values) if v >= level]
    return hits[0] if hits else None


def ranks(values: list[float]) -> np.ndarray:
    """Ranks 0..n-1 with ties given their mean rank (for Spearman's rho)."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(len(v))
    for value in np.unique(v):
        r[v == value] = r[v == value].mean()
    return r


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    if len(a) < 3 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def intro_answer(h: dict) -> dict:
    """2.3d-e: Adam lr 0.01, batch 16: does the loss go down, has the training converged?"""
    loss = h["train loss unweighted"]
    n = len(loss)
    late = loss[n // 2:]
    rises = sum(b > a for a, b in zip(loss, loss[1:]))
    return {
        "final train loss (seed's average)": loss[-1], "final train accuracy (seed's average)": h["train accuracy unweighted"][-1],
        "final train accuracy": h["train accuracy"][-1], "final validation accuracy": h["validation accuracy"][-1],
        "first epoch with train accuracy >= 0.95": first_epoch_reaching(h["train accuracy"], 0.95),
        "epochs whose train loss rose": rises, "train loss range over the second half": [min(late), max(late)],
        "seed's final epoch": SEED_INTRO_FINAL,
        "answer": (f"The training loss goes {'down' if loss[-1] < loss[0] else 'up'} ({loss[0]:.3f} -> {loss[-1]:.3f}), "
                   f"rising in {rises} of {n - 1} epochs; over the second half it moves within [{min(late):.3f}, "
                   f"{max(late):.3f}]" + (": it has converged to a plateau, with the spikes of Adam's large steps at lr "
                         "0.01." if max(late) - min(late) < 0.5 * (loss[0] - min(late)) else ": it has not converged yet.")),
    }


def independent_test_answer(runs: list[Run], hist: list[dict]) -> dict:
    """2.9b: is the run that is best on the 500 validation images also best on the independent 10k test split?"""
    val = [h["validation accuracy"][-1] for h in hist]
    test = [h["test accuracy"] for h in hist]
    chosen, best = int(np.argmax(val)), int(np.argmax(test))
    top_test = sorted(test, reverse=True)
    rank_of_chosen = 1 + top_test.index(test[chosen])
    rho = spearman(val, test)
    return {
        "runs": {r.label: {"validation accuracy": v, "test accuracy": t} for r, v, t in zip(runs, val, test)},
        "selected on validation": runs[chosen].label, "its validation accuracy": val[chosen],
        "its test accuracy": test[chosen], "its test rank": rank_of_chosen, "best on test": runs[best].label,
        "best test accuracy": test[best], "spearman(validation, test) over runs": rho,
        "mean validation - test accuracy": float(np.mean(np.subtract(val, test))),
        "answer": (f"The run chosen on validation ({runs[chosen].label}, {val[chosen]:.3f}) scores {test[chosen]:.3f} on "
                   f"the independent test split ({val[chosen] - test[chosen]:+.3f} from validation to test; the "
                   f"maximum of {len(runs)} noisy estimates on 500 images is biased upwards) and ranks "
                   f"{rank_of_chosen} of {len(runs)} there; the best on test is {runs[best].label} ({test[best]:.3f}). "
                   f"Validation and test rankings agree with Spearman rho {rho:.2f}: "
                   + ("the validation-optimal settings are also optimal on test." if chosen == best else
                            "the ordering carries over, but the validation-optimal settings are not the best on test.")),
    }


def answers(cfg: Config, runs: list[Run], hist: list[dict], source: str, timing: dict) -> dict:
    """The exercise's questions, answered from our numbers (keys follow the seed's numbering)."""
    by = {r.label: (r, h) for r, h in zip(runs, hist)}
    ans: dict = {"data": {"source": source, "n_train": cfg.n_train, "n_validation": cfg.n_validation,
                                "n_test": "Fashion-MNIST test split (10k), used only in 2.9b", "split_seed": cfg.split_seed},
                       "timing": timing}
    level = 0.75
    intro = [h for r, h in zip(runs, hist) if r.experiment == "intro"]
    if intro:
        ans["2.3d-e Adam lr=0.01, batch 16"] = intro_answer(intro[0])
    if "optimizers" in cfg.experiments:
        rows = {}
        for r, h in ((r, h) for r, h in zip(runs, hist) if r.experiment == "optimizers"):
            last = max(1, len(h["train accuracy"]) // 10)
            gain = h["train accuracy"][-1] - h["train accuracy"][max(0, len(h["train accuracy"]) - 1 - last)]
            verdict = ("failed" if h["validation accuracy"][-1] < 0.5 and gain < 0.01 else
                             "still improving" if gain > 0.01 or h["train accuracy"][-1] < 0.9 else "converged")
            rows[r.label] = {"train accuracy": h["train accuracy"][-1], "validation accuracy": h["validation accuracy"][-1],
                             f"first epoch with validation accuracy >= {level}": first_epoch_reaching(h["validation accuracy"], level),
                                   "train accuracy gain over the last 10% of epochs": gain, "verdict": verdict,
                                   "dead hidden units": h["dead units"]}
        ans["2.5b converged"] = rows
        if "Adam lr=0.1" in by:
            h = by["Adam lr=0.1"][1]
            ans["2.5d Adam lr=0.1"] = {"final train accuracy": h["train accuracy"][-1],
                                             "final validation accuracy": h["validation accuracy"][-1],
                                             "max train loss": max(h["train loss"]), "dead hidden units": h["dead units"],
                                             "explanation": "steps of size ~lr=0.1 per weight (Adam normalises the gradient) "
                                             "throw the ReLUs into dead or saturated regions; the net collapses to few classes"}
        if "Adam lr=0.001" in by:
            h = by["Adam lr=0.001"][1]
            k = int(np.argmin(h["validation loss"]))
            logits = h["train 4: Linear output abs mean"]
            ans["2.5g Adam lr=0.001 loss up, accuracy flat"] = {
                      "epoch of min validation loss": k, "validation loss at min": h["validation loss"][k],
                      "validation loss at end": h["validation loss"][-1],
                      "validation accuracy at min-loss epoch": h["validation accuracy"][k],
                      "validation accuracy at end": h["validation accuracy"][-1],
                      "mean |logit| (train) at epochs 1, 5, 25, 80, last": [logits[min(e, len(logits) - 1)] for e in (1, 5, 25, 80, len(logits) - 1)],
                      "explanation": "after fitting the training set the logits keep growing: the argmax (accuracy) no longer "
                                     "changes, but the few wrong validation predictions become ever more confident, so their "
                                     "cross-entropy and the mean validation loss rise"}
    if "batch_size" in cfg.experiments:
        ans["2.5i-k batch size"] = {r.label: {
                  "final train accuracy": h["train accuracy"][-1], "final validation accuracy": h["validation accuracy"][-1],
                  "updates per epoch": h["train steps"][0], "seconds per epoch": h["time"][-1] / len(h["time"]),
            f"epoch / updates / seconds to validation accuracy >= {level}": _reach(h, level),
                  "seed's total seconds": SEED_BATCH_TIMES.get(r.batch_size)}
            for r, h in zip(runs, hist) if r.experiment == "batch_size"}
    if "batchnorm" in cfg.experiments and "with batchnorm" in by:
        out = {}
        for name in ("without batchnorm", "with batchnorm"):
            h = by[name][1]
            diffs = np.diff(h["validation loss"])
            out[name] = {"final train accuracy": h["train accuracy"][-1], "final validation accuracy": h["validation accuracy"][-1],
                               "first epoch with train accuracy >= 0.95": first_epoch_reaching(h["train accuracy"], 0.95),
                               "epoch-to-epoch sd of validation loss": float(np.std(diffs)) if len(diffs) else None,
                               "final train output mean per layer": {k: h[k][-1] for k in sorted(h) if k.startswith("train ") and k.endswith("output mean")},
                               "final train output std per layer": {k: h[k][-1] for k in sorted(h) if k.startswith("train ") and k.endswith("output std")}}
        ans["2.6c-g batchnorm"] = out
    if "augmentation" in cfg.experiments:
        ans["2.7b augmentation (train - validation gap)"] = {r.label: {
                  "train accuracy": h["train accuracy"][-1], "validation accuracy": h["validation accuracy"][-1],
                  "gap": h["train accuracy"][-1] - h["validation accuracy"][-1]}
            for r, h in zip(runs, hist) if r.experiment == "augmentation"}
    if "width" in cfg.experiments:
        ans["2.8c-d width"] = {r.label: {
                  "parameters": h["parameters"], "train accuracy": h["train accuracy"][-1],
                  "validation accuracy": h["validation accuracy"][-1], "epoch of min validation loss": int(np.argmin(h["validation loss"])),
                  "validation loss rise after its min": h["validation loss"][-1] - min(h["validation loss"])}
            for r, h in zip(runs, hist) if r.experiment == "width"}
    n128 = count_parameters(build_net(128))
    ans["2.8e parameters of width 128"] = {"count": n128, "per training sample": n128 / cfg.n_train}
    base = baselines(cfg, runs, hist)
    if len(base) > 1:
        vals = [h["validation accuracy"][-1] for _, h in base]
        ans["2.9a repeated baselines"] = {
                  "runs": {r.label: {"validation accuracy": h["validation accuracy"][-1], "train accuracy": h["train accuracy"][-1]}
                     for r, h in base},
                  "validation accuracy mean": float(np.mean(vals)), "validation accuracy sd": float(np.std(vals, ddof=1)),
                  "validation accuracy range": [min(vals), max(vals)],
                  "seed's baselines (val acc)": [SEED_NUMBERS[k][1] for k in ("Adam lr=0.0001", "batch_size=32", "without batchnorm", "width=128")],
                  "conclusion": "identical settings differ by this spread, so differences between settings smaller than "
                                "~2 sd of one run are noise: average several seeds (or use cross-validation) before picking"}
    ans["2.9b independent test set"] = independent_test_answer(runs, hist)
    gaps = [max(abs(a - b) for a, b in zip(h["train accuracy"], h["train accuracy unweighted"])) for h in hist]
    lgaps = [max(abs(a - b) for a, b in zip(h["train loss"], h["train loss unweighted"])) for h in hist]
    ans["metric averaging: weighted vs the seed's unweighted"] = {
        "max |difference| in train accuracy": max(gaps), "max |difference| in train loss": max(lgaps),
        "note": "1000 = 31*32 + 8: with batch 32 the last batch of 8 counts 4x too much in the seed's average"}
    return ans


def baselines(cfg: Config, runs: list[Run], hist: list[dict]) -> list[tuple[Run, dict]]:
    """Every run with the baseline's settings (Adam cfg.lr, batch cfg.batch_size, width 128, nothing else)."""
    return [(r, h) for r, h in zip(runs, hist)
            if r.optimizer == "adam" and r.lr == cfg.lr and r.batch_size == cfg.batch_size and r.width == 128
            and not r.batchnorm and not (r.noise_sigma or r.flip or r.shift) and r.epochs == cfg.epochs]


def _reach(h: dict, level: float):
    k = first_epoch_reaching(h["validation accuracy"], level)
    return None if k is None else [k, h["train steps"][k], h["time"][k]]


# -- outputs ---------------------------------------------------------------------------------------


def plot_grid(path: Path, items: list[tuple[str, dict]], panels: list[tuple[str, tuple[str, ...]]], cols: int):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = math.ceil(len(items) / cols)
    ncols = cols * len(panels)
    fig, axs = plt.subplots(rows, ncols, figsize=(3.2 * ncols, 2.6 * rows), squeeze=False)
    for i, (title, h) in enumerate(items):
        r, c = divmod(i, cols)
        for j, (x, ys) in enumerate(panels):
            ax = axs[r, c * len(panels) + j]
            for y in ys:
                ax.plot(h[x], h[y], label=y)
            if "accuracy" in ys[0]:
                ax.set_ylim(0, 1.01)
            ax.set_xlabel(x)
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=6)
    for k in range(len(items), rows * cols):
        r, c = divmod(k, cols)
        for j in range(len(panels)):
            axs[r, c * len(panels) + j].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


LOSS = ("epochs", ("train loss", "validation loss"))
ACC = ("epochs", ("train accuracy", "validation accuracy"))


def plot_logits(path: Path, h: dict, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(2, 2, figsize=(12, 8))
    for ax, metric in ((axs[0, 0], "accuracy"), (axs[0, 1], "loss")):
        for phase in ("train", "validation"):
            ax.plot(h["epochs"], h[f"{phase} {metric}"], label=f"{phase} {metric}")
        ax.set_xlabel("epochs"), ax.set_ylabel(metric), ax.set_title(title), ax.legend()
    axs[1, 0].plot(h["epochs"], h["train 4: Linear output abs mean"], label="output before softmax (training set)")
    axs[1, 0].set_xlabel("epochs"), axs[1, 0].set_ylabel("mean absolute output"), axs[1, 0].legend()
    last = len(h["epochs"]) - 1
    for epoch in sorted({min(e, last) for e in (149, 80, 25, 5, 1)}, reverse=True):
        axs[1, 1].hist(h["train outputs"][epoch].flatten(), bins=50, alpha=0.6, label=f"epoch {epoch}")
    axs[1, 1].set_xlabel("output before softmax (training set)"), axs[1, 1].set_ylabel("number of values")
    axs[1, 1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_layer_stats(path: Path, h: dict, title: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted({int(k.split(" ")[1].rstrip(":")) for k in h if k.startswith("train ") and " output " in k})
    fig, axs = plt.subplots(2, len(layers), figsize=(3.2 * len(layers), 5.5), squeeze=False)
    for col, layer in enumerate(layers):
        for row, stat in enumerate(("mean", "std")):
            ax = axs[row, col]
            for phase in ("train", "validation"):
                key = next(k for k in h if k.startswith(f"{phase} {layer}:") and k.endswith(f" output {stat}"))
                ax.plot(h["epochs"], h[key], label=f"{phase} output {stat}")
            ax.set_title(key.split(": ", 1)[1].replace(f" output {stat}", "") + f" {layer} ({stat})", fontsize=9)
            ax.set_xlabel("epochs")
            ax.legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_samples(path: Path, x: torch.Tensor, y: torch.Tensor):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    aug = BatchAugment(0.1, True, True, seed=0, device=x.device)
    fig, axs = plt.subplots(2, 9, figsize=(12, 3))
    for i in range(9):
        axs[0, i].imshow(x[i].reshape(28, 28).cpu().numpy(), cmap="gray")
        axs[1, i].imshow(aug(x[i : i + 1])[0].reshape(28, 28).cpu().numpy(), cmap="gray")
        axs[0, i].set_title(str(int(y[i])), fontsize=8)
        axs[0, i].axis("off"), axs[1, i].axis("off")
    fig.suptitle("train images (top) and NoisyDataset(0.1, flip, shift) draws (bottom)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)



def plot_test_vs_validation(path: Path, runs: list[Run], hist: list[dict]):
    """2.9b: final validation accuracy (500 images, used for selection) against test accuracy (10k, never used)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for experiment in dict.fromkeys(r.experiment for r in runs):
        pts = [(h["validation accuracy"][-1], h["test accuracy"]) for r, h in zip(runs, hist) if r.experiment == experiment]
        ax.scatter(*zip(*pts), label=experiment, s=18)
    lo = min(min(h["validation accuracy"][-1], h["test accuracy"]) for h in hist)
    ax.plot([lo, 1], [lo, 1], color="gray", lw=0.8, label="test = validation")
    ax.set(xlabel="final validation accuracy (500 images)", ylabel="test accuracy (Fashion-MNIST test split, 10k)",
           title="2.9b: validation vs an independent test set")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_tables(out: Path, runs: list[Run], hist: list[dict]) -> None:
    """history.csv (every epoch of every run), results.csv/.md (final epochs), comparison.md/.csv (vs the seed)."""
    with open(out / "history.csv", "w", newline="") as f:
        keys = sorted({k for h in hist for k, v in h.items() if isinstance(v, list) and v and np.isscalar(v[0])})
        writer = csv.writer(f)
        writer.writerow(["experiment", "label", *keys])
        for r, h in zip(runs, hist):
            for e in range(len(h["epochs"])):
                writer.writerow([r.experiment, r.label, *[h[k][e] if k in h else "" for k in keys]])
    rows = [final_row(r, h) for r, h in zip(runs, hist)]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| experiment | run | train acc | val acc | test acc | train loss | val loss | time (s) | steps |",
                   "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['experiment']} | {r['label']} | {r['train accuracy']:.3f} | {r['validation accuracy']:.3f} | "
              f"{r['test accuracy']:.3f} | {r['train loss']:.3f} | {r['validation loss']:.3f} | {r['time']:.1f} | "
              f"{r['train steps']} |" for r in rows]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    # side by side with the seed (its numbers are unweighted per-batch averages: compare both of ours)
    comp = ["| run | seed train | seed val | ours train | ours train (seed avg) | ours val | val diff |", "|---|---|---|---|---|---|---|"]
    comp_rows = []
    for r, h in zip(runs, hist):
        if r.label in SEED_NUMBERS:
            st, sv = SEED_NUMBERS[r.label]
            c = {"run": r.label, "seed train": st, "seed val": sv, "ours train": h["train accuracy"][-1],
                       "ours train unweighted": h["train accuracy unweighted"][-1], "ours val": h["validation accuracy"][-1],
                       "val diff": h["validation accuracy"][-1] - sv}
            comp_rows.append(c)
            comp.append(f"| {r.label} | {st:.3f} | {sv:.3f} | {c['ours train']:.3f} | {c['ours train unweighted']:.3f} | "
                        f"{c['ours val']:.3f} | {c['val diff']:+.3f} |")
    (out / "comparison.md").write_text("\n".join(comp) + "\n")
    if comp_rows:
        with open(out / "comparison.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(comp_rows[0]))
            writer.writeheader()
            writer.writerows(comp_rows)


def write_plots(out: Path, runs: list[Run], hist: list[dict], train) -> None:
    by_exp = collections.defaultdict(list)
    for r, h in zip(runs, hist):
        by_exp[r.experiment].append((r.label, h))
    plot_samples(out / "samples.png", train[0], train[1])
    for label, h in by_exp["intro"]:
        plot_grid(out / "intro_adam_lr0.01_batch16.png", [(f"2.3d {label}", h)],
                  [("epochs", ("train loss unweighted", "train loss")), ("epochs", ("train accuracy unweighted", "train accuracy"))], cols=1)
    if by_exp["optimizers"]:
        plot_grid(out / "optimizers.png", by_exp["optimizers"], [LOSS, ACC], cols=2)
        keep = dict(by_exp["optimizers"]).get("Adam lr=0.001")
        if keep is not None:
            plot_logits(out / "logits_adam_lr0.001.png", keep, "Adam lr=0.001")
    if by_exp["batch_size"]:
        plot_grid(out / "batch_size.png", by_exp["batch_size"],
                  [LOSS, ACC, ("train steps", ACC[1]), ("time", ACC[1])], cols=1)
    if by_exp["batchnorm"]:
        plot_grid(out / "batchnorm.png", by_exp["batchnorm"], [LOSS, ACC], cols=1)
        for label, h in by_exp["batchnorm"]:
            plot_layer_stats(out / f"layer_stats_{label.replace(' ', '_')}.png", h, label)
    if by_exp["augmentation"]:
        plot_grid(out / "augmentation.png", by_exp["augmentation"], [LOSS, ACC], cols=2)
    if by_exp["width"]:
        plot_grid(out / "width.png", by_exp["width"], [LOSS, ACC], cols=1)
    if by_exp["variance"]:
        plot_grid(out / "variance.png", by_exp["variance"], [LOSS, ACC], cols=2)
    plot_test_vs_validation(out / "test_vs_validation.png", runs, hist)


def band_metrics(result: dict) -> dict[str, float]:
    """Per run (key from plan): final train accuracy (ours, and the seed's unweighted average the seed printed),
    validation and test accuracy; plus the summaries of 2.9a (baselines) and 2.9b (independent test set)."""
    out = {}
    for run, h in zip(result["runs"], result["histories"]):
        key = run["key"]
        out[f"{key}.train_acc"] = h["train accuracy"][-1]
        out[f"{key}.train_acc_unweighted"] = h["train accuracy unweighted"][-1]
        out[f"{key}.train_loss_unweighted"] = h["train loss unweighted"][-1]
        out[f"{key}.val_acc"] = h["validation accuracy"][-1]
        out[f"{key}.test_acc"] = h["test accuracy"]
    ans = result["answers"]
    base = ans.get("2.9a repeated baselines")
    if base:
        out["baseline.val_acc"] = base["validation accuracy mean"]
        out["baseline.val_acc_sd"] = base["validation accuracy sd"]
    held = ans["2.9b independent test set"]
    out["selected.val_acc"] = held["its validation accuracy"]
    out["selected.test_acc"] = held["its test accuracy"]
    out["selected.val_minus_test"] = held["its validation accuracy"] - held["its test accuracy"]
    out["val_test_spearman"] = held["spearman(validation, test) over runs"]
    return {k: float(v) for k, v in out.items() if math.isfinite(v)}  # a metric a run cannot define is left out


def jsonable(history: dict) -> dict:
    """A history without its per-epoch logit arrays (kept only for the 2.5f plot)."""
    return {k: v for k, v in history.items() if not k.endswith(" outputs")}


def main(args: argparse.Namespace) -> dict:
    cfg = Config.from_args(args)
    repro.seed_everything(cfg.seed)
    device = core.select_device(cfg.device)
    train, _, _, source = load_split(cfg, device)
    runs = plan(cfg)
    start = time.perf_counter()
    histories = run_tasks(study_tasks(cfg, runs), cfg.workers, cfg.progress)
    total = time.perf_counter() - start
    per_experiment = collections.Counter()
    for run, h in zip(runs, histories):
        per_experiment[run.experiment] += h["time"][-1]
    timing = {"wall minutes": total / 60, "run minutes (sum over runs)": sum(per_experiment.values()) / 60,
                    "seconds per experiment": dict(per_experiment), "workers": cfg.workers, "threads per worker": 1,
                    "device": str(device), "quick": cfg.quick, "dry_run": cfg.dry_run, "runs": len(runs),
                    "updates": sum(h["train steps"][-1] for h in histories)}
    result = {"exercise": "hyperparams", "data_source": source, "config": dataclasses.asdict(cfg),
                    "runs": [dataclasses.asdict(r) for r in runs], "histories": [jsonable(h) for h in histories],
                    "answers": answers(cfg, runs, histories, source, timing)}
    if cfg.out:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        write_tables(out, runs, histories)
        write_plots(out, runs, histories, train)
        (out / "answers.json").write_text(json.dumps(result["answers"], indent=2, default=float) + "\n")
    print(f"hyperparams: {len(runs)} runs, {timing['updates']} updates in {total / 60:.2f} min "
          f"({cfg.workers} process(es) x 1 thread, {device}); outputs in {cfg.out}")
    return result


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    d = Config()
    p = argparse.ArgumentParser(description="Fashion-MNIST training study (a2 hyperparams)", add_help=add_help)
    p.add_argument("--seed", type=int, default=d.seed, metavar="S", help=f"base seed of the runs (default: {d.seed})")
    p.add_argument("--deterministic", action="store_true", help=f"deterministic kernels (default: {d.deterministic})")
    p.add_argument("--quick", action="store_true", help=f"CI budget: {QUICK} (default: {d.quick})")
    p.add_argument("--dry-run", action="store_true", help=f"one epoch of one run per experiment (default: {d.dry_run})")
    p.add_argument("--out", default=d.out, metavar="DIR", help=f"output folder; none: write nothing (default: {d.out})")
    p.add_argument("--data-root", default=d.data_root, metavar="DIR", help=f"folder with the IDX files (default: {d.data_root})")
    p.add_argument("--split-seed", type=int, default=d.split_seed, metavar="S", help=f"seed of the 1000/500 split (default: {d.split_seed})")
    p.add_argument("--n-train", type=int, default=d.n_train, metavar="N", help=f"training images (default: {d.n_train})")
    p.add_argument("--n-validation", type=int, default=d.n_validation, metavar="N", help=f"validation images (default: {d.n_validation})")
    p.add_argument("--intro-epochs", type=int, default=d.intro_epochs, metavar="E", help=f"epochs of the 2.3d run (default: {d.intro_epochs})")
    p.add_argument("--intro-lr", type=float, default=d.intro_lr, metavar="LR", help=f"Adam learning rate of 2.3d (default: {d.intro_lr})")
    p.add_argument("--intro-batch-size", type=int, default=d.intro_batch_size, metavar="B", help=f"batch size of 2.3d (default: {d.intro_batch_size})")
    p.add_argument("--epochs", type=int, default=d.epochs, metavar="E", help=f"epochs per run (default: {d.epochs})")
    p.add_argument("--aug-epochs", type=int, default=d.aug_epochs, metavar="E", help=f"epochs per augmentation run (default: {d.aug_epochs})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, metavar="B", help=f"minibatch size (default: {d.batch_size})")
    p.add_argument("--lrs", type=float, nargs="+", default=d.lrs, metavar="LR", help=f"SGD/Adam learning rates (default: {d.lrs})")
    p.add_argument("--lr", type=float, default=d.lr, metavar="LR", help=f"Adam learning rate of the later experiments (default: {d.lr})")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=d.batch_sizes, metavar="B", help=f"batch sizes compared (default: {d.batch_sizes})")
    p.add_argument("--noise-sigmas", type=float, nargs="+", default=d.noise_sigmas, metavar="S", help=f"augmentation noise stds (default: {d.noise_sigmas})")
    p.add_argument("--widths", type=int, nargs="+", default=d.widths, metavar="W", help=f"first hidden widths (default: {d.widths})")
    p.add_argument("--repeats", type=int, default=d.repeats, metavar="N", help=f"extra baseline runs (default: {d.repeats})")
    p.add_argument("--experiments", nargs="+", default=d.experiments, metavar="NAME", choices=EXPERIMENTS,
                   help=f"experiments to run (default: {d.experiments})")
    p.add_argument("--no-fused-adam", dest="fused_adam", action="store_false", help=f"use the foreach Adam kernel (default: fused={d.fused_adam})")
    p.add_argument("--workers", type=int, default=d.workers, metavar="N",
                   help=f"processes for the independent runs, one thread each (default: {d.workers})")
    p.add_argument("--device", default=d.device, metavar="DEV", help=f"auto, cpu or cuda (default: {d.device})")
    p.add_argument("--no-progress", dest="progress", action="store_false", help=f"hide the progress bar (default: progress={d.progress})")
    return p


if __name__ == "__main__":
    main(get_args_parser().parse_args())
