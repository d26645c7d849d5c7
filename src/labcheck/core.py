"""The fast training core shared by every reference: device choice, resident data, honest averages.

The seeds iterate a torchvision Dataset through a DataLoader, converting one PIL image at a
time; for these small MLPs that conversion dominates (a DataLoader epoch of the Lab-3 MLP at
batch 128 measured ~11x slower than the loop below). Here the whole data set lives as one
tensor on the training device and a batch is an index into it.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import torch


def select_device(preference: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an explicit choice that is unavailable is an error."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device 'mps' requested but MPS is not available")
    return device


def synchronize(device: torch.device | str) -> None:
    """Wait for queued kernels, so a clock read measures work done rather than work launched."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class ResidentLoader:
    """Mini-batches of tensors that already sit on the device, reshuffled each epoch.

    Shuffling uses its own torch.Generator, so the batch order depends only on `seed` and the
    epoch, never on how much of the global RNG the model consumed.
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int, shuffle: bool = True,
                 drop_last: bool = False, seed: int = 0):
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError("all tensors need the same first dimension")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def num_samples(self) -> int:
        return len(self.tensors[0])

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = self.num_samples
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.tensors[0].device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            yield tuple(t.index_select(0, index) for t in self.tensors)  # ~4x faster gather than t[index]


@dataclasses.dataclass
class Average:
    """A sample-weighted running mean (torchvision's SmoothedValue.global_avg)."""

    total: float = 0.0
    count: int = 0

    def update(self, value: float, n: int = 1) -> None:
        self.total += float(value) * n
        self.count += n

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else float("nan")


@torch.no_grad()
def evaluate_logits(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096,
                    loss: str = "cross_entropy") -> tuple[float, float]:
    """Mean loss and accuracy over every sample, summing per batch and dividing by N."""
    total_loss, correct = 0.0, 0
    loss_fn = getattr(torch.nn.functional, loss)
    for start in range(0, len(x), batch_size):
        out = model(x[start : start + batch_size])  # (B, K)
        target = y[start : start + batch_size]
        total_loss += loss_fn(out, target, reduction="sum").item()
        correct += (out.argmax(dim=1) == target).sum().item()
    return total_loss / len(x), correct / len(x)
