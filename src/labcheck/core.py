"""The fast training core shared by every reference: device choice, resident data, honest averages.

The seeds iterate a torchvision Dataset through a DataLoader, converting one PIL image at a
time; for these small MLPs that conversion dominates (a DataLoader epoch of the Lab-3 MLP at
batch 128 measured ~11x slower than the loop below). Here the whole data set lives as one
tensor on the training device and a batch is an index into it.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Iterator

import torch


def relu_mlp_linears(model: torch.nn.Module) -> list[torch.nn.Linear] | None:
    """The Linear layers of an nn.Sequential Linear, ReLU, ..., Linear (biases on); None for anything else."""
    layers = list(model.children()) if isinstance(model, torch.nn.Sequential) else []
    linears, relus = layers[0::2], layers[1::2]
    if (not layers or len(layers) % 2 == 0 or not all(isinstance(m, torch.nn.Linear) and m.bias is not None
                                                      for m in linears)
            or not all(type(m) is torch.nn.ReLU for m in relus)):
        return None
    return linears


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


class ReluMLPStep:
    """One training step of a ReLU MLP with cross-entropy, forward and backward written out by hand.

    The model is the Lab-3 form, logits = relu(relu(x W0 + b0) W1 + b1) W2 + b2 for any number of
    layers, weights (d_in, d_out) used as x @ W + b, loss the batch mean of cross-entropy. Autograd
    records a graph and allocates every intermediate at each step; here every buffer is allocated
    once per batch size and each operation is one fused kernel:

      forward   h = addmm(b, h, W) then relu_ in place (the ReLU output is its own mask)
      output    logits^T = addmm(b, W^T, h^T): the (K, B) orientation, because MKL's sgemm is ~3x
                slower for a 10-column product (B, 100) @ (100, 10) than for its transpose
      loss grad d^T = (softmax(logits^T, dim 0) - onehot^T) / B, as autograd's log_softmax + nll
      backward  dh = d W^T, then threshold_backward(dh, h, 0) in place (the ReLU mask from h)
      update    lr given, momentum 0: W.addmm_(h^T, d, alpha=-lr) and b.addmv_(d^T, 1, alpha=-lr),
                the gradient never materialised, each W updated right after its last use;
                momentum > 0: gradients into buffers, then v = mu v + g, p -= lr v (torch._foreach_*);
                lr None: gradients into buffers exposed as p.grad (set_grad=False: not; from_linears
                sets them on the nn.Linear parameters), for a torch.optim optimizer's step.

    The arithmetic is autograd's up to float32 rounding: the fused update p - lr*(h^T d) rounds once
    where autograd's p.add_(g, alpha=-lr) rounds g first (tests/test_training_core.py compares the two).
    Every call is device-generic (no host sync, no CPU-only op), so the same step runs on CUDA.
    """

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor], lr: float | None = 0.01,
                 momentum: float = 0.0, set_grad: bool = True):
        if len(weights) != len(biases) or not weights:
            raise ValueError("one bias per weight, at least one layer")
        if lr is None and momentum:
            raise ValueError("momentum needs lr (lr=None leaves the update to a torch optimizer)")
        self.weights = list(weights)  # [(d_in, d_out)], updated in place
        self.biases = list(biases)  # [(d_out,)]
        self.lr = lr
        self.momentum = momentum
        self.params = [p for pair in zip(self.weights, self.biases) for p in pair]  # W0, b0, W1, b1, ...
        self._buffers: dict[int, SimpleNamespace] = {}
        self.grads = None  # gradient buffers, when the update needs them (momentum, lr=None)
        if momentum or lr is None:
            # Each gradient has its parameter's strides (zeros_like keeps a transposed view's layout):
            # torch's fused optimizer kernels assume it, and silently compute garbage otherwise.
            self.grads = [torch.zeros_like(p) for p in self.params]  # [(d_in, d_out), (d_out,), ...]
            self.velocities = [torch.zeros_like(p) for p in self.params] if momentum else None
            if lr is None and set_grad:
                for p, g in zip(self.params, self.grads):
                    p.grad = g

    @classmethod
    def from_linears(cls, linears: list[torch.nn.Linear], **kwargs) -> "ReluMLPStep":
        """The step for nn.Linear layers with a ReLU between them (e.g. build_net's nn.Sequential).

        nn.Linear computes x W^T + b with W (d_out, d_in): the step works on W^T views of the same
        storage, and with lr=None each Linear's .grad is its (d_out, d_in) gradient buffer, so a
        torch.optim optimizer over model.parameters() applies the update.
        """
        step = cls([lin.weight.detach().t() for lin in linears],  # [(d_in, d_out)] views
                   [lin.bias.detach() for lin in linears], set_grad=False, **kwargs)
        if step.grads is not None:
            for j, lin in enumerate(linears):
                lin.weight.grad = step.grads[2 * j].t()  # (d_out, d_in), contiguous
                lin.bias.grad = step.grads[2 * j + 1]  # (d_out,)
        return step

    def _for_batch(self, batch: int) -> SimpleNamespace:
        """Activation and gradient buffers for `batch` samples (kept: a loader has at most two sizes)."""
        if batch not in self._buffers:
            w0 = self.weights[0]
            kw = dict(dtype=w0.dtype, device=w0.device)
            hidden = [torch.empty(batch, w.shape[1], **kw) for w in self.weights[:-1]]  # [(B, d_j)]
            classes = self.weights[-1].shape[1]
            self._buffers[batch] = SimpleNamespace(
                hidden=hidden, grad_hidden=[torch.empty_like(h) for h in hidden],  # [(B, d_j)]
                logits_t=torch.empty(classes, batch, **kw),  # (K, B)
                grad_logits_t=torch.empty(classes, batch, **kw),  # (K, B)
                ones=torch.ones(batch, **kw),  # (B,) sums over the batch as one addmv
                minus_ones=torch.full((1, batch), -1.0, **kw),  # (1, B) the one-hot subtraction
            )
        return self._buffers[batch]

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor, with_loss: bool = False) -> torch.Tensor | None:
        """Train on one batch x (B, d_0), y (B,) int64; returns the batch's mean loss (0-dim) if asked."""
        x = x.reshape(len(x), -1)  # (B, d_0)
        batch = len(x)
        buf = self._for_batch(batch)
        ws, bs, last = self.weights, self.biases, len(self.weights) - 1
        h = x
        for j in range(last):
            torch.addmm(bs[j], h, ws[j], out=buf.hidden[j]).relu_()  # (B, d_j+1)
            h = buf.hidden[j]
        logits_t = torch.addmm(bs[last][:, None], ws[last].t(), h.t(), out=buf.logits_t)  # (K, B)
        loss = None
        if with_loss:
            picked = logits_t.t().gather(1, y[:, None])  # (B, 1) logit of the true class
            loss = (torch.logsumexp(logits_t, 0) - picked[:, 0]).mean()  # mean cross-entropy
        d = torch.ops.aten._softmax.out(logits_t, 0, False, out=buf.grad_logits_t)  # (K, B) over classes
        d.scatter_add_(0, y[None, :], buf.minus_ones)  # (K, B) minus the one-hot: d[y_i, i] -= 1
        d.mul_(1.0 / batch)  # (K, B) dLoss/dlogits^T of the batch mean
        fused = self.grads is None
        for j in range(last, -1, -1):
            h_in = x if j == 0 else buf.hidden[j - 1]  # (B, d_j)
            d_t = d if j == last else None  # (K, B) orientation of the output layer
            d_std = d.t() if j == last else d  # (B, d_j+1)
            if j > 0:  # dh = d W^T, masked by the ReLU
                grad_h = torch.mm(d_std, ws[j].t(), out=buf.grad_hidden[j - 1])  # (B, d_j)
                torch.ops.aten.threshold_backward.grad_input(grad_h, h_in, 0, grad_input=grad_h)
            if fused:
                w_view, a, b_ = (ws[j].t(), d_t, h_in) if d_t is not None else (ws[j], h_in.t(), d_std)
                w_view.addmm_(a, b_, alpha=-self.lr)  # W -= lr * h^T d (or its transpose)
                bs[j].addmv_(d_std.t(), buf.ones, alpha=-self.lr)  # b -= lr * sum_i d_i
            else:
                gw, gb = self.grads[2 * j], self.grads[2 * j + 1]
                if d_t is not None:
                    torch.mm(d_t, h_in, out=gw.t())  # (K, d_j), written through the transposed view
                else:
                    torch.mm(h_in.t(), d_std, out=gw)  # (d_j, d_j+1)
                torch.mv(d_std.t(), buf.ones, out=gb)  # (d_j+1,)
            if j > 0:
                d = grad_h
        if self.momentum:
            torch._foreach_mul_(self.velocities, self.momentum)  # v = mu v
            torch._foreach_add_(self.velocities, self.grads)  # + g
            torch._foreach_add_(self.params, self.velocities, alpha=-self.lr)  # p -= lr v
        elif self.lr is not None and not fused:
            torch._foreach_add_(self.params, self.grads, alpha=-self.lr)
        return loss


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
