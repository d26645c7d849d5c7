"""Throughput of each exercise's training core, against the seeds' own loops and this machine's sgemm.

Used by `labcheck bench` (a table) and by tests/benchmarks/ (pytest-benchmark, `pytest -m benchmark`).
One *case* is one exercise model at the seed's batch size, built from the contract names of
exercises/<id>/reference.py (a minimal copy here stands in when a reference is missing, and says so):

    sgd-custom         initialize_nn + my_nn (784-100-100-10) + the custom sgd_step, batch 128
    sgd-torch          the same model with torch.optim.SGD, batch 128 (its fused kernel, layer by layer in the backward)
    batchnorm          MLP() (784-512-512(BN)-10), SGD momentum 0.9, batch 64
    hyperparams        build_net(128) (784-128-64-10), Adam, batch 32
    gradnorms          MNISTClassifierMLP(784, [128]*3, 10), SGD, nll_loss, batch 128
    gradnorms-sensing  one gradient-descent step of matrix sensing, d=100, r=5, m=5000 (sensing_grad)
    width              per-sample SGD of the 784-16-10 MLP: the reference's numpy fast path
                       (fast_sgd_pass, CPU only) against the seed's autograd sgd_one_pass

Figures, all from the same run:
    samples/s   the *core*: forward + backward + update on batches indexed out of tensors resident on
                the device (core.ResidentLoader), no host sync inside a round
    seed-style  the same model and update fed the seeds' way: a torchvision-style Dataset that turns
                one PIL image at a time into a tensor (ToTensor[, Normalize]), a DataLoader
                (num_workers=0, the seed's shuffle, drop_last) and a loss.item() per batch. For
                width it is the seed's autograd sgd_one_pass; for sensing the seed's per-measurement
                numpy loop (with the Frobenius inner product the exercise asks for).
    ratio       samples/s / seed-style samples/s
    GFLOP/s     matmul FLOPs executed per sample (see mlp_step_flops) x samples/s; elementwise work
                (bias, ReLU, BatchNorm, softmax, the optimizer update) is not counted: it is memory
                bound, so it does not belong in a fraction of sgemm peak (it is < 1% of the FLOPs of
                the Lab-3 step, ~8% for Adam's update at batch 32 in hyperparams).
    ceiling     (mini-batch MLPs) the ratio if everything but the step's matrix products took no time:
                those products alone, at the step's shapes (step_matmuls), against the seed-style loop.
                A ratio target above it cannot be met with this machine's sgemm.
    %peak       GFLOP/s / sgemm peak, the best torch.mm of square float32 matrices (1024, 2048), measured
                before and after the cases; the higher of the two counts
Every rate comes from the fastest round, because other processes on a shared machine only ever add
time; a clock is read only after core.synchronize(device), and on a 1-thread CPU run the clock is this
thread's CPU time (clock_for), which a loaded machine disturbs far less than the wall clock.
The grading row (measure_grading) times a class graded the old and the new way in the same run. Torch threads are set explicitly (default
1: on a busy 2-core runner OpenMP's spinning threads made a 128x784 @ 784x100 matmul 10x slower
with 2 threads than with 1) and recorded with every result.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import time
from types import SimpleNamespace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labcheck import core, data, exercises, native, paths, repro

ENFORCE_ENV = "LABCHECK_BENCH_ENFORCE"  # "1": benchmarks assert the targets (off by default)
THREADS_ENV = "LABCHECK_BENCH_THREADS"  # torch threads for benchmarks (default DEFAULT_THREADS)
CLOCK_ENV = "LABCHECK_BENCH_CLOCK"  # "wall" or "cpu" (default: see clock_for)
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
DEFAULT_THREADS = 1
PEAK_SIZES = (1024, 2048)  # square sgemm sizes whose best rate is "peak"
SAMPLES_PER_ROUND = 1024  # mini-batch cases: steps per round = this // batch size
WIDTH_SAMPLES_PER_ROUND = 256  # per-sample SGD: one sgd_one_pass over this many samples
SENSING_SEED_MEASUREMENTS = 250  # the seed's numpy loop is timed on this many of the m measurements


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
    targets: Targets = Targets()
    devices: tuple[str, ...] = ("cpu", "cuda")  # where the case can run


LAB3_TARGETS = Targets(ratio=15.0, peak_fraction=0.70)  # issue #15 item 3
CASES = {c.name: c for c in (
    Case("sgd-custom", "sgd", data.MNIST, 128, False, "my_nn 784-100-100-10 + custom sgd_step", LAB3_TARGETS),
    Case("sgd-torch", "sgd", data.MNIST, 128, False, "my_nn 784-100-100-10 + torch.optim.SGD", LAB3_TARGETS),
    Case("batchnorm", "batchnorm", data.MNIST, 64, True, "MLP() 784-512-512(BN)-10, SGD momentum 0.9",
         Targets(ratio=5.0)),
    Case("hyperparams", "hyperparams", data.FASHION, 32, False, "build_net(128) 784-128-64-10, Adam",
         Targets(ratio=8.0)),
    Case("gradnorms", "gradnorms", data.MNIST, 128, True, "MNISTClassifierMLP(784, [128]*3, 10), SGD"),
    Case("gradnorms-sensing", "gradnorms", None, 5000, False, "matrix sensing GD step d=100 r=5 m=5000"),
    Case("width", "width", data.FASHION, 1, True, "per-sample SGD 784-16-10, fast_sgd_pass", Targets(ratio=5.0),
         devices=("cpu",)),
)}
CASE_NAMES = tuple(CASES)


# ---------------------------------------------------------------------------------------------
# Threads, clocks and peak


def threads_from_env() -> int:
    return int(os.environ.get(THREADS_ENV) or DEFAULT_THREADS)


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads and numpy/scipy's BLAS threads (None: DEFAULT_THREADS); return torch's.

    The BLAS limit (the width fast path and the sensing seed loop are numpy) needs threadpoolctl,
    which scikit-learn brings in with mlxtend; without it only torch is limited.
    """
    n = DEFAULT_THREADS if n is None else n
    torch.set_num_threads(n)
    try:
        import threadpoolctl
    except ImportError:  # pragma: no cover - installed with mlxtend's scikit-learn
        pass
    else:
        threadpoolctl.threadpool_limits(limits=n, user_api="blas")
    return torch.get_num_threads()


