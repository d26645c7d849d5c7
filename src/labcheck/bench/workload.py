"""What one bench case is, and the parts every case's loops are assembled from.

A *case* is one exercise model at the seed's batch size (labcheck.bench.builders.CASES). Its
*workload* holds two loops that train the same model from the same initial weights:

    core        forward + backward + update on batches indexed out of tensors resident on the device
                (core.ResidentLoader), no host sync inside a round
    seed-style  the same model and update fed the seeds' way: a torchvision-style Dataset that turns
                one PIL image at a time into a tensor (ToTensor[, Normalize]), a DataLoader
                (num_workers=0, the seed's shuffle, drop_last) and a loss.item() per batch

plus, for the mini-batch MLPs, the step's matrix products alone (step_matmuls: the ceiling of any
core on this machine's sgemm). FLOPs are the matmul FLOPs executed per sample (mlp_step_flops);
elementwise work (bias, ReLU, BatchNorm, softmax, the optimizer update) is not counted: it is memory
bound, so it does not belong in a fraction of sgemm peak (it is < 1% of the FLOPs of the Lab-3
step, ~8% for Adam's update at batch 32 in hyperparams).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Iterator

import torch
from torch import nn

from labcheck import core, data, exercises, repro
from labcheck.bench.fallbacks import FALLBACKS

SAMPLES_PER_ROUND = 1024  # mini-batch cases: steps per round = this // batch size


@dataclasses.dataclass(frozen=True)
class Targets:
    """Speed targets of issues #9 and #15, checked on CPU only (PASS/MISS in the table, asserted on opt-in)."""

    ratio: float | None = None  # at least this many times the seed-style loop
    peak_fraction: float | None = None  # at least this fraction of sgemm peak


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    exercise: str
    dataset: str | None  # the data set the seed trains on (None: synthetic by the exercise's design)
    batch_size: int  # the seed's batch size (1: per-sample SGD; m for a full-batch GD step)
    seed_shuffle: bool  # does the seed's loader reshuffle
    what: str
    build: Callable[..., "Workload"]  # the exercise's builder (labcheck.bench.builders), called by build()
    targets: Targets = Targets()
    devices: tuple[str, ...] = ("cpu", "cuda")  # where the case can run


@dataclasses.dataclass
class Loop:
    """One way of training: `run()` does one round of steps (no final sync); `state()` the parameters."""

    run: Callable[[], None]
    samples: int  # samples processed per round
    state: Callable[[], dict[str, torch.Tensor]]


@dataclasses.dataclass
class Workload:
    case: Case
    device: torch.device
    source: str  # where the model code came from
    flops_per_sample: float  # matmul FLOPs of the core per sample processed
    core: Loop
    seed: Loop
    matmuls: Loop | None = None  # only the step's matrix products (mini-batch MLPs): the ceiling of any core


def contract(exercise: str, *names: str, use_reference: bool = True):
    """(namespace, source): the reference's contract names, or the minimal copies of
    labcheck.bench.fallbacks if it lacks one."""
    path = exercises.get(exercise).reference_path
    if not use_reference:
        return FALLBACKS[exercise], "bench copy (asked for)"
    if not path.is_file():
        return FALLBACKS[exercise], f"bench copy ({path.name} missing)"
    try:
        module = exercises.get(exercise).load_reference()
    except Exception as e:  # a broken reference must not stop the other measurements
        return FALLBACKS[exercise], f"bench copy ({path.name} failed to import: {type(e).__name__})"
    missing = [n for n in names if not hasattr(module, n)]
    if missing:
        return FALLBACKS[exercise], f"bench copy ({path.name} lacks {', '.join(missing)})"
    return module, f"exercises/{exercise}/{path.name}"


# ---------------------------------------------------------------------------------------------
# FLOP counting


def linear_layers(model: nn.Module) -> list[tuple[int, int]]:
    """(d_in, d_out) of every nn.Linear of `model`, in module order."""
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def mlp_step_flops(layers: list[tuple[int, int]], batch: int, input_requires_grad: bool = False) -> int:
    """Matmul FLOPs (multiply and add counted apart) of one training step of an MLP on `batch` samples.

    Per layer with weight (d_in, d_out): forward Y = X W, 2*B*d_in*d_out; weight gradient
    dW = X^T dY, the same; input gradient dX = dY W^T, the same, for every layer but the first
    (autograd skips it there: the data needs no gradient). So 3x the forward for every layer but
    the first, 2x for the first. Elementwise terms are not counted (see the module docstring).
    """
    total = 0
    for i, (d_in, d_out) in enumerate(layers):
        matmuls = 3 if (i > 0 or input_requires_grad) else 2
        total += matmuls * 2 * batch * d_in * d_out
    return total


def sensing_step_flops(m: int, d: int, r: int) -> int:
    """Matmul-like FLOPs of one full gradient of matrix sensing.

    U U^T: 2*d*d*r; residuals <A_i, U U^T>: 2*m*d*d; S = sum_i r_i A_i: 2*m*d*d;
    (S + S^T) U: 2*d*d*r.
    """
    return 4 * m * d * d + 4 * d * d * r


# ---------------------------------------------------------------------------------------------
# The seeds' way of feeding data


