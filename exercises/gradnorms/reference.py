"""Per-layer gradient norms of a bias-free MLP on MNIST, and implicit regularization in matrix sensing.

Reference for labcheck exercise `gradnorms`, from the seed ../shared/seeds/ps2_gradient_norms_matrix_sensing.txt
(CS7180 Problem Set 2, Problem 1 parts 1-3 and Problem 2 b, d, e). One file: the contract names of CONTRACTS.md
section `gradnorms`, then the experiment (`Config`, `QUICK`, `DRY_RUN`, `get_args_parser`, `main`, `band_metrics`;
`labcheck reproduce gradnorms [--quick]`, `labcheck bands gradnorms --seeds N [--quick]`).

Part 1 (MNIST): MNISTClassifierMLP is Flatten, then a bias-free Linear + ReLU per hidden size, then a bias-free
Linear to the classes and LogSoftmax(dim=1). It is trained with nll_loss and SGD (lr 0.01, batch 128, 40 epochs);
after every step the Frobenius norm of each Linear weight's gradient is recorded (input to output), and averaged
over the steps of an epoch. Unlike the seed, the norms are taken per Linear weight (the seed used every
parameter), the last layer is sized from hidden_sizes[-1] (the seed used hidden_sizes[0]) and log_softmax gets
an explicit dim=1 (the seed relied on the deprecated implicit dim). Inputs are normalised with the train split's
scalar mean and std, as in the seed.

Part 2 (matrix sensing): X* = U* U*^T with U* of shape (d, r); m = 10 d r Gaussian measurement matrices A_i with
N(0, 1) entries; y_i = <A_i, X*> = sum(A_i * X*) (the trace inner product; the seed's np.inner(A_i, X*) is the
d x d matrix of row-by-row inner products instead). Gradient descent on
    f(U) = (1/m) sum_i (<A_i, U U^T> - y_i)^2,   grad f(U) = (2/m) sum_i r_i (A_i + A_i^T) U,
with r_i = <A_i, U U^T> - y_i. The operator is vectorised: A is viewed as one (m, d*d) matrix, so the m
measurements are one matrix-vector product and sum_i r_i A_i is another (two passes over A per step).

Choices the handout leaves open, documented here and in answers.json:
  - scale of U*: N(0, 1) entries divided by sqrt(d), so X*'s nonzero eigenvalues are O(1) (||X*||_F ~ sqrt(r))
    and alpha = 1e-5 .. 1e-1 spans "tiny" to "comparable to X*" (||alpha W||_2^2 ~ 4 d alpha^2).
  - learning rate: lr = lr_scale / ||X*||_2. With Gaussian A_i, E f(U) = ||U U^T - X*||_F^2, whose Hessian at
    the solution has largest eigenvalue 8 ||X*||_2 (the scalar case (u^2 - lam)^2), so gradient descent is stable
    for lr < 2 / (8 ||X*||_2) = 0.25 / ||X*||_2. lr_scale = 0.1 leaves room for the finite-m deviation. (The
    seed's 1e-4/m on an un-normalised X* with entries ~ r/4 is far below this and barely moves in 2000 steps.)
  - effective rank of U: the number of singular values >= 1e-2 * the largest one.
  - R = r starts from U_0 = N(0, 1)/sqrt(d) (same scale as U*); R = d starts from U_0 = alpha W, W ~ N(0, 1).
  - next to this documented grid (alpha 1e-5 .. 1e-1, 600 steps) runs the grid the seed ran (2d: alpha 1e-4 .. 1,
    1000 steps; 2b: R = r for 2000 steps) with lr = lr_scale / max(||X*||_2, ||U_0||_2^2): alpha = 1 starts with
    ||U_0||_2^2 ~ 4d, where the documented step diverges. A trajectory both grids share runs once.
The "sensing." metrics of band_metrics come from the synthetic problem, whatever MNIST source Part 1 used.

Sources: the seed notebook; S. Gunasekar et al., "Implicit Regularization in Matrix Factorization", NeurIPS 2017;
Y. Li, T. Ma, H. Zhang, "Algorithmic Regularization in Over-parameterized Matrix Sensing ...", COLT 2018.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from labcheck import core, data, repro

# ---------------------------------------------------------------------------------------------
# Part 1: the MLP and its per-layer gradient norms (contract names)


class MNISTClassifierMLP(nn.Module):
    """Flatten -> [bias-free Linear -> ReLU] per hidden size -> bias-free Linear -> LogSoftmax(dim=1)."""

    def __init__(self, input_size, hidden_sizes, output_size):
        super().__init__()
        self.flatten = nn.Flatten(start_dim=1)
        self.depth = len(hidden_sizes) + 1
        sizes = [input_size, *hidden_sizes, output_size]
        # Registered input to output, so self.linears[j] is layer j+1 of the network.
        self.linears = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:]))
        self.log_softmax = nn.LogSoftmax(dim=1)

    def forward(self, x):
        x = self.flatten(x)  # (B, input_size)
        for linear in self.linears[:-1]:
            x = F.relu(linear(x))  # (B, h_j)
        return self.log_softmax(self.linears[-1](x))  # (B, output_size) log-probabilities


def get_gradient_norms(model) -> list[float]:
    """Frobenius norm of each Linear weight's gradient, input to output (length model.depth)."""
    return [torch.linalg.matrix_norm(linear.weight.grad).item() for linear in model.linears]