def enforce_targets() -> bool:
    return os.environ.get(ENFORCE_ENV, "") not in ("", "0")


def timed(run: Callable[[], None], device: torch.device | str) -> Callable[[], None]:
    """`run` followed by a synchronize, so the clock read after it sees the work done."""

    def target() -> None:
        run()
        core.synchronize(device)

    return target


def clock_for(device: torch.device | str) -> Callable[[], float]:
    """The clock of every timed round: this thread's CPU time for a 1-thread CPU run, else the wall clock.

    On a shared 2-core machine other processes take the core away mid-round; wall time then
    measures the load (the sgemm peak read 20 GFLOP/s of 86 at load average 12), while
    time.thread_time counts only the time this thread ran. With one torch thread every kernel
    runs in the calling thread, so both clocks agree on a quiet machine. A GPU, or several torch
    threads, need the wall clock. LABCHECK_BENCH_CLOCK=wall|cpu overrides.
    """
    choice = os.environ.get(CLOCK_ENV, "")
    if choice not in ("", "wall", "cpu"):
        raise ValueError(f"{CLOCK_ENV} must be 'wall' or 'cpu', not {choice!r}")
    if not choice:
        choice = "cpu" if torch.device(device).type == "cpu" and torch.get_num_threads() == 1 else "wall"
    return CLOCKS[choice]


def clock_name(clock: Callable[[], float]) -> str:
    return next((name for name, c in CLOCKS.items() if c is clock), getattr(clock, "__name__", "?"))


def time_rounds(run: Callable[[], None], device: torch.device | str, seconds: float,
                min_rounds: int = 3, warmup: int = 1, max_rounds: int = 100_000,
                clock: Callable[[], float] | None = None) -> list[float]:
    """Seconds per call of `run` on `clock` (default clock_for(device)): at least `min_rounds` calls
    and `seconds` of wall time in total, after warm-up."""
    clock = clock or clock_for(device)
    for _ in range(warmup):
        run()
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < max_rounds and (len(times) < min_rounds or time.perf_counter() < end):
        core.synchronize(device)
        t0 = clock()
        run()
        core.synchronize(device)
        times.append(clock() - t0)
    return times


def plan_rounds(round_seconds: float, max_time: float, min_rounds: int, max_rounds: int = 10_000) -> int:
    """Rounds for benchmark.pedantic: fill `max_time`, but never fewer than `min_rounds`."""
    wanted = math.ceil(max_time / round_seconds) if round_seconds > 0 else max_rounds
    return max(min_rounds, min(max_rounds, wanted))


def sgemm_peak(device: torch.device | str = "cpu", sizes: tuple[int, ...] | None = None,
               seconds: float = 0.5, min_rounds: int = 3, clock: Callable[[], float] | None = None
               ) -> tuple[float, int]:
    """(GFLOP/s, n): the best float32 torch.mm rate of n x n matrices over `sizes` (PEAK_SIZES), on `device`."""
    device = torch.device(device)
    sizes = sizes or PEAK_SIZES
    best, best_n = 0.0, sizes[0]
    gen = repro.generator(0)
    for n in sizes:
        a = torch.randn(n, n, generator=gen).to(device)  # (n, n)
        b = torch.randn(n, n, generator=gen).to(device)  # (n, n)
        out = torch.empty(n, n, device=device)  # (n, n)
        fastest = min(time_rounds(lambda: torch.mm(a, b, out=out), device, seconds, min_rounds, clock=clock))
        rate = 2 * n**3 / fastest / 1e9
        if rate > best:
            best, best_n = rate, n
    return best, best_n


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
# Minimal copies of the contract names, used only when exercises/<id>/reference.py is missing


def _fallback_initialize_nn(param_dict: dict) -> dict:
    for k, (d_in, d_out) in enumerate([(784, 100), (100, 100), (100, 10)]):
        param_dict[f"W{k}"] = (torch.randn(d_in, d_out) / math.sqrt(d_in)).requires_grad_()
        param_dict[f"b{k}"] = torch.zeros(d_out, requires_grad=True)
    return param_dict


def _fallback_my_nn(input: torch.Tensor, param_dict: dict) -> torch.Tensor:
    h = input.reshape(len(input), -1)  # (B, 784)
    h = F.relu(h @ param_dict["W0"] + param_dict["b0"])  # (B, 100)
    h = F.relu(h @ param_dict["W1"] + param_dict["b1"])  # (B, 100)
    return h @ param_dict["W2"] + param_dict["b2"]  # (B, 10)


