"""The fast training core: device choice, resident data and honest averages (ResidentLoader, Average), used by
the references; and the compiled ReLU-MLP step with the fused optimizer call (ReluMLPStep, FusedOptimizerStep),
used by the bench's training cases (labcheck.bench) and their tests only.

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

from labcheck import native


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


# The out= overloads the step calls, looked up once (torch.ops attribute lookups cost ~1 us each).
_SOFTMAX_OUT = torch.ops.aten._softmax.out
_RELU_BACKWARD_OUT = torch.ops.aten.threshold_backward.grad_input


class ReluMLPStep:
    """One training step of a ReLU MLP with cross-entropy, forward and backward written out by hand.

    The model is the Lab-3 form, logits = relu(relu(x W0 + b0) W1 + b1) W2 + b2 for any number of
    layers, weights (d_in, d_out) used as x @ W + b, loss the batch mean of cross-entropy. Autograd
    records a graph and allocates every intermediate at each step; here every buffer is allocated
    once per batch size and each operation is one fused kernel. Activations are kept feature-major,
    h^T (d, B): measured with one thread, MKL's sgemm runs the step's two big products (the
    784-wide first layer's forward and its weight update) at ~96% and ~91% of square-matrix peak in
    this orientation, against ~87% and ~82% batch-major, and a 10-wide output product ~3x faster:

      forward   h^T = addmm(b, W^T, h^T) then relu_ in place (the ReLU output is its own mask)
      loss grad d^T = softmax(logits^T, dim 0) - onehot^T, B times autograd's log_softmax + nll: the
                batch mean's 1/B rides on the alpha of the products below (exact for a power-of-two B)
      backward  dh^T = W d^T, then threshold_backward(dh^T, h^T, 0) in place (the ReLU mask from h)
      update    lr given, momentum 0: W.addmm_(h^T, d, alpha=-lr/B) and b.addmv_(d^T, 1, alpha=-lr/B),
                the gradient never materialised, each W updated right after its last use;
                momentum > 0: gradients into buffers, then v = mu v + g, p -= lr v (torch._foreach_*);
                lr None: gradients into buffers exposed as p.grad (set_grad=False: not; from_linears
                sets them on the nn.Linear parameters), for a torch.optim optimizer's step, which
                step(x, y, optimizer=FusedOptimizerStep(...)) runs: an SGD's layer by layer in the backward.

    The arithmetic is autograd's up to float32 rounding: the fused update p - lr*(h^T d) rounds once
    where autograd's p.add_(g, alpha=-lr) rounds g first (tests/test_training_core.py compares the two).
    Every call is device-generic (no host sync, no CPU-only op), so the same step runs on CUDA.

    The step runs compiled where labcheck.native can be built: the same 17 ATen calls from C++,
    bit-identical, without the ~100 us that Python's argument parsing and glue added to the Lab-3 step
    (838 -> 713-744 us per step in the bench's loop). _python_step is the readable original and the fallback.
    """

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor], lr: float | None = 0.01,
                 momentum: float = 0.0, set_grad: bool = True, compiled: bool | None = None):
        if len(weights) != len(biases) or not weights:
            raise ValueError("one bias per weight, at least one layer")
        if lr is None and momentum:
            raise ValueError("momentum needs lr (lr=None leaves the update to a torch optimizer)")
        # compiled: None uses labcheck.native's step where it can be built, True requires it, False never
        self._compiled = None if compiled is False else native.module()
        if compiled and self._compiled is None:
            raise RuntimeError(f"no compiled training step: {native.status()}")
        self.weights = list(weights)  # [(d_in, d_out)], updated in place
        self.biases = list(biases)  # [(d_out,)]
        self.lr = lr
        self.momentum = momentum
        self.params = [p for pair in zip(self.weights, self.biases) for p in pair]  # W0, b0, W1, b1, ...
        # Views made once (the updates are in place, so they stay valid): at ~1 us of Python each, the
        # dozens a step would otherwise create cost ~5% of the Lab-3 step.
        self._weights_t = [w.t() for w in self.weights]  # [(d_out, d_in)]
        self._bias_columns = [b[:, None] for b in self.biases]  # [(d_out, 1)]
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
        # per layer (W, b, dW, db): what FusedOptimizerStep.sgd_in_backward groups the optimizer's tensors by
        self._layers = [(w, b, *(() if self.grads is None else self.grads[2 * j:2 * j + 2]))
                        for j, (w, b) in enumerate(zip(self.weights, self.biases))]

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
            hidden_t = [torch.empty(w.shape[1], batch, **kw) for w in self.weights[:-1]]  # [(d_j, B)]
            classes = self.weights[-1].shape[1]
            self._buffers[batch] = SimpleNamespace(
                hidden_t=hidden_t, grad_hidden_t=[torch.empty_like(h) for h in hidden_t],  # [(d_j, B)]
                logits_t=torch.empty(classes, batch, **kw),  # (K, B)
                grad_logits_t=torch.empty(classes, batch, **kw),  # (K, B)
                ones=torch.ones(batch, **kw),  # (B,) sums over the batch as one addmv
                minus_ones=torch.full((1, batch), -1.0, **kw),  # (1, B) the one-hot subtraction
            )
            buf = self._buffers[batch]
            buf.products = self._products(buf)
            buf.compiled = None if self._compiled is None else self._compiled.Step(
                weights=self.weights, biases=self.biases, lr=0.0 if self.lr is None else self.lr,
                grad_weights=[] if self.grads is None else self.grads[0::2],  # []: the fused update
                grad_biases=[] if self.grads is None else self.grads[1::2], hidden_t=buf.hidden_t,
                grad_hidden_t=buf.grad_hidden_t, logits_t=buf.logits_t, grad_logits_t=buf.grad_logits_t,
                ones=buf.ones, minus_ones=buf.minus_ones)
        return self._buffers[batch]

    def _products(self, buf: SimpleNamespace) -> list:
        """Per layer j, the operands of h^T d: (target, a, b) with target = a @ b in whichever orientation
        of W_j (or its gradient buffer) is contiguous (a Linear's weight is (d_j+1, d_j) row-major). For
        layer 0, whose h^T is the step's input, a or b is None: x^T or x goes there."""
        inputs_t = [None, *buf.hidden_t]  # [(d_j, B)]
        deltas_t = [*buf.grad_hidden_t, buf.grad_logits_t]  # [(d_j+1, B)]
        targets = self.weights if self.grads is None else self.grads[0::2]
        products = []
        for target, h_t, d_t in zip(targets, inputs_t, deltas_t):
            if target.is_contiguous():
                products.append((target, h_t, d_t.t()))  # (d_j, B) @ (B, d_j+1)
            else:
                products.append((target.t(), d_t, None if h_t is None else h_t.t()))  # (d_j+1, B) @ (B, d_j)
        return products

    def step(self, x: torch.Tensor, y: torch.Tensor, with_loss: bool = False,
             optimizer: "FusedOptimizerStep | None" = None) -> torch.Tensor | None:
        """Train on one batch x (B, d_0), y (B,) int64; returns the batch's mean loss (0-dim) if asked.

        optimizer: (lr=None) a FusedOptimizerStep over these parameters, run after the gradients are
        written. For an SGD's, the compiled step runs its kernel layer by layer inside the backward, each
        layer's update as soon as its gradients are written, while they are still in cache: bit-identical to
        step() then optimizer(), and the Lab-3 step 776 -> 760 us in the bench's loop (697 -> 679 us on one
        batch). Other optimizers run after the step.
        """
        if optimizer is not None and self.grads is None:
            raise ValueError("an optimizer needs the gradient buffers: build the step with lr=None")
        buf = self._for_batch(len(x))
        sgd = None
        if buf.compiled is not None and optimizer is not None:
            sgd = optimizer.sgd_in_backward(self._layers)
        if sgd is not None:
            buf.compiled.step_sgd(x, y, sgd)
        elif buf.compiled is not None:
            buf.compiled.step(x, y)  # _python_step's calls, from C++ (labcheck.native), no grad mode
        else:
            self._python_step(x.reshape(len(x), -1), y, buf)
        if self.lr is not None and self.grads is not None:
            self._apply_gradients()
        if optimizer is not None and sgd is None:
            optimizer()
        if not with_loss:
            return None
        logits_t = buf.logits_t  # (K, B), the forward's, before this step's update
        picked = logits_t.t().gather(1, y[:, None])  # (B, 1) logit of the true class
        return (torch.logsumexp(logits_t, 0) - picked[:, 0]).mean()  # mean cross-entropy

    @torch.no_grad()
    def _apply_gradients(self) -> None:
        if self.momentum:
            torch._foreach_mul_(self.velocities, self.momentum)  # v = mu v
            torch._foreach_add_(self.velocities, self.grads)  # + g
            torch._foreach_add_(self.params, self.velocities, alpha=-self.lr)  # p -= lr v
        else:
            torch._foreach_add_(self.params, self.grads, alpha=-self.lr)

    @torch.no_grad()
    def _python_step(self, x: torch.Tensor, y: torch.Tensor, buf: SimpleNamespace) -> None:
        """Forward, backward and update (or gradients), call for call what csrc/relu_mlp_step.cpp does."""
        batch = len(x)
        x_t = x.t()  # (d_0, B)
        ws, ws_t, bias_cols, bs = self.weights, self._weights_t, self._bias_columns, self.biases
        last = len(ws) - 1
        h_t = x_t
        for j in range(last):
            h_t = torch.addmm(bias_cols[j], ws_t[j], h_t, out=buf.hidden_t[j]).relu_()  # (d_j+1, B)
        torch.addmm(bias_cols[last], ws_t[last], h_t, out=buf.logits_t)  # (K, B)
        d_t = _SOFTMAX_OUT(buf.logits_t, 0, False, out=buf.grad_logits_t)  # (K, B) over classes
        d_t.scatter_add_(0, y[None, :], buf.minus_ones)  # minus the one-hot: B * dLoss/dlogits^T
        scale = 1.0 / batch  # the batch mean's 1/B rides on the products' alpha (exact for a power-of-two B)
        fused = self.grads is None
        for j in range(last, -1, -1):
            if j > 0:  # dh^T = W d^T, masked by the ReLU
                grad_h_t = torch.mm(ws[j], d_t, out=buf.grad_hidden_t[j - 1])  # (d_j, B)
                _RELU_BACKWARD_OUT(grad_h_t, buf.hidden_t[j - 1], 0, grad_input=grad_h_t)
            target, a, b = buf.products[j]
            if j == 0:
                a, b = (x_t, b) if a is None else (a, x)
            if fused:
                torch.addmm(target, a, b, alpha=-self.lr * scale, out=target)  # W -= lr/B h^T d
                bs[j].addmv_(d_t, buf.ones, alpha=-self.lr * scale)  # b -= lr/B sum_i d_i
            else:
                torch.addmm(target, a, b, beta=0.0, alpha=scale, out=target)  # dW = h^T d / B
                grad_bias = self.grads[2 * j + 1]
                torch.addmv(grad_bias, d_t, buf.ones, beta=0.0, alpha=scale, out=grad_bias)  # db = sum_i d_i / B
            if j > 0:
                d_t = grad_h_t


class FusedOptimizerStep:
    """optimizer.step() of a fused torch.optim.Adam, AdamW or SGD, calling the same fused kernel directly.

    Every step, torch.optim regroups its tensors by device and dtype and re-reads its per-parameter state:
    ~150 us of Python, 37% of the hyperparams core's step at batch 32 (784-128-64-10, Adam; profiled). Here
    the first call is optimizer.step() (it creates the state), and each later call hands exactly the same
    tensors (parameters, gradients, moments, step counts) to exactly the same kernel, so the results are
    bit-identical (tests/test_training_core.py). Hyperparameters are read from the param group at each call,
    so learning-rate schedules still apply. Gradient tensors replaced since the last call (autograd after
    zero_grad(set_to_none=True) makes new ones each step) are re-read, ~1 us: with optimizer.step() instead,
    the autograd cores of batchnorm and gradnorms took 20-50 us more per step (A/B in one process). Where
    the assumptions do not hold (several param groups, a tensor learning rate, a grad scaler, a parameter
    without a gradient) it calls optimizer.step().
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        groups = optimizer.param_groups
        if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)):
            raise ValueError(f"{type(optimizer).__name__}: only Adam, AdamW and SGD")
        if not all(g.get("fused") for g in groups):
            raise ValueError("the optimizer must be built with fused=True (the kernel this calls)")
        self.optimizer = optimizer
        self._tensors: tuple[list[torch.Tensor], ...] | None = None
        self._sgd_in_backward = None  # (layers, tensors, hyperparameters, SgdInBackward) of the last call

    def _ready(self) -> tuple[list[torch.Tensor], ...] | None:
        """The tensors the direct kernel call takes, or None where optimizer.step() must run instead."""
        tensors = self._tensors
        if tensors is None or not self._direct():
            return None
        params, grads = tensors[0], tensors[1]
        if any(p.grad is not g for p, g in zip(params, grads)):  # new gradient tensors: the same kernel on them
            grads = [p.grad for p in params]
            if any(g is None for g in grads):
                return None  # optimizer.step() skips such a parameter
            self._tensors = tensors = (params, grads, *tensors[2:])
        return tensors

    def sgd_in_backward(self, layers: list[tuple[torch.Tensor, ...]]):
        """For ReluMLPStep.step: this SGD's kernel call split by layer, a labcheck_native.SgdInBackward, or None.

        layers: per layer (W, b, dW, db) as the step holds them (W may be a transposed view of the
        optimizer's parameter, as from_linears makes). None where the kernel cannot be called directly
        (not SGD, before the first optimizer.step(), a parameter without a gradient), where a parameter of
        the optimizer is not one of the layers' or a gradient is not the step's buffer, or without the
        compiled extension. Hyperparameters are read at each call, as __call__ reads them.
        """
        tensors = self._ready()
        if tensors is None or not isinstance(self.optimizer, torch.optim.SGD) or native.module() is None:
            return None
        hyper = self._sgd_hyperparameters()
        cached = self._sgd_in_backward
        if cached is not None and cached[0] is layers and cached[1] is tensors and cached[2] == hyper:
            return cached[3]
        params, grads, buffers = tensors
        where = {p.data_ptr(): i for i, p in enumerate(params)}  # a transposed view shares its base's
        groups = []
        for w, b, dw, db in layers:
            index = [where.get(w.data_ptr()), where.get(b.data_ptr())]
            if None in index or [grads[i].data_ptr() for i in index] != [dw.data_ptr(), db.data_ptr()]:
                return None
            groups.append(index)
        if sorted(i for g in groups for i in g) != list(range(len(params))):
            return None  # a parameter twice, or one the step does not update
        sgd = native.module().SgdInBackward(
            params=[[params[i] for i in g] for g in groups], grads=[[grads[i] for i in g] for g in groups],
            momentum_buffers=[[buffers[i] for i in g] if buffers else [] for g in groups], **hyper)
        self._sgd_in_backward = (layers, tensors, hyper, sgd)
        return sgd

    def _sgd_hyperparameters(self) -> dict:
        """The fused SGD kernel's hyperparameters, as the param group holds them now."""
        group = self.optimizer.param_groups[0]
        return {key: group[key] for key in ("weight_decay", "momentum", "lr", "dampening", "nesterov", "maximize")}

    def _direct(self) -> bool:
        opt = self.optimizer
        return (len(opt.param_groups) == 1 and not isinstance(opt.param_groups[0]["lr"], torch.Tensor)
                and getattr(opt, "grad_scale", None) is None and getattr(opt, "found_inf", None) is None)

    def _collect(self) -> tuple[list[torch.Tensor], ...] | None:
        """Every tensor of the kernel call, once optimizer.step() has made the state; None where a parameter
        has no gradient (optimizer.step() skips it, and it may have no state yet)."""
        group, state = self.optimizer.param_groups[0], self.optimizer.state
        params = list(group["params"])
        grads = [p.grad for p in params]
        if any(g is None for g in grads):
            return None
        if isinstance(self.optimizer, torch.optim.SGD):
            buffers = [] if group["momentum"] == 0 else [state[p]["momentum_buffer"] for p in params]
            return params, grads, buffers
        max_sqs = [state[p]["max_exp_avg_sq"] for p in params] if group["amsgrad"] else []
        return (params, grads, [state[p]["exp_avg"] for p in params], [state[p]["exp_avg_sq"] for p in params],
                max_sqs, [state[p]["step"] for p in params])

    @torch.no_grad()
    def __call__(self) -> None:
        tensors = self._ready()
        if tensors is None:
            self.optimizer.step()
            self._tensors = self._collect() if self._direct() else None
            return
        if isinstance(self.optimizer, torch.optim.SGD):
            params, grads, buffers = tensors
            torch._fused_sgd_(params, grads, buffers, **self._sgd_hyperparameters(), is_first_step=False,
                              grad_scale=None, found_inf=None)
            return
        group = self.optimizer.param_groups[0]
        params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps = tensors
        torch._foreach_add_(steps, 1)
        kernel = torch._fused_adamw_ if group.get("decoupled_weight_decay") else torch._fused_adam_
        beta1, beta2 = group["betas"]
        kernel(params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps, amsgrad=group["amsgrad"], lr=group["lr"],
               beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
               maximize=group["maximize"], grad_scale=None, found_inf=None)


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