def train_one_epoch(train_loader, model, device, optimizer):
    """One pass of SGD with nll_loss: (sample-weighted mean loss, per-layer gradient norms averaged over steps)."""
    model.train()
    loss_avg = core.Average()
    norms = []
    for images, labels in train_loader:
        images, labels = images.to(device), labels.to(device)  # (B, 1, 28, 28), (B,)
        optimizer.zero_grad()
        loss = F.nll_loss(model(images), labels)
        loss.backward()
        norms.append(get_gradient_norms(model))  # the gradient this step follows
        optimizer.step()
        loss_avg.update(loss.item(), n=len(labels))
    mean_norms = torch.tensor(norms, dtype=torch.float64).mean(dim=0)  # (depth,)
    return loss_avg.value, mean_norms.tolist()


@torch.no_grad()
def test_one_epoch(test_loader, model, device):
    """(mean nll over every test sample, number of correct predictions)."""
    model.eval()
    total_loss, num_correct, count = 0.0, 0, 0
    for images, labels in test_loader:
        images, labels = images.to(device), labels.to(device)
        log_probs = model(images)  # (B, K)
        total_loss += F.nll_loss(log_probs, labels, reduction="sum").item()
        num_correct += (log_probs.argmax(dim=1) == labels).sum().item()
        count += len(labels)
    return total_loss / count, num_correct


# ---------------------------------------------------------------------------------------------
# Part 2: matrix sensing (contract names)


def sensing_measurements(A, X):
    """y_i = <A_i, X> = sum(A_i * X) for A of shape (m, d, d): one (m, d*d) @ (d*d,) product."""
    m = A.shape[0]
    return A.reshape(m, -1) @ X.reshape(-1)  # (m,)


def _residuals(U, A, y):
    return sensing_measurements(A, U @ U.T) - y  # (m,)


def sensing_loss(U, A, y):
    """(1/m) sum_i (<A_i, U U^T> - y_i)^2 as a 0-dim tensor."""
    return _residuals(U, A, y).square().mean()


def sensing_grad(U, A, y):
    """(2/m) sum_i r_i (A_i + A_i^T) U, computed as (2/m) (G + G^T) U with G = sum_i r_i A_i."""
    m, d = A.shape[0], A.shape[1]
    r = _residuals(U, A, y)  # (m,)
    G = (r @ A.reshape(m, -1)).reshape(d, d)  # (d, d) = sum_i r_i A_i
    return (2.0 / m) * (G + G.T) @ U  # (d, R)


def gradient_descent(U0, A, y, X_star, lr, steps, callback=None):
    """`steps` steps U <- U - lr * grad f(U) from U0; distances[t] = ||U_t U_t^T - X*||_F for t = 0..steps.

    `callback(t, U_t)`, if given, is called for t = 0..steps (the experiment records singular values with it).
    """
    U = U0.clone()  # (d, R)
    distances = [torch.linalg.matrix_norm(U @ U.T - X_star).item()]
    if callback is not None:
        callback(0, U)
    for t in range(1, steps + 1):
        U = U - lr * sensing_grad(U, A, y)
        distances.append(torch.linalg.matrix_norm(U @ U.T - X_star).item())
        if callback is not None:
            callback(t, U)
    return U, distances


def effective_rank(U, rel_threshold: float = 1e-2) -> int:
    """Number of singular values of U that are >= rel_threshold * the largest one."""
    s = torch.linalg.svdvals(U.double())  # (min(d, R),) descending
    return int((s >= rel_threshold * s[0]).sum().item()) if s[0] > 0 else 0


def make_sensing_problem(d: int, r: int, m: int, generator: torch.Generator, device="cpu"):
    """(A (m, d, d), U* (d, r), X* (d, d), y (m,)) with A_ij ~ N(0, 1) and U* ~ N(0, 1) / sqrt(d)."""
    A = torch.randn(m, d, d, generator=generator).to(device)  # (m, d, d), 4 m d^2 bytes
    U_star = (torch.randn(d, r, generator=generator) / math.sqrt(d)).to(device)  # (d, r)
    X_star = U_star @ U_star.T  # (d, d), rank r
    return A, U_star, X_star, sensing_measurements(A, X_star)


