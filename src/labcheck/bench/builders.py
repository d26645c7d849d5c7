"""The bench's cases, each built by its exercise's own builder: one function per exercise, which
takes the exercise's contract names from its reference (labcheck.bench.workload.contract) and says
how the model steps in the core and in the seed's loop.

    sgd-custom         initialize_nn + my_nn (784-100-100-10) + the custom sgd_step, batch 128
    sgd-torch          the same model with torch.optim.SGD, batch 128 (its fused kernel, layer by layer in the backward)
    batchnorm          MLP() (784-512-512(BN)-10), SGD momentum 0.9, batch 64
    hyperparams        build_net(128) (784-128-64-10), Adam, batch 32
    gradnorms          MNISTClassifierMLP(784, [128]*3, 10), SGD, nll_loss, batch 128
    gradnorms-sensing  one gradient-descent step of matrix sensing, d=100, r=5, m=5000 (sensing_grad)
    width              per-sample SGD of the 784-16-10 MLP: the reference's numpy fast path
                       (fast_sgd_pass, CPU only) against the seed's autograd sgd_one_pass

For width the seed-style loop is the seed's autograd sgd_one_pass; for sensing the seed's
per-measurement numpy loop (with the Frobenius inner product the exercise asks for).
"""
from __future__ import annotations

import copy
import functools
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from labcheck import core, data, repro
from labcheck.bench.workload import (Case, Loop, MinibatchModel, Targets, Workload, contract, linear_layers,
                                     minibatch_workload, mlp_step_flops, sensing_step_flops, train_split)

WIDTH_SAMPLES_PER_ROUND = 256  # per-sample SGD: one sgd_one_pass over this many samples
SENSING_SEED_MEASUREMENTS = 250  # the seed's numpy loop is timed on this many of the m measurements


def _module_model(model: torch.nn.Module, make_optimizer: Callable, loss_fn: Callable, device: torch.device,
                  source: str, normalize: tuple[float, float] | None = None) -> MinibatchModel:
    """An nn.Module exercise model: the core steps a plain Linear/ReLU stack with the hand-written backward
    (core.ReluMLPStep), any other model with autograd, both with torch's fused optimizer kernel called
    without torch.optim's Python (core.FusedOptimizerStep); the seed's loop with autograd and optimizer.step()."""
    model = model.to(device).train()
    seed_model = copy.deepcopy(model)  # the same initial weights, trained the seed's way
    seed_optimizer = make_optimizer(seed_model.parameters())
    linears = core.relu_mlp_linears(model) if loss_fn is F.cross_entropy else None
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

    return MinibatchModel(source, linear_layers(model), step, seed_step,
                          lambda: {k: v.detach() for k, v in model.state_dict().items()},
                          lambda: {k: v.detach() for k, v in seed_model.state_dict().items()}, normalize)


# ---------------------------------------------------------------------------------------------
# One builder per exercise: (case, device, split, seed, shuffle, steps, use_reference, **sizes) -> Workload


def build_sgd(spec: Case, device, split: data.Split, seed: int, shuffle, steps, use_reference) -> Workload:
    """Lab 3: initialize_nn + my_nn; sgd-custom updates with the custom sgd_step, sgd-torch with torch.optim.SGD."""
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

    model = MinibatchModel(source, layers, step, seed_step, lambda: {k: v.detach() for k, v in params.items()},
                           lambda: {k: v.detach() for k, v in seed_params.items()})
    return minibatch_workload(spec, device, split, seed, model, shuffle, steps)


def build_batchnorm(spec: Case, device, split: data.Split, seed: int, shuffle, steps, use_reference) -> Workload:
    """A4: MLP() with SGD, momentum 0.9 (autograd in the core too: BatchNorm is no plain ReLU stack)."""
    ref, source = contract("batchnorm", "MLP", use_reference=use_reference)
    model = _module_model(ref.MLP(), functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9), F.cross_entropy,
                          device, source)
    return minibatch_workload(spec, device, split, seed, model, shuffle, steps)


def build_hyperparams(spec: Case, device, split: data.Split, seed: int, shuffle, steps, use_reference) -> Workload:
    """A2: build_net(128) with Adam at 1e-3."""
    ref, source = contract("hyperparams", "build_net", use_reference=use_reference)
    model = _module_model(ref.build_net(128), functools.partial(torch.optim.Adam, lr=1e-3), F.cross_entropy,
                          device, source)
    return minibatch_workload(spec, device, split, seed, model, shuffle, steps)