class SeedStyleDataset(torch.utils.data.Dataset):
    """torchvision.datasets.MNIST's __getitem__: a PIL image per sample, then the transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable):
        self.images, self.labels, self.transform = images, labels, transform  # (N, 28, 28) uint8, (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from PIL import Image

        image = Image.fromarray(self.images[index].numpy())  # mode "L" from a (28, 28) uint8 array
        return self.transform(image), int(self.labels[index])


def _cycle(loader) -> Iterator:
    while True:
        yield from loader



@functools.lru_cache(maxsize=None)
def _dataset(name: str) -> data.DataSet:
    return data.load(name)


def train_split(case: Case, seed: int) -> data.Split:
    """The training images the seed uses (as far as this machine has them)."""
    return exercises.get(case.exercise).train_split(_dataset(case.dataset).train, seed)


# ---------------------------------------------------------------------------------------------
# Mini-batch workloads: an exercise's builder says how its model steps, this assembles the loops


@dataclasses.dataclass
class MinibatchModel:
    """One exercise model trained two ways from the same initial weights (what a mini-batch builder returns)."""

    source: str  # where the model code came from (contract())
    layers: list[tuple[int, int]]  # (d_in, d_out) of each Linear, for the FLOP count and step_matmuls
    step: Callable[[torch.Tensor, torch.Tensor], None]  # the core's training step on (B, 784), (B,)
    seed_step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # the seed's step; returns the loss
    state: Callable[[], dict[str, torch.Tensor]]  # the core's parameters (and buffers)
    seed_state: Callable[[], dict[str, torch.Tensor]]  # the seed-style loop's
    normalize: tuple[float, float] | None = None  # (mean, std) of the seed's transforms.Normalize, if any


def minibatch_workload(spec: Case, device: torch.device, split: data.Split, seed: int, model: MinibatchModel,
                       shuffle: bool | None, steps: int | None) -> Workload:
    """The core, seed-style and matmul loops of `model` on `split`, `steps` steps per round.

    shuffle=None keeps each loop's own order (the core reshuffles, the seed-style loop does what the
    seed did); False makes both visit the samples in file order (for comparing their updates).
    """
    from torchvision import transforms

    to_tensor: list[Callable] = [transforms.ToTensor()]
    x = split.images.reshape(len(split), -1).float().div(255)  # (N, 784), as ToTensor computes it
    if model.normalize is not None:
        mean, std = model.normalize
        to_tensor.append(transforms.Normalize((mean,), (std,)))
        x = (x - torch.tensor(mean)).div(torch.tensor(std))  # (N, 784), as Normalize computes it
    batch = spec.batch_size
    steps = steps or max(1, SAMPLES_PER_ROUND // batch)
    resident = core.ResidentLoader(x.to(device), split.labels.to(device), batch_size=batch,
                                   shuffle=True if shuffle is None else shuffle, drop_last=True, seed=seed)
    resident_batches = _cycle(resident)

    def core_round() -> None:
        for _ in range(steps):
            xb, yb = next(resident_batches)  # (B, 784), (B,)
            model.step(xb, yb)

    seed_loader = torch.utils.data.DataLoader(
        SeedStyleDataset(split.images, split.labels, transforms.Compose(to_tensor)), batch_size=batch,
        shuffle=spec.seed_shuffle if shuffle is None else shuffle, drop_last=True,
        generator=torch.Generator().manual_seed(seed))
    seed_batches = _cycle(seed_loader)

    def seed_round() -> None:
        for _ in range(steps):
            xb, yb = next(seed_batches)  # (B, 1, 28, 28), (B,)
            xb, yb = xb.to(device), yb.to(device)
            loss = model.seed_step(xb.reshape(len(xb), -1), yb)  # (B, 784)
            loss.item()  # every seed logs the batch loss, a host sync per step

    flops = mlp_step_flops(model.layers, batch) / batch
    return Workload(spec, device, model.source, flops, Loop(core_round, steps * batch, model.state),
                    Loop(seed_round, steps * batch, model.seed_state),
                    step_matmuls(model.layers, batch, device, steps))


def step_matmuls(layers: list[tuple[int, int]], batch: int, device: torch.device, steps: int) -> Loop:
    """`steps` rounds of exactly the matrix products mlp_step_flops counts, at the step's shapes, and
    nothing else: forward X W^T, weight gradient dY^T X, input gradient dY W (all but the first layer).
    Its rate bounds every implementation of the step that uses this machine's sgemm."""
    gen = repro.generator(0)
    mats = []
    for j, (d_in, d_out) in enumerate(layers):
        x = torch.randn(batch, d_in, generator=gen).to(device)  # (B, d_in)
        w = torch.randn(d_out, d_in, generator=gen).to(device)  # (d_out, d_in), as nn.Linear keeps it
        dy = torch.randn(batch, d_out, generator=gen).to(device)  # (B, d_out)
        mats.append((x, w, dy, torch.empty(batch, d_out, device=device), torch.empty(d_out, d_in, device=device),
                     torch.empty(batch, d_in, device=device) if j > 0 else None))

    def run() -> None:
        for _ in range(steps):
            for x, w, dy, y, dw, dx in mats:
                torch.mm(x, w.t(), out=y)  # (B, d_out)
                torch.mm(dy.t(), x, out=dw)  # (d_out, d_in)
                if dx is not None:
                    torch.mm(dy, w, out=dx)  # (B, d_in)

    return Loop(run, steps * batch, dict)