@torch.no_grad()
def _fallback_sgd_step(params, lr: float) -> None:
    for p in params:
        if p.grad is not None:
            p -= lr * p.grad
            p.grad.zero_()


class _FallbackBatchnormMLP(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                         nn.Linear(512, 10))


def _fallback_build_net(width: int = 128) -> nn.Sequential:
    return nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width // 2), nn.ReLU(),
                         nn.Linear(width // 2, 10))


class _FallbackGradnormsMLP(nn.Module):
    def __init__(self, input_size: int, hidden_sizes: list[int], output_size: int):
        super().__init__()
        sizes = [input_size, *hidden_sizes]
        self.depth = len(hidden_sizes) + 1
        layers: list[nn.Module] = [nn.Flatten()]
        for d_in, d_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(d_in, d_out, bias=False), nn.ReLU()]
        layers += [nn.Linear(sizes[-1], output_size, bias=False), nn.LogSoftmax(dim=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _fallback_sensing_measurements(A: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    return torch.einsum("mij,ij->m", A, X)  # (m,)


def _fallback_sensing_grad(U: torch.Tensor, A: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    residual = torch.einsum("mij,ij->m", A, U @ U.T) - y  # (m,)
    S = torch.einsum("m,mij->ij", residual, A)  # (d, d)
    return (2.0 / len(A)) * (S + S.T) @ U  # (d, r)


@torch.no_grad()
def _fallback_sgd_one_pass(ws, bs, X, y, reg_param, learning_rate):
    """Per-sample SGD with the gradients of the 2-layer MLP written out (no autograd)."""
    (W0, W1), (b0, b1) = ws, bs
    n = X.shape[0]
    for _ in range(n):
        i = np.random.choice(n)
        x = X[i]  # (784,)
        a = torch.addmv(b0, W0.T, x)  # (H,)
        h = a.clamp_min(0)  # (H,)
        p = torch.softmax(torch.addmv(b1, W1.T, h), dim=0)  # (K,)
        p[y[i]] -= 1.0  # dLoss/dlogits
        gh = (W1 @ p) * (a > 0)  # (H,)
        if reg_param:
            W1.mul_(1 - learning_rate * reg_param)
            W0.mul_(1 - learning_rate * reg_param)
        W1.addr_(h, p, alpha=-learning_rate)
        b1.add_(p, alpha=-learning_rate)
        W0.addr_(x, gh, alpha=-learning_rate)
        b0.add_(gh, alpha=-learning_rate)
    return ws, bs


FALLBACKS = {
    "sgd": SimpleNamespace(initialize_nn=_fallback_initialize_nn, my_nn=_fallback_my_nn,
                           sgd_step=_fallback_sgd_step),
    "batchnorm": SimpleNamespace(MLP=_FallbackBatchnormMLP),
    "hyperparams": SimpleNamespace(build_net=_fallback_build_net),
    "gradnorms": SimpleNamespace(MNISTClassifierMLP=_FallbackGradnormsMLP,
                                 sensing_measurements=_fallback_sensing_measurements,
                                 sensing_grad=_fallback_sensing_grad),
    "width": SimpleNamespace(sgd_one_pass=_fallback_sgd_one_pass),  # no fast_sgd_pass: build uses this
}


def contract(exercise: str, *names: str, use_reference: bool = True):
    """(namespace, source): the reference's contract names, or the minimal copies here if it lacks one."""
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


def _train_split(case: Case, seed: int) -> data.Split:
    """The training images the seed uses (as far as this machine has them)."""
    return exercises.get(case.exercise).train_split(_dataset(case.dataset).train, seed)


# ---------------------------------------------------------------------------------------------
# Workloads


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


def build(case: str, device: str | torch.device = "cpu", *, seed: int = 0, shuffle: bool | None = None,
          steps: int | None = None, split: data.Split | None = None, use_reference: bool = True,
          **sizes) -> Workload:
    """The core and seed-style loops of `case` on `device`, model initialised from `seed`.

    shuffle=None keeps each loop's own order (the core reshuffles, the seed-style loop does what
    the seed did); False makes both visit the samples in file order (for comparing their updates).
    `split` replaces the seed's training images; `sizes` (m, d, r, seed_m) resize the sensing case.
    """
    spec = CASES[case]
    device = core.select_device(str(device))
    with repro.freeze_rng_state():
        repro.seed_everything(seed)
        if spec.exercise == "gradnorms" and spec.dataset is None:
            return _build_sensing(spec, device, seed, use_reference, **sizes)
        split = split if split is not None else _train_split(spec, seed)
        if spec.exercise == "width":
            return _build_width(spec, device, split, shuffle, steps, use_reference)
        return _build_minibatch(spec, device, split, seed, shuffle, steps, use_reference)


def _build_minibatch(spec: Case, device, split: data.Split, seed: int, shuffle, steps, use_reference) -> Workload:
    from torchvision import transforms

    to_tensor: list[Callable] = [transforms.ToTensor()]
    x = split.images.reshape(len(split), -1).float().div(255)  # (N, 784), as ToTensor computes it
    loss_fn: Callable = F.cross_entropy
    if spec.exercise == "sgd":
        ref, source = contract("sgd", "initialize_nn", "my_nn", "sgd_step", use_reference=use_reference)
        init = ref.initialize_nn({"W0": torch.zeros(784, 100), "b0": torch.zeros(100), "W1": torch.zeros(100, 100),
                                  "b1": torch.zeros(100), "W2": torch.zeros(100, 10), "b2": torch.zeros(10)})
        params = {k: v.detach().to(device).requires_grad_() for k, v in init.items()}
        layers = [tuple(params[f"W{k}"].shape) for k in range(3)]
        lr = 0.01
        seed_params = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
        weights = [params[f"W{k}"] for k in range(3)]
        biases = [params[f"b{k}"] for k in range(3)]
        if spec.name == "sgd-custom":
            # core: the hand-written step, gradient and update fused; seed: autograd + the custom sgd_step
            fast = core.ReluMLPStep(weights, biases, lr=lr)

            def step(xb, yb):
                fast.step(xb, yb)

            def seed_step(xb, yb):
                loss = F.cross_entropy(ref.my_nn(xb, seed_params), yb)
                loss.backward()
                ref.sgd_step(list(seed_params.values()), lr)
                return loss
        else:
            # core: the hand-written backward into .grad and torch.optim.SGD's fused kernel on the optimizer's
            # state (core.FusedOptimizerStep), run layer by layer inside the compiled backward; seed: autograd + SGD
            fast = core.ReluMLPStep(weights, biases, lr=None)
            optimizer_step = core.FusedOptimizerStep(torch.optim.SGD(fast.params, lr=lr, fused=True))
            seed_optimizer = torch.optim.SGD(seed_params.values(), lr=lr)

            def step(xb, yb):
                fast.step(xb, yb, optimizer=optimizer_step)

            def seed_step(xb, yb):
                seed_optimizer.zero_grad()
                loss = F.cross_entropy(ref.my_nn(xb, seed_params), yb)
                loss.backward()
                seed_optimizer.step()
                return loss

        def seed_state():
            return {k: v.detach() for k, v in seed_params.items()}

        def state():
            return {k: v.detach() for k, v in params.items()}
    else:
        if spec.exercise == "batchnorm":
            ref, source = contract("batchnorm", "MLP", use_reference=use_reference)
            model = ref.MLP()
            make_optimizer = functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9)
        elif spec.exercise == "hyperparams":
            ref, source = contract("hyperparams", "build_net", use_reference=use_reference)
            model = ref.build_net(128)
            make_optimizer = functools.partial(torch.optim.Adam, lr=1e-3)
        else:
            ref, source = contract("gradnorms", "MNISTClassifierMLP", use_reference=use_reference)
            model = ref.MNISTClassifierMLP(784, [128] * 3, 10)
            make_optimizer = functools.partial(torch.optim.SGD, lr=0.01)
            loss_fn = F.nll_loss
            # The seed normalises with the training set's mean and std (transforms.Normalize).
            mean = float(split.images.double().mean() / 255)
            std = float(split.images.double().std() / 255)
            to_tensor.append(transforms.Normalize((mean,), (std,)))
            x = (x - torch.tensor(mean)).div(torch.tensor(std))  # (N, 784), as Normalize computes it
        model = model.to(device).train()
        seed_model = copy.deepcopy(model)  # the same initial weights, trained the seed's way
        seed_optimizer = make_optimizer(seed_model.parameters())
        layers = linear_layers(model)
        linears = core.relu_mlp_linears(model) if loss_fn is F.cross_entropy else None
        # core: a plain Linear/ReLU stack gets the hand-written backward, any other model autograd;
        # both with torch's fused optimizer kernel (one kernel for all parameters, same update rule),
        # called without torch.optim's Python (core.FusedOptimizerStep)
        optimizer_step = core.FusedOptimizerStep(make_optimizer(model.parameters(), fused=True))
        if linears is not None:
            fast = core.ReluMLPStep.from_linears(linears, lr=None)

            def step(xb, yb):
                fast.step(xb, yb, optimizer=optimizer_step)
        else:
            def step(xb, yb):
                optimizer_step.optimizer.zero_grad()
                loss_fn(model(xb), yb).backward()
                optimizer_step()

        def seed_step(xb, yb):
            seed_optimizer.zero_grad()
            loss = loss_fn(seed_model(xb), yb)
            loss.backward()
            seed_optimizer.step()
            return loss

        def state():
            return {k: v.detach() for k, v in model.state_dict().items()}

        def seed_state():
            return {k: v.detach() for k, v in seed_model.state_dict().items()}

    batch = spec.batch_size
    steps = steps or max(1, SAMPLES_PER_ROUND // batch)
    resident = core.ResidentLoader(x.to(device), split.labels.to(device), batch_size=batch,
                                   shuffle=True if shuffle is None else shuffle, drop_last=True, seed=seed)
    resident_batches = _cycle(resident)

    def core_round() -> None:
        for _ in range(steps):
            xb, yb = next(resident_batches)  # (B, 784), (B,)
            step(xb, yb)

    seed_loader = torch.utils.data.DataLoader(
        SeedStyleDataset(split.images, split.labels, transforms.Compose(to_tensor)), batch_size=batch,
        shuffle=spec.seed_shuffle if shuffle is None else shuffle, drop_last=True,
        generator=torch.Generator().manual_seed(seed))
    seed_batches = _cycle(seed_loader)

    def seed_round() -> None:
        for _ in range(steps):
            xb, yb = next(seed_batches)  # (B, 1, 28, 28), (B,)
            xb, yb = xb.to(device), yb.to(device)
            loss = seed_step(xb.reshape(len(xb), -1), yb)  # (B, 784)
            loss.item()  # every seed logs the batch loss, a host sync per step

    flops = mlp_step_flops(layers, batch) / batch
    return Workload(spec, device, source, flops, Loop(core_round, steps * batch, state),
                    Loop(seed_round, steps * batch, seed_state), step_matmuls(layers, batch, device, steps))


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


# The seed's per-sample SGD (hw2), kept as the student wrote it: autograd for every sample.
def _seed_mlp(X, ws, bs):
    hidden = X  # (n, d_0)
    for w, b in zip(ws[:-1], bs[:-1]):
        hidden = torch.nn.functional.relu(torch.matmul(hidden, w) + b[None, :])  # (n, d_j)
    return torch.matmul(hidden, ws[-1]) + bs[-1][None, :]  # (n, K)


def _seed_objective(ws, bs, X, y, reg_param):
    score = _seed_mlp(X, ws, bs)  # (n, K)
    return F.cross_entropy(input=score, target=y, reduction="mean") + 0.5 * reg_param * sum(
        [torch.norm(w) ** 2 for w in ws])


def seed_sgd_one_pass(ws, bs, X, y, reg_param, learning_rate):
    average_loss = 0.0
    for _ in range(X.shape[0]):
        idx = np.random.choice(X.shape[0])
        objective = _seed_objective(ws, bs, X[idx:idx + 1], y[idx:idx + 1], reg_param)
        average_loss = 0.99 * average_loss + 0.01 * objective.item()
        all_parameters = [*ws, *bs]
        gradients = torch.autograd.grad(outputs=objective, inputs=all_parameters)
        with torch.no_grad():
            for var, g in zip(all_parameters, gradients):
                var -= learning_rate * g
    return ws, bs


def _build_width(spec: Case, device, split: data.Split, shuffle, steps, use_reference) -> Workload:
    """Per-sample SGD: the reference's numpy fast path (fast_sgd_pass, as its train_model runs a pass)."""
    if device.type != "cpu":
        raise ValueError("width runs on the CPU only: the reference's fast path is float32 numpy")
    ref, source = contract("width", "fast_sgd_pass", "AugmentedMLP", "augment", use_reference=use_reference)
    n = steps or WIDTH_SAMPLES_PER_ROUND
    X, = data.standardize_per_pixel(split.flat_float())  # (N, 784)
    X, y = X[:n].contiguous(), split.labels[:n]  # (n, 784), (n,)
    hidden, lr = 16, 0.01
    w0, w1 = 1e-6 * torch.randn(784, hidden), 1e-6 * torch.randn(hidden, 10)  # the seed's init

    def weights():
        return ([w0.clone().requires_grad_(), w1.clone().requires_grad_()],
                [torch.zeros(hidden, requires_grad=True), torch.zeros(10, requires_grad=True)])

    seed_ws, seed_bs = weights()
    if hasattr(ref, "fast_sgd_pass"):
        net = ref.AugmentedMLP.from_lists(*weights())
        X_aug, y_np = ref.augment(X), y.numpy()  # (n, 785), (n,)
        core_ws, core_bs = net.ws, net.bs  # views of the augmented matrices

        def core_round() -> None:
            index = np.random.choice(n, size=n)  # (n,) the same draws as n calls of np.random.choice(n)
            ref.fast_sgd_pass(net, X_aug, y_np, index, lr, 0.0)
    else:
        core_ws, core_bs = weights()

        def core_round() -> None:
            ref.sgd_one_pass(core_ws, core_bs, X, y, 0.0, lr)

    def seed_round() -> None:
        seed_sgd_one_pass(seed_ws, seed_bs, X, y, 0.0, lr)

    def state_of(ws, bs):
        return lambda: {"W0": ws[0].detach(), "W1": ws[1].detach(), "b0": bs[0].detach(), "b1": bs[1].detach()}

    flops = mlp_step_flops([(784, hidden), (hidden, 10)], 1)
    return Workload(spec, device, source, flops, Loop(core_round, n, state_of(core_ws, core_bs)),
                    Loop(seed_round, n, state_of(seed_ws, seed_bs)))


def _build_sensing(spec: Case, device, seed: int, use_reference: bool, m: int = 5000, d: int = 100, r: int = 5,
                   seed_m: int = SENSING_SEED_MEASUREMENTS, lr: float = 1e-3) -> Workload:
    ref, source = contract("gradnorms", "sensing_measurements", "sensing_grad", use_reference=use_reference)
    gen = repro.generator(seed)
    U_star = torch.randn(d, r, generator=gen) / math.sqrt(d)  # (d, r)
    X_star = U_star @ U_star.T  # (d, d)
    A = torch.randn(m, d, d, generator=gen)  # (m, d, d)
    y = ref.sensing_measurements(A, X_star)  # (m,)
    U0 = torch.randn(d, r, generator=gen) / math.sqrt(d)  # (d, r)
    A_dev, y_dev, U = A.to(device), y.to(device), U0.clone().to(device)

    def core_round() -> None:
        U.sub_(lr * ref.sensing_grad(U, A_dev, y_dev))

    seed_m = min(seed_m, m)
    A_np, y_np = A[:seed_m].numpy(), y[:seed_m].numpy()
    U_np = U0.numpy().copy()  # (d, r)

    def seed_round() -> None:
        # The seed's loop, with <A_i, U U^T> as the Frobenius inner product the exercise defines.
        res = np.zeros((d, r), dtype=np.float32)
        for j in range(seed_m):
            inner = np.sum(A_np[j] * np.dot(U_np, U_np.T))
            res = np.add(res, 2 * np.dot((inner - y_np[j]) * (A_np[j] + A_np[j].T), U_np))
        U_np[...] = U_np - (lr / seed_m) * res

    return Workload(spec, device, source, sensing_step_flops(m, d, r) / m,
                    Loop(core_round, m, lambda: {"U": U.detach()}),
                    Loop(seed_round, seed_m, lambda: {"U": torch.from_numpy(U_np)}))


# ---------------------------------------------------------------------------------------------
# Results


@dataclasses.dataclass
class Result:
    case: str
    exercise: str
    device: str
    threads: int
    batch_size: int
    source: str
    samples_per_s: float  # core, fastest round
    samples_per_s_median: float  # core, median round
    seed_samples_per_s: float  # seed-style loop, fastest round
    flops_per_sample: float
    peak_gflops: float
    peak_n: int
    matmul_samples_per_s: float | None = None  # the step's matrix products alone (Workload.matmuls)

    @property
    def ratio(self) -> float:
        return self.samples_per_s / self.seed_samples_per_s

    @property
    def ratio_ceiling(self) -> float | None:
        """The ratio a core would reach if everything but its matrix products took no time."""
        return None if self.matmul_samples_per_s is None else self.matmul_samples_per_s / self.seed_samples_per_s

    @property
    def gflops(self) -> float:
        return self.flops_per_sample * self.samples_per_s / 1e9

    @property
    def peak_fraction(self) -> float:
        return self.gflops / self.peak_gflops

    def verdicts(self) -> dict[str, str]:
        """'PASS', 'MISS' or '' (no target here) for the ratio and the peak fraction."""
        targets = CASES[self.case].targets if self.device == "cpu" else Targets()
        out = {}
        for key, target, value in (("ratio", targets.ratio, self.ratio),
                                   ("peak_fraction", targets.peak_fraction, self.peak_fraction)):
            out[key] = "" if target is None else ("PASS" if value >= target else "MISS")
        return out

    def misses(self) -> list[str]:
        targets = CASES[self.case].targets
        v = self.verdicts()
        msgs = []
        if v["ratio"] == "MISS":
            msg = f"{self.case}: {self.ratio:.1f}x the seed-style loop, target >= {targets.ratio:g}x"
            ceiling = self.ratio_ceiling
            if ceiling is not None and ceiling < targets.ratio:
                msg += (f" (out of reach here: the step's matrix products alone run at {ceiling:.1f}x, so no "
                        "implementation on this machine's sgemm gets there)")
            msgs.append(msg)
        if v["peak_fraction"] == "MISS":
            msgs.append(f"{self.case}: {self.peak_fraction:.0%} of sgemm peak ({self.gflops:.1f} of "
                        f"{self.peak_gflops:.1f} GFLOP/s), target >= {targets.peak_fraction:.0%}")
        return msgs

    def extra_info(self) -> dict:
        """Machine-independent figures for pytest-benchmark's extra_info (saved with every run)."""
        targets = CASES[self.case].targets
        return {
            "case": self.case, "exercise": self.exercise, "device": self.device, "torch_threads": self.threads,
            "batch_size": self.batch_size, "model_source": self.source,
            "samples_per_s": round(self.samples_per_s, 1),
            "samples_per_s_median": round(self.samples_per_s_median, 1),
            "seed_style_samples_per_s": round(self.seed_samples_per_s, 1),
            "ratio_to_seed_style": round(self.ratio, 2), "ratio_target": targets.ratio,
            "ratio_ceiling": None if self.ratio_ceiling is None else round(self.ratio_ceiling, 2),
            "gflops": round(self.gflops, 2), "sgemm_peak_gflops": round(self.peak_gflops, 2),
            "sgemm_peak_n": self.peak_n, "peak_fraction": round(self.peak_fraction, 4),
            "peak_fraction_target": targets.peak_fraction, "flops_per_sample": self.flops_per_sample,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "training_step": native.status(),
            "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            **{f"{k}_verdict": v for k, v in self.verdicts().items() if v},
        }


def measure(work: Workload, seconds: float, peak: tuple[float, int], min_rounds: int = 3) -> Result:
    """Time the seed-style loop, then the core, `seconds` each, and combine with `peak`."""
    seed_times = time_rounds(work.seed.run, work.device, seconds, min_rounds)
    core_times = time_rounds(work.core.run, work.device, seconds, min_rounds)
    matmul_fastest = None
    if work.matmuls is not None:
        matmul_fastest = min(time_rounds(work.matmuls.run, work.device, seconds / 2, min_rounds))
    return result_from(work, min(core_times), float(np.median(core_times)), min(seed_times), peak, matmul_fastest)


def result_from(work: Workload, core_fastest: float, core_median: float, seed_fastest: float,
                peak: tuple[float, int], matmul_fastest: float | None = None) -> Result:
    return Result(work.case.name, work.case.exercise, work.device.type, torch.get_num_threads(),
                  work.case.batch_size, work.source, work.core.samples / core_fastest,
                  work.core.samples / core_median, work.seed.samples / seed_fastest, work.flops_per_sample,
                  peak[0], peak[1],
                  None if matmul_fastest is None else work.matmuls.samples / matmul_fastest)


def _target_text(target: float | None, verdict: str, fmt: str) -> str:
    return "" if target is None else f">={fmt.format(target)} {verdict}"


def format_table(results: list[Result]) -> str:
    header = (f"{'case':18s} {'batch':>5s} {'samples/s':>10s} {'seed-style':>10s} {'ratio':>7s} {'target':<11s}"
              f" {'ceiling':>7s} {'GFLOP/s':>8s} {'%peak':>6s} {'target':<10s} model")
    lines = [header]
    for res in results:
        t = CASES[res.case].targets if res.device == "cpu" else Targets()
        v = res.verdicts()
        lines.append(
            f"{res.case:18s} {res.batch_size:5d} {res.samples_per_s:10,.0f} {res.seed_samples_per_s:10,.0f}"
            f" {res.ratio:6.1f}x {_target_text(t.ratio, v['ratio'], '{:g}x'):<11s}"
            f" {'' if res.ratio_ceiling is None else f'{res.ratio_ceiling:.1f}x':>7s}"
            f" {res.gflops:8.2f} {res.peak_fraction:6.1%} {_target_text(t.peak_fraction, v['peak_fraction'], '{:.0%}'):<10s}"
            f" {res.source}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Grading throughput (issue #15 item 1)

GRADING_TARGET = 5.0  # at least this many times the submissions per minute of one fresh process each
GRADING_CLASS_ENV = "LABCHECK_BENCH_GRADING_CLASS"  # class size of `labcheck bench`'s grading row; 0 skips it
DEFAULT_GRADING_CLASS = 20  # students in the benchmark class
GRADING_JOBS = 2  # graders in parallel, as `labcheck grade` defaults to


@dataclasses.dataclass
class GradingResult:
    """Submissions per minute of a class, graded the old way and the new way in the same run.

    baseline  `python -m pytest` per submission (grade.Options.grader="fresh") starting a fresh sandboxed
              worker (worker="fresh") with no cache of the reference's expected answers
              (--labcheck-expected-cache none): grading as it was
    pool      graders forked from the preloaded zygote (labcheck.gradepool), workers forked from a worker
              zygote per job (labcheck.untrusted.zygote), sharing a disk cache of expected answers that
              starts empty in this run (the first submissions fill it)
    Rates are wall clock (grading is several processes on every core), class size / seconds.
    """

    exercise: str
    class_size: int  # submissions graded by the pool
    baseline_size: int  # submissions graded the old way (one copy of each distinct example)
    jobs: int
    baseline_seconds: float
    pool_seconds: float
    mismatches: list[str]  # submissions whose per-test verdicts differ from the baseline's
    load_average: float | None = None

    @property
    def baseline_per_min(self) -> float:
        return 60.0 * self.baseline_size / self.baseline_seconds

    @property
    def pool_per_min(self) -> float:
        return 60.0 * self.class_size / self.pool_seconds

    @property
    def ratio(self) -> float:
        return self.pool_per_min / self.baseline_per_min

    @property
    def verdict(self) -> str:
        return "PASS" if self.ratio >= GRADING_TARGET and not self.mismatches else "MISS"

    def misses(self) -> list[str]:
        msgs = []
        if self.ratio < GRADING_TARGET:
            msgs.append(f"grading: {self.ratio:.1f}x the one-process-per-submission rate, target >= {GRADING_TARGET:g}x")
        if self.mismatches:
            msgs.append(f"grading: verdicts differ from the fresh-process grader for {', '.join(self.mismatches)}")
        return msgs

    def extra_info(self) -> dict:
        return {"exercise": self.exercise, "class_size": self.class_size, "baseline_size": self.baseline_size,
                "jobs": self.jobs, "submissions_per_min": round(self.pool_per_min, 2),
                "baseline_submissions_per_min": round(self.baseline_per_min, 2),
                "ratio_to_baseline": round(self.ratio, 2), "ratio_target": GRADING_TARGET,
                "ratio_verdict": self.verdict, "same_verdicts": not self.mismatches,
                "load_average_1min": self.load_average}


def grading_class(exercise: str, size: int, folder: Path) -> tuple[list, dict[str, str]]:
    """A class folder of `size` students, each a copy of a bundled example of `exercise`, round-robin.

    Returns (submissions as `labcheck grade CLASS/` finds them, student name -> example it copies).
    """
    from labcheck import grade

    examples = [sub.path for sub in grade.discover_examples(exercise)]
    if not examples:
        raise ValueError(f"{exercise} has no bundled examples to grade")
    folder.mkdir(parents=True, exist_ok=True)
    origin = {}
    for i in range(size):
        source = examples[i % len(examples)]
        name = f"student{i:03d}_{source.stem}"
        (folder / f"{name}.py").write_bytes(source.read_bytes())
        origin[name] = source.stem
    return grade.discover([folder], exercise), origin


def _verdicts(results: dict) -> tuple:
    return tuple(sorted((t["name"], t["status"], t["score"]) for t in results.get("tests", [])))


def grading_mismatches(baseline: dict[str, dict], pooled: dict[str, dict], origin: dict[str, str]) -> list[str]:
    """Students whose (test, status, points) differ from the baseline's grade of the example they copy."""
    reference = {origin[name]: _verdicts(res) for name, res in baseline.items()}
    return sorted(name for name, res in pooled.items()
                  if origin[name] in reference and _verdicts(res) != reference[origin[name]])


def grade_class(subs: list, out: Path, how: str, expected_cache: str, jobs: int = GRADING_JOBS
                ) -> tuple[float, dict[str, dict]]:
    """(wall seconds, results by submission name) of grading `subs` with graders and workers started
    `how` ("fresh" or "fork")."""
    from labcheck import grade

    opts = grade.Options(out=out, jobs=jobs, fresh=True, grader=how, worker=how,
                         extra_pytest_args=("--labcheck-expected-cache", expected_cache))
    start = time.perf_counter()
    results = grade.grade_many(subs, opts)
    return time.perf_counter() - start, results


def measure_grading(exercise: str = "sgd", class_size: int = DEFAULT_GRADING_CLASS, baseline_size: int | None = None,
                    jobs: int = GRADING_JOBS, workdir: Path | None = None) -> GradingResult:
    """Grade a class of `class_size` copies of `exercise`'s examples both ways (see GradingResult).

    The baseline grades the first `baseline_size` students (default: one of each distinct example,
    so both rates are over the same mix); every pool verdict must equal the baseline's verdict of the
    example it copies (same tests passed and failed, same points).
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="labcheck-bench-grading-", dir=workdir) as tmp:
        root = Path(tmp)
        subs, origin = grading_class(exercise, class_size, root / "class")
        distinct = len(set(origin.values()))
        baseline_size = min(class_size, baseline_size or distinct)
        baseline_seconds, baseline = grade_class(subs[:baseline_size], root / "baseline", "fresh", "none", jobs)
        pool_seconds, pooled = grade_class(subs, root / "pool", "fork", str(root / "expected"), jobs)
    mismatches = grading_mismatches(baseline, pooled, origin)
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return GradingResult(exercise, class_size, baseline_size, jobs, baseline_seconds, pool_seconds, mismatches, load)


def format_grading(res: GradingResult) -> str:
    same = "same verdicts" if not res.mismatches else f"{len(res.mismatches)} verdicts DIFFER"
    return (f"grading {res.exercise:10s} class {res.class_size:3d}, {res.jobs} jobs: {res.pool_per_min:6.1f} submissions/min"
            f" (forked graders and workers, expected-answer cache) vs {res.baseline_per_min:5.1f}/min (fresh process each, "
            f"{res.baseline_size} graded) = {res.ratio:4.1f}x  target >={GRADING_TARGET:g}x {res.verdict}; {same}")


def grading_class_size(args) -> int:
    size = getattr(args, "grading_class", None)
    if size is None:
        size = int(os.environ.get(GRADING_CLASS_ENV) or DEFAULT_GRADING_CLASS)
    return size


def cases_for(exercise: str | None, device: str | torch.device | None = None) -> list[str]:
    """Case names of `exercise` (None: all) that can run on `device` (None: any)."""
    kind = None if device is None else torch.device(device).type
    return [name for name, c in CASES.items()
            if (exercise is None or c.exercise == exercise) and (kind is None or kind in c.devices)]


def main(args) -> int:
    """`labcheck bench`: measure the cases of --exercise (default all) on --device, print a table.

    Exit status 0; with LABCHECK_BENCH_ENFORCE=1, 1 when a target is missed.
    """
    threads = set_threads(getattr(args, "threads", None) or threads_from_env())
    try:
        device = core.select_device(args.device)
    except RuntimeError as e:
        print(f"labcheck bench: {e}")
        return 2
    seconds = float(args.seconds)
    peak = sgemm_peak(device, seconds=min(seconds, 1.0))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"labcheck bench: device {device.type}, {threads} torch thread(s), sgemm peak before the cases {peak[0]:.1f} GFLOP/s "
          f"({peak[1]}x{peak[1]} float32), fastest round of >= {seconds:g} s per loop on the "
          f"{clock_name(clock_for(device))} clock, load average {load:.2f}", flush=True)
    # The hand-written step is compiled where it can be (labcheck.native) and pure Python otherwise: say which.
    print(f"training step of the ReLU MLPs: {native.status()}", flush=True)
    results = []
    for name in cases_for(args.exercise, device):
        results.append(measure(build(name, device), seconds, peak))
    # The peak is measured again after the cases and the higher of the two is used: a single measurement
    # ranged from 74 to 95 GFLOP/s on one machine in one day, and a low one flatters %peak.
    after = sgemm_peak(device, seconds=min(seconds, 1.0))
    if after[0] > peak[0]:
        results = [dataclasses.replace(r, peak_gflops=after[0], peak_n=after[1]) for r in results]
    print(f"sgemm peak after the cases {after[0]:.1f} GFLOP/s; %peak below uses the higher, "
          f"{max(peak[0], after[0]):.1f}")
    print(format_table(results))
    skipped = sorted(set(cases_for(args.exercise)) - set(cases_for(args.exercise, device)))
    if skipped:
        print(f"not run on {device.type}: {', '.join(skipped)} (CPU only)")
    print("targets are checked on CPU: >=15x the seed-style loop and >=70% of sgemm peak for the Lab-3 MLP "
          "(sgd-*), >=5x for batchnorm, >=8x for hyperparams, and >=5x the seed's autograd loop "
          "for the per-sample SGD of width")
    misses = [m for res in results for m in res.misses()]
    size = grading_class_size(args)
    exercise = args.exercise or "sgd"
    if size > 0 and exercises.REGISTRY[exercise].examples_dir.is_dir():
        print(f"grading a class of {size} copies of the bundled {exercise} examples both ways "
              f"(set {GRADING_CLASS_ENV}=0 to skip) ...", flush=True)
        graded = measure_grading(exercise, size)
        print(format_grading(graded))
        misses += graded.misses()
    for miss in misses:
        print(f"MISS {miss}")
    return 1 if misses and enforce_targets() else 0