def sensing_lr(X_star, lr_scale: float) -> float:
    """lr = lr_scale / ||X*||_2 (stable for lr_scale < 0.25 on the population loss; see module doc)."""
    return lr_scale / torch.linalg.matrix_norm(X_star.double(), ord=2).item()


# ---------------------------------------------------------------------------------------------
# The experiment


@dataclasses.dataclass
class Config:
    """The experiment's settings; every field is a flag of get_args_parser (m_factor is --m-factor)."""
    seed: int = 0  # seeds torch, numpy and random once, before any data, problem or model is built
    deterministic: bool = False  # run inside labcheck.repro.deterministic()
    quick: bool = False  # apply QUICK: the CI budget (smaller sensing problem, fewer epochs and steps)
    dry_run: bool = False  # apply DRY_RUN: one epoch on one batch, two GD steps on a tiny problem
    out: str | None = None  # folder for plots (PNG), logs (CSV) and answers.json; None writes nothing
    data_root: str | None = None  # extra folder searched first for MNIST IDX files
    device: str = "auto"  # auto, cpu or cuda
    # Part 1: MNIST MLP (the seed's hyperparameters)
    hidden_sizes: tuple = (128, 128, 128)  # one bias-free Linear+ReLU per entry
    lr: float = 0.01  # SGD learning rate, no momentum
    batch_size: int = 128  # train and test batch size
    epochs: int = 40  # training epochs
    # Part 2: matrix sensing, the documented choice
    d: int = 100  # X* is d x d
    r: int = 5  # rank of X*
    m_factor: int = 10  # m = m_factor * d * r measurements (m < d^2, so R = d has many global minima)
    lr_scale: float = 0.1  # GD step = lr_scale / ||X*||_2 (< 0.25 for stability)
    steps: int = 600  # GD steps per run
    alphas: tuple = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)  # U_0 = alpha W for R = d
    top_k: int = 10  # singular values of U_t tracked for the implicit-regularization plot
    rank_threshold: float = 1e-2  # effective rank: singular values >= rank_threshold * the largest
    # Part 2: the grid the seed ran (2b, 2d), next to the documented choice
    seed_alphas: tuple = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # the seed's "10E-5 ... 10E-1", i.e. 10 x 1e-5 ... 10 x 1e-1
    seed_steps: int = 1000  # the seed's GD steps per alpha (2d, 2e)
    seed_rank_r_steps: int = 2000  # the seed's GD steps for R = r (2b)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Config":
        """The flags as a Config, then QUICK (--quick) and DRY_RUN (--dry-run) applied over them."""
        return repro.config_from_args(cls, args, QUICK, DRY_RUN)