def build_gradnorms(spec: Case, device, split: data.Split, seed: int, shuffle, steps, use_reference) -> Workload:
    """PS2: MNISTClassifierMLP(784, [128]*3, 10) with SGD and nll_loss, on images normalised as the seed does."""
    ref, source = contract("gradnorms", "MNISTClassifierMLP", use_reference=use_reference)
    # The seed normalises with the training set's mean and std (transforms.Normalize).
    normalize = (float(split.images.double().mean() / 255), float(split.images.double().std() / 255))
    model = _module_model(ref.MNISTClassifierMLP(784, [128] * 3, 10), functools.partial(torch.optim.SGD, lr=0.01),
                          F.nll_loss, device, source, normalize)
    return minibatch_workload(spec, device, split, seed, model, shuffle, steps)


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


def build_width(spec: Case, device, split: data.Split, seed: int, shuffle, steps, use_reference) -> Workload:
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


def build_gradnorms_sensing(spec: Case, device, split: None, seed: int, shuffle, steps, use_reference: bool,
                            m: int = 5000, d: int = 100, r: int = 5, seed_m: int = SENSING_SEED_MEASUREMENTS,
                            lr: float = 1e-3) -> Workload:
    """PS2's matrix sensing: one full gradient-descent step (sensing_grad) against the seed's numpy loop over
    `seed_m` of the m measurements; synthetic by the exercise's design (no data set, no shuffle)."""
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
# The cases, and building one

LAB3_TARGETS = Targets(ratio=15.0, peak_fraction=0.70)  # issue #15 item 3
CASES = {c.name: c for c in (
    Case("sgd-custom", "sgd", data.MNIST, 128, False, "my_nn 784-100-100-10 + custom sgd_step", build_sgd,
         LAB3_TARGETS),
    Case("sgd-torch", "sgd", data.MNIST, 128, False, "my_nn 784-100-100-10 + torch.optim.SGD", build_sgd,
         LAB3_TARGETS),
    Case("batchnorm", "batchnorm", data.MNIST, 64, True, "MLP() 784-512-512(BN)-10, SGD momentum 0.9",
         build_batchnorm, Targets(ratio=5.0)),
    Case("hyperparams", "hyperparams", data.FASHION, 32, False, "build_net(128) 784-128-64-10, Adam",
         build_hyperparams, Targets(ratio=8.0)),
    Case("gradnorms", "gradnorms", data.MNIST, 128, True, "MNISTClassifierMLP(784, [128]*3, 10), SGD",
         build_gradnorms),
    Case("gradnorms-sensing", "gradnorms", None, 5000, False, "matrix sensing GD step d=100 r=5 m=5000",
         build_gradnorms_sensing),
    Case("width", "width", data.FASHION, 1, True, "per-sample SGD 784-16-10, fast_sgd_pass", build_width,
         Targets(ratio=5.0), devices=("cpu",)),
)}
CASE_NAMES = tuple(CASES)


def build(case: str, device: str | torch.device = "cpu", *, seed: int = 0, shuffle: bool | None = None,
          steps: int | None = None, split: data.Split | None = None, use_reference: bool = True,
          **sizes) -> Workload:
    """The core and seed-style loops of `case` on `device`, model initialised from `seed`.

    shuffle=None keeps each loop's own order (the core reshuffles, the seed-style loop does what
    the seed did); False makes both visit the samples in file order (for comparing their updates).
    `split` replaces the seed's training images; `sizes` (m, d, r, seed_m, lr) resize the sensing case.
    """
    spec = CASES[case]
    device = core.select_device(str(device))
    with repro.freeze_rng_state():
        repro.seed_everything(seed)
        if spec.dataset is not None and split is None:
            split = train_split(spec, seed)
        return spec.build(spec, device, split, seed, shuffle, steps, use_reference, **sizes)


def cases_for(exercise: str | None, device: str | torch.device | None = None) -> list[str]:
    """Case names of `exercise` (None: all) that can run on `device` (None: any)."""
    kind = None if device is None else torch.device(device).type
    return [name for name, c in CASES.items()
            if (exercise is None or c.exercise == exercise) and (kind is None or kind in c.devices)]