# --quick: half the epochs on mnist-5k and a 30 x 30 rank-2 sensing problem (about 1 minute on one thread here)
QUICK = dict(epochs=20, d=30, r=2, steps=300, seed_steps=500, seed_rank_r_steps=1000)
DRY_RUN = dict(epochs=1, d=8, r=1, steps=2, seed_steps=2, seed_rank_r_steps=2)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    d = Config()
    p = argparse.ArgumentParser(description="Gradient norms (MNIST MLP) and implicit regularization "
                                      "(matrix sensing), CS7180 PS2", add_help=add_help)
    p.add_argument("--seed", type=int, default=d.seed, metavar="S", help=f"random seed (default: {d.seed})")
    p.add_argument("--deterministic", action="store_true", help=f"deterministic kernels (default: {d.deterministic})")
    p.add_argument("--quick", action="store_true", help=f"CI budget: {QUICK} (default: {d.quick})")
    p.add_argument("--dry-run", action="store_true", help=f"integration test: {DRY_RUN} (default: {d.dry_run})")
    p.add_argument("--out", default=d.out, metavar="DIR", help=f"output folder; none: write nothing (default: {d.out})")
    p.add_argument("--data-root", default=d.data_root, metavar="DIR", help=f"extra folder searched for MNIST (default: {d.data_root})")
    p.add_argument("--device", default=d.device, metavar="DEV", help=f"auto, cpu or cuda (default: {d.device})")
    p.add_argument("--hidden-sizes", type=int, nargs="+", default=d.hidden_sizes, metavar="H",
                   help=f"hidden layer widths (default: {d.hidden_sizes})")
    p.add_argument("--lr", type=float, default=d.lr, metavar="LR", help=f"SGD learning rate (default: {d.lr})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, metavar="N", help=f"train and test batch size (default: {d.batch_size})")
    p.add_argument("--epochs", type=int, default=d.epochs, metavar="N", help=f"training epochs (default: {d.epochs})")
    p.add_argument("--d", type=int, default=d.d, metavar="D", help=f"X* is D x D (default: {d.d})")
    p.add_argument("--r", type=int, default=d.r, metavar="R", help=f"rank of X* (default: {d.r})")
    p.add_argument("--m-factor", type=int, default=d.m_factor, metavar="K", help=f"m = K * d * r measurements (default: {d.m_factor})")
    p.add_argument("--lr-scale", type=float, default=d.lr_scale, metavar="C", help=f"GD step = C / ||X*||_2 (default: {d.lr_scale})")
    p.add_argument("--steps", type=int, default=d.steps, metavar="T", help=f"GD steps per run (default: {d.steps})")
    p.add_argument("--alphas", type=float, nargs="+", default=d.alphas, metavar="A", help=f"init scales for R = d (default: {d.alphas})")
    p.add_argument("--top-k", type=int, default=d.top_k, metavar="K", help=f"singular values of U_t to track (default: {d.top_k})")
    p.add_argument("--rank-threshold", type=float, default=d.rank_threshold, metavar="EPS",
                   help=f"effective rank counts singular values >= EPS * the largest (default: {d.rank_threshold})")
    p.add_argument("--seed-alphas", type=float, nargs="+", default=d.seed_alphas, metavar="A",
                   help=f"the seed's init scales (default: {d.seed_alphas})")
    p.add_argument("--seed-steps", type=int, default=d.seed_steps, metavar="T", help=f"the seed's GD steps per alpha (default: {d.seed_steps})")
    p.add_argument("--seed-rank-r-steps", type=int, default=d.seed_rank_r_steps, metavar="T",
                   help=f"the seed's GD steps for R = r (default: {d.seed_rank_r_steps})")
    return p


def load_mnist_normalized(cfg: Config, device):
    """MNIST as float tensors (N, 1, 28, 28) on `device`, normalised by the train split's scalar mean/std."""
    ds = data.load(data.MNIST, cfg.data_root)
    x_train = ds.train.images.float().div(255.0).unsqueeze(1)  # (N, 1, 28, 28) in [0, 1]
    x_test = ds.test.images.float().div(255.0).unsqueeze(1)  # (M, 1, 28, 28)
    mean, std = x_train.mean(), x_train.std()  # scalars, as the seed's transforms.Normalize((mean,), (std,))
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return ds, (x_train.to(device), ds.train.labels.to(device)), (x_test.to(device), ds.test.labels.to(device)), \
        (mean.item(), std.item())


def run_mnist(cfg: Config, device) -> dict:
    ds, (x_train, y_train), (x_test, y_test), (mean, std) = load_mnist_normalized(cfg, device)
    if cfg.dry_run:
        x_train, y_train, x_test, y_test = x_train[: cfg.batch_size], y_train[: cfg.batch_size], x_test[:256], y_test[:256]
    train_loader = core.ResidentLoader(x_train, y_train, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed)
    test_loader = core.ResidentLoader(x_test, y_test, batch_size=cfg.batch_size, shuffle=False)
    model = MNISTClassifierMLP(28 * 28, list(cfg.hidden_sizes), 10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    rows = []
    start = time.perf_counter()
    for epoch in tqdm(range(1, cfg.epochs + 1), desc="MNIST epochs"):
        train_loss, norms = train_one_epoch(train_loader, model, device, optimizer)
        test_loss, correct = test_one_epoch(test_loader, model, device)
        rows.append({"epoch": epoch, "train_loss": train_loss, "test_loss": test_loss,
                           "test_acc": correct / len(y_test), **{f"grad_norm_layer{j + 1}": v for j, v in enumerate(norms)}})
    core.synchronize(device)
    return {"source": ds.source, "train_mean": mean, "train_std": std, "rows": rows,
                  "seconds": time.perf_counter() - start, "n_train": len(y_train), "n_test": len(y_test)}


def sensing_lr_at(X_star, U0, lr_scale: float) -> float:
    """lr_scale / max(||X*||_2, ||U_0||_2^2): the documented step, shrunk where the start is steeper than the
    solution (the curvature of ||U U^T - X*||_F^2 grows with ||U||^2; alpha = 1 starts at ||U_0||^2 ~ 4d)."""
    scale = max(torch.linalg.matrix_norm(X_star.double(), ord=2).item(), torch.linalg.matrix_norm(U0.double(), ord=2).item() ** 2)
    return lr_scale / scale


def run_sensing(cfg: Config, device) -> dict:
    """On one sensing problem: GD with R = r, then R = d from U_0 = alpha W for the documented alphas (documented
    step and step count) and for the seed's grid (its alphas and step counts). A trajectory shared by both grids
    (same alpha, same step) runs once, for the longer of the two step counts."""
    gen = repro.generator(cfg.seed)
    d, r = cfg.d, cfg.r
    m = cfg.m_factor * d * r
    A, U_star, X_star, y = make_sensing_problem(d, r, m, gen, device)
    lr = sensing_lr(X_star, cfg.lr_scale)
    U0_rank_r = (torch.randn(d, r, generator=gen) / math.sqrt(d)).to(device)  # (d, r), same scale as U*
    W = torch.randn(d, d, generator=gen).to(device)  # (d, d), shared by every alpha
    # trajectory (label, U0, lr) -> the step counts read from it
    wanted: dict[tuple, dict] = {}

    def want(label: str, U0, step_lr: float, steps: int, grid: str) -> None:
        entry = wanted.setdefault((label, step_lr), {"U0": U0, "checkpoints": {}})
        entry["checkpoints"][grid] = steps

    want("R=r", U0_rank_r, lr, cfg.steps, "documented")
    want("R=r", U0_rank_r, lr, cfg.seed_rank_r_steps, "seed_grid")
    for alpha in cfg.alphas:
        want(f"alpha={alpha:g}", alpha * W, lr, cfg.steps, "documented")
    for alpha in cfg.seed_alphas:
        want(f"alpha={alpha:g}", alpha * W, sensing_lr_at(X_star, alpha * W, cfg.lr_scale), cfg.seed_steps, "seed_grid")

    results = {"d": d, "r": r, "m": m, "lr": lr, "x_star_norm2": torch.linalg.matrix_norm(X_star, 2).item(),
                     "x_star_fro": torch.linalg.matrix_norm(X_star).item(), "documented": {}, "seed_grid": {}}
    for (label, step_lr), entry in tqdm(wanted.items(), desc="sensing runs"):
        at = set(entry["checkpoints"].values())  # the steps some grid reads
        top, ranks = [], {}

        def record(t, U, at=at, top=top, ranks=ranks):
            finite = bool(torch.isfinite(U).all())
            if label != "R=r":
                top.append(torch.linalg.svdvals(U)[: cfg.top_k].cpu() if finite else torch.full((cfg.top_k,), float("nan")))
            if t in at:
                ranks[t] = effective_rank(U, cfg.rank_threshold) if finite else None

        core.synchronize(device)
        start = time.perf_counter()
        steps = max(at)
        U, dist = gradient_descent(entry["U0"], A, y, X_star, step_lr, steps, callback=record)
        core.synchronize(device)
        seconds = (time.perf_counter() - start) / max(steps, 1)
        diverged = next((t for t, v in enumerate(dist) if not math.isfinite(v)), None)
        for grid, t in entry["checkpoints"].items():
            run = {"lr": step_lr, "steps": t, "distances": dist[: t + 1], "final_distance": dist[t],
                         "effective_rank": ranks[t], "diverged_at_step": diverged if diverged is not None and diverged <= t else None,
                         "seconds_per_step": seconds}
            if label != "R=r":
                run["alpha"] = float(label.split("=")[1])
                run["top_singular_values"] = torch.stack(top[: t + 1])  # (t + 1, top_k)
            results[grid][label] = run
    return results


# ---------------------------------------------------------------------------------------------
# Outputs: CSV logs, plots, answers.json


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def make_plots(out: Path, mnist: dict, sensing: dict, cfg: Config) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = mnist["rows"]
    epochs = [row["epoch"] for row in rows]
    depth = len(cfg.hidden_sizes) + 1
    written = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(epochs, [row["train_loss"] for row in rows], label="train loss")
    ax.plot(epochs, [row["test_loss"] for row in rows], marker="o", label="test loss")
    ax.set(xlabel="epoch", ylabel="NLL", title=f"Loss ({mnist['source']}, MLP {list(cfg.hidden_sizes)})")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=120)
    written.append("loss.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for j in range(depth):
        ax.plot(epochs, [row[f"grad_norm_layer{j + 1}"] for row in rows], marker=".", label=f"layer {j + 1}")
    ax.set(xlabel="epoch", ylabel="mean ||dL/dW_j||_F over the epoch's steps", title="Gradient norm per layer")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "gradient_norms.png", dpi=120)
    written.append("gradient_norms.png")

    runs = sensing["documented"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.semilogy(runs["R=r"]["distances"], label=f"documented: {runs['R=r']['steps']} steps")
    ax.semilogy(sensing["seed_grid"]["R=r"]["distances"], ls="--", label=f"the seed's {sensing['seed_grid']['R=r']['steps']} steps")
    ax.set(xlabel="t", ylabel="||U_t U_t^T - X*||_F",
           title=f"Matrix sensing, R = r = {sensing['r']} (d={sensing['d']}, m={sensing['m']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "sensing_rank_r.png", dpi=120)
    written.append("sensing_rank_r.png")

    for grid, name, what in (("documented", "sensing_overparametrized.png", f"lr {cfg.lr_scale:g}/||X*||_2"),
                             ("seed_grid", "sensing_seed_grid.png", f"the seed's grid, lr {cfg.lr_scale:g}/max(||X*||_2, ||U_0||_2^2)")):
        alphas = [k for k in sensing[grid] if k.startswith("alpha=")]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for key in alphas:
            ax.semilogy(sensing[grid][key]["distances"], label=key.replace("alpha", "α"))
        ax.set(xlabel="t", ylabel="||U_t U_t^T - X*||_F", title=f"R = d = {sensing['d']}, U_0 = αW ({what})")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        written.append(name)

    alphas = [k for k in runs if k.startswith("alpha=")]
    fig, axes = plt.subplots(1, len(alphas), figsize=(3.2 * len(alphas), 3.6), sharey=True, squeeze=False)
    for ax, key in zip(axes[0], alphas):
        ax.semilogy(runs[key]["top_singular_values"].numpy())
        ax.set(title=key.replace("alpha", "α"), xlabel="t")
    axes[0][0].set_ylabel(f"top {cfg.top_k} singular values of U_t")
    fig.suptitle(f"Implicit regularization: rank of X* is {sensing['r']}")
    fig.tight_layout()
    fig.savefig(out / "singular_values.png", dpi=120)
    written.append("singular_values.png")
    plt.close("all")
    return written


def describe_gradient_norms(rows: list[dict], depth: int) -> str:
    """The Part 3 discussion, written from the logged numbers (nothing here is a canned claim)."""
    first, last = rows[0], rows[-1]
    norms = [[row[f"grad_norm_layer{j + 1}"] for j in range(depth)] for row in rows]  # (epochs, depth)
    peak_epoch = [1 + max(range(len(rows)), key=lambda e: norms[e][j]) for j in range(depth)]
    order = sorted(range(depth), key=lambda j: -norms[-1][j])
    spread = max(norms[-1]) / min(norms[-1])
    trend = ", ".join(
        f"layer {j + 1}: {norms[0][j]:.3f} -> {norms[-1][j]:.3f} (peak at epoch {peak_epoch[j]})" for j in range(depth))
    return (
        f"Mean per-step gradient norms over {len(rows)} epochs: {trend}. In the last epoch the layers rank "
        f"{' > '.join(f'layer {j + 1}' for j in order)} by gradient norm"
        + ("; layer 1 sees the 784 input pixels, so its gradient (a sum of outer products with the inputs) "
                 "is the largest matrix" if order[0] == 0 else "")
        + f". The training loss went {first['train_loss']:.3f} -> {last['train_loss']:.3f} and the test loss "
        f"{first['test_loss']:.3f} -> {last['test_loss']:.3f}. "
        + ("The norms grew over training: the bias-free network starts with a near-uniform output (loss ~ log 10 = "
                 "2.303) and its gradients grow as it leaves that plateau. " if norms[-1][0] > norms[0][0] else
                 "The norms fell over training, as the loss and with it the per-example error signals shrink. ")
        + f"In the last epoch the largest and smallest layer norms differ by a factor {spread:.1f}"
        + (f": with {depth - 1} hidden layers no layer's gradient vanishes or explodes." if spread < 10 else
                 ": the gradient scale varies strongly with depth."))


def summarize_grid(grid: dict) -> dict:
    """Per run of one grid: its step, steps, final distance, effective rank and where it diverged (None: never)."""
    return {k: {"lr": v["lr"], "steps": v["steps"], "final_distance": v["final_distance"],
                      "effective_rank": v["effective_rank"], "diverged_at_step": v["diverged_at_step"],
                      "seconds_per_step": v["seconds_per_step"]} for k, v in grid.items()}


def rank_order_holds(per_alpha: dict) -> bool:
    """The implicit-regularization ordering: effective rank never decreases as alpha grows (diverged runs fail)."""
    items = sorted((v["alpha"], v["effective_rank"]) for v in per_alpha.values())
    ranks = [rank for _, rank in items]
    return None not in ranks and all(a <= b for a, b in zip(ranks, ranks[1:]))


def trend_answer(per_alpha: dict, r: int, small: list[str]) -> str:
    """What this run's grid shows about rank and distance as alpha grows, read off its numbers (never assumed)."""
    items = sorted((v["alpha"], v["effective_rank"], v["final_distance"]) for v in per_alpha.values())
    ranks = ", ".join(f"{a:g}: {rank}" for a, rank, _ in items)
    rising = rank_order_holds(per_alpha)
    distances = [d for _, _, d in items if d is not None]
    farther = all(a <= b for a, b in zip(distances, distances[1:]))
    return (f"Our runs: effective rank by alpha {ranks} ({'never falls' if rising else 'does not rise monotonically'} "
            f"as alpha grows); alphas {small or 'none'} end at rank {r} = rank(X*); the final distance to X* "
            f"{'grows' if farther else 'does not grow monotonically'} with alpha "
            f"({', '.join(f'{d:.3g}' for d in distances)}).")


def large_init_answer(seed_summary: dict, d: int) -> str:
    """The sentence on the seed grid's largest alpha, read off its run (distance and rank, never assumed)."""
    label = max((k for k in seed_summary if k.startswith("alpha=")), key=lambda k: float(k.split("=")[1]))
    run = seed_summary[label]
    finite = [v["final_distance"] for k, v in seed_summary.items() if k.startswith("alpha=") and v["final_distance"]]
    if not run["final_distance"] or not finite:
        return f"{label} diverged (at step {run['diverged_at_step']})."
    smallest = min(finite)
    far = run["final_distance"] > 10 * smallest
    return (f"{label} starts with U_0 U_0^T {'far ' if far else ''}larger than X* and ends at distance "
            f"{run['final_distance']:.3g} ({run['final_distance'] / smallest:.3g}x the smallest alpha's) with rank "
            f"{run['effective_rank']} of {d}" + (": outside the small-initialization regime." if far else "."))


def answers(mnist: dict, sensing: dict, cfg: Config) -> dict:
    rows = mnist["rows"]
    depth = len(cfg.hidden_sizes) + 1
    last = rows[-1]
    norms = [[row[f"grad_norm_layer{j + 1}"] for j in range(depth)] for row in rows]  # (epochs, depth)
    documented = {k: v for k, v in sensing["documented"].items() if k.startswith("alpha=")}
    seed_grid = {k: v for k, v in sensing["seed_grid"].items() if k.startswith("alpha=")}
    small = [k for k, v in documented.items() if v["effective_rank"] == sensing["r"]]
    seed_summary = summarize_grid(sensing["seed_grid"])
    describe = "; ".join(f"{k}: lr {v['lr']:.3g}, distance {v['final_distance']:.3g}, rank {v['effective_rank']}"
                         for k, v in seed_summary.items() if k.startswith("alpha="))
    return {
        "data_source": mnist["source"],
        "train_mean_std": [mnist["train_mean"], mnist["train_std"]],
        "part1": {
                  "n_train": mnist["n_train"], "n_test": mnist["n_test"],
                  "final_train_loss": last["train_loss"], "final_test_loss": last["test_loss"],
                  "final_test_acc": last["test_acc"], "grad_norms_per_epoch": norms,
                  "grad_norms_first_epoch": norms[0], "grad_norms_last_epoch": norms[-1],
                  "largest_gradient_layer_last_epoch": 1 + max(range(depth), key=lambda j: norms[-1][j]),
                  "findings": describe_gradient_norms(rows, depth),
        },
        "part2": {
            "d": sensing["d"], "r": sensing["r"], "m": sensing["m"], "lr": sensing["lr"],
            "lr_rule": f"lr = {cfg.lr_scale} / ||X*||_2 (population Hessian bound 8||X*||_2 -> stable below 0.25/||X*||_2)",
            "u_star_scale": "U* entries N(0, 1)/sqrt(d)",
            "x_star_spectral_norm": sensing["x_star_norm2"], "x_star_frobenius_norm": sensing["x_star_fro"],
            "steps": cfg.steps,
            "rank_r_final_distance": sensing["documented"]["R=r"]["final_distance"],
            "rank_r_seconds_per_step": sensing["documented"]["R=r"]["seconds_per_step"],
            "overparametrized": summarize_grid(documented),
            "effective_rank_definition": f"number of singular values of U_T >= {cfg.rank_threshold:g} x the largest",
            "rank_grows_with_alpha": rank_order_holds(documented),
            "seed_grid": {
                "alphas": list(cfg.seed_alphas), "steps": cfg.seed_steps, "rank_r_steps": cfg.seed_rank_r_steps,
                "lr_rule": f"lr = {cfg.lr_scale} / max(||X*||_2, ||U_0||_2^2): the documented step, shrunk where the "
                           "start is steeper than X* (at the documented step alpha = 1, with ||U_0||_2^2 ~ 4d, diverges)",
                "runs": seed_summary, "rank_grows_with_alpha": rank_order_holds(seed_grid),
                "answer": (f"The seed's grid at its step counts ({cfg.seed_steps} per alpha, {cfg.seed_rank_r_steps} for "
                           f"R = r): {describe}. " + large_init_answer(seed_summary, sensing["d"])),
            },
            "implicit_regularization": (
                "Hypothesis: with R = d the loss has many global minima (m < d^2), yet gradient descent from a small "
                "initialization converges to (nearly) the minimum nuclear-norm / low-rank solution, here X*. "
                + trend_answer(documented, sensing["r"], small)),
        },
    }


def _log10(value) -> float:
    return math.log10(value) if value is not None and math.isfinite(value) and value > 0 else float("nan")


def band_metrics(result: dict) -> dict[str, float]:
    """MNIST: final loss and accuracy, each layer's mean gradient norm at epochs 1-5, 40 and the last; sensing
    (prefix "sensing.", data source SENSING_SOURCE): log10 distance and effective rank of every run of both grids."""
    p1, p2 = result["part1"], result["part2"]
    out = {"final_train_loss": p1["final_train_loss"], "final_test_acc": p1["final_test_acc"]}
    norms = p1["grad_norms_per_epoch"]
    for epoch, layer_norms in enumerate(norms, start=1):
        if epoch <= 5 or epoch == 40:
            out.update({f"grad_norm_layer{j + 1}.epoch{epoch}": v for j, v in enumerate(layer_norms)})
    out.update({f"grad_norm_layer{j + 1}.last": v for j, v in enumerate(norms[-1])})
    out["sensing.rank_r_log10_distance"] = _log10(p2["rank_r_final_distance"])
    out["sensing.seed_grid.rank_r_log10_distance"] = _log10(p2["seed_grid"]["runs"]["R=r"]["final_distance"])
    for grid, runs in (("documented", p2["overparametrized"]), ("seed_grid", p2["seed_grid"]["runs"])):
        for label, run in runs.items():
            if label.startswith("alpha="):
                name = f"sensing.{grid}.alpha{float(label.split('=')[1]):g}"
                out[f"{name}.log10_distance"] = _log10(run["final_distance"])
                out[f"{name}.effective_rank"] = float("nan") if run["effective_rank"] is None else float(run["effective_rank"])
    alphas = sorted(p2["overparametrized"], key=lambda k: float(k.split("=")[1]))
    for name, label in (("small", alphas[0]), ("large", alphas[-1])):
        rank = p2["overparametrized"][label]["effective_rank"]
        out[f"sensing.{name}_alpha_effective_rank"] = float("nan") if rank is None else float(rank)
    out["sensing.rank_grows_with_alpha"] = float(p2["rank_grows_with_alpha"])
    return {k: float(v) for k, v in out.items() if math.isfinite(v)}  # diverged runs have no distance or rank


SENSING_SOURCE = "gaussian-sensing"  # the data source of the "sensing." metrics: the synthetic Gaussian problem


def main(args: argparse.Namespace) -> dict:
    cfg = Config.from_args(args)
    repro.seed_everything(cfg.seed)
    device = core.select_device(cfg.device)
    with repro.deterministic(cfg.deterministic):
        mnist = run_mnist(cfg, device)
        sensing = run_sensing(cfg, device)
    result = answers(mnist, sensing, cfg)
    result["exercise"] = "gradnorms"
    result["metric_sources"] = {"sensing.": SENSING_SOURCE}  # metrics with this prefix are not measured on MNIST
    result["config"] = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
    result["device"] = str(device)
    result["mnist_seconds"] = mnist["seconds"]
    if cfg.out:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / "mnist_log.csv", mnist["rows"])
        write_csv(out / "sensing_log.csv", [{"grid": grid, "run": k, "t": t, "distance": dist}
                                            for grid in ("documented", "seed_grid") for k, v in sensing[grid].items()
                                            for t, dist in enumerate(v["distances"])])
        write_csv(out / "singular_values.csv", [{"grid": grid, "run": k, "t": t, **{f"sv{i + 1}": s for i, s in enumerate(svs.tolist())}}
                                                for grid in ("documented", "seed_grid") for k, v in sensing[grid].items()
                                                if "top_singular_values" in v for t, svs in enumerate(v["top_singular_values"])])
        result["plots"] = make_plots(out, mnist, sensing, cfg)
        (out / "answers.json").write_text(json.dumps(result, indent=2) + "\n")
    p1, p2 = result["part1"], result["part2"]
    print(f"MNIST ({mnist['source']}): final train loss {p1['final_train_loss']:.4f}, test acc {p1['final_test_acc']:.4f}, "
          f"grad norms {[round(v, 4) for v in p1['grad_norms_last_epoch']]}")
    print(f"sensing d={p2['d']} r={p2['r']} m={p2['m']}: R=r distance {p2['rank_r_final_distance']:.3e}; "
          + "; ".join(f"{k}: dist {v['final_distance']:.2e}, rank {v['effective_rank']}" for k, v in p2["overparametrized"].items()))
    print(f"the seed's grid: {p2['seed_grid']['answer']}")
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
