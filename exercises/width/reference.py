"""Performance vs width: a 1-hidden-layer MLP trained by single-example SGD on Fashion-MNIST.

Reference for the `width` exercise (seed: ../shared/seeds/hw2_width_fashion_mnist.txt, "Homework 2:
Multiple Layer Perceptron, 1. Performance vs. Width"). It defines exactly the contract names of
CONTRACTS.md (`mlp`, `compute_objective`, `compute_accuracy`, `sgd_one_pass`, `train_model`,
`find_divergent_lr`, `interpolation_pass`) plus the experiment:

  12% random subsample of the Fashion-MNIST train set (7,200 images), the full test set (10,000),
  per-pixel standardization with train statistics; weights 1e-6 * randn, zero biases; the divergent
  learning rate eta* of width 16 (powers of 10 from 1e-2, then powers of 2); 120 passes of
  single-example SGD at eta*/2 for widths 8, 16, 32, 128, 512; 4 plots of train/test loss/accuracy
  vs passes, the smallest interpolating width and a passes-to-interpolation vs width plot.

Divergence criterion (used by the experiment's `diverges(lr)`): starting from the same seed and
initialization, one pass of SGD at `lr` *diverges* when the train objective afterwards is not finite
or is larger than the objective of the untrained network (ln(10) = 2.303 at a 1e-6 init, i.e. the
uniform prediction). A pass that ends worse than predicting nothing has made the weights grow instead
of fitting; this is exactly the seed's reading of its runs (1e-2 ends at 0.671, 2e-2 at 2.745 > 2.303).

Speed: single-example SGD is sequential, so the experiment uses `fast_sgd_pass`, a hand-written
forward/backward in float32 numpy on preallocated buffers. Biases live as the last row of an
"augmented" weight matrix (x gets a constant 1), so one step is 4 matrix-vector ops, a softmax and two
BLAS rank-1 updates (sger) done in place. The indices of a pass are drawn in one call,
`np.random.choice(n, size=n)`, which yields the same sequence as the seed's n calls to
`np.random.choice(n)` (checked in tests/test_width.py). The contract's `sgd_one_pass` keeps the seed's
autograd semantics, and the tests check that both agree step by step.

Seed bugs not copied: the seed shuffles X_test (harmless, but it consumes RNG draws), numbers passes
from 1 (`results['iter'] = results.index + 1`, so its passes-to-interpolation are one too many),
lets the five widths share one RNG stream (each width's init depends on the runs before it; here
each run is seeded), returns accuracies as tensors, and reads data and reg_param from globals.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.functional import cross_entropy

N_CLASSES = 10  # Fashion-MNIST classes
INIT_SCALE = 1e-6  # the seed's weight init: 1e-6 * randn


# ---------------------------------------------------------------------------------------------
# The contract


def mlp(X, ws, bs):
    """Scores of an MLP with weights `ws[j]` (d_in, d_out) and biases `bs[j]` (d_out,); ReLU but last."""
    hidden = X  # (n, d_0)
    for w, b in zip(ws[:-1], bs[:-1]):
        hidden = torch.relu(hidden @ w + b)  # (n, d_j)
    return hidden @ ws[-1] + bs[-1]  # (n, K)


def compute_objective(ws, bs, X, y, reg_param):
    """Mean cross-entropy plus 0.5 * reg_param * sum of squared Frobenius norms of the weights."""
    scores = mlp(X, ws, bs)  # (n, K)
    penalty = sum(w.pow(2).sum() for w in ws)  # 0-dim
    return cross_entropy(scores, y, reduction="mean") + 0.5 * reg_param * penalty


@torch.no_grad()
def compute_accuracy(ws, bs, X, y):
    """Fraction of samples whose highest score is the label, as a Python float."""
    predictions = mlp(X, ws, bs).argmax(dim=1)  # (n,)
    return (predictions == y).sum().item() / len(y)


def sgd_one_pass(ws, bs, X, y, reg_param, learning_rate):
    """len(X) single-example SGD steps; each index drawn with replacement by np.random.choice.

    The seed's update: autograd gradient of the objective on one example, then `var -= lr * g`
    in place on every weight and bias (so the caller's tensors change).
    """
    params = [*ws, *bs]
    for _ in range(len(X)):
        i = np.random.choice(len(X))
        objective = compute_objective(ws, bs, X[i : i + 1], y[i : i + 1], reg_param)  # 0-dim
        grads = torch.autograd.grad(objective, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= learning_rate * g
    return ws, bs


def train_model(X_train, y_train, X_test, y_test, hidden_size, learning_rate, passes=120, reg_param=0.0,
                fast=True, progress=None):
    """Logs (passes+1, 5) of [hidden_size, train_loss, train_acc, test_loss, test_acc] per pass 0..passes.

    Weights 1e-6 * randn (784 x h, then h x 10, from torch's global RNG), zero biases. `fast` uses
    `fast_sgd_pass` (same index stream, same update up to float rounding); `fast=False` the seed's
    autograd `sgd_one_pass`. `progress` is an optional callable called once per finished pass.
    """
    d = X_train.shape[1]
    ws = [INIT_SCALE * torch.randn(d, hidden_size), INIT_SCALE * torch.randn(hidden_size, N_CLASSES)]
    bs = [torch.zeros(hidden_size), torch.zeros(N_CLASSES)]
    if fast:
        net = AugmentedMLP.from_lists(ws, bs)
        ws, bs = net.ws, net.bs  # views of the augmented matrices: they follow every update
        X_aug = augment(X_train)
        y_np = y_train.numpy()
    else:
        ws = [w.requires_grad_() for w in ws]
        bs = [b.requires_grad_() for b in bs]

    def log_row():
        with torch.no_grad():
            return [float(hidden_size),
                    compute_objective(ws, bs, X_train, y_train, reg_param).item(),
                    compute_accuracy(ws, bs, X_train, y_train),
                    compute_objective(ws, bs, X_test, y_test, reg_param).item(),
                    compute_accuracy(ws, bs, X_test, y_test)]

    logs = [log_row()]
    for _ in range(passes):
        if fast:
            index = np.random.choice(len(X_aug), size=len(X_aug))  # (n,) the same draws as n single calls
            fast_sgd_pass(net, X_aug, y_np, index, learning_rate, reg_param)
        else:
            sgd_one_pass(ws, bs, X_train, y_train, reg_param, learning_rate)
        logs.append(log_row())
        if progress is not None:
            progress()
    return np.asarray(logs, dtype=np.float64)


def find_divergent_lr(diverges, start=1e-2, max_calls=64):
    """eta* with diverges(eta*) False and diverges(2 * eta*) True: powers of 10 from `start`, then of 2.

    From `start`, step by factors of 10 (down while it diverges, up while 10x does not) to a stable
    lr whose 10x diverges, then double while 2x stays stable. Each lr is tried at most once.
    """
    tried: dict[float, bool] = {}

    def div(lr: float) -> bool:
        if lr not in tried:
            if len(tried) >= max_calls:
                raise RuntimeError(f"no divergent learning rate found in {max_calls} tries: {tried}")
            tried[lr] = bool(diverges(lr))
        return tried[lr]

    k = 0
    if div(start):
        while div(start * 10.0**k):
            k -= 1
    else:
        while not div(start * 10.0 ** (k + 1)):
            k += 1
    lr = start * 10.0**k  # stable, and 10 * lr diverges
    while not div(2 * lr):
        lr *= 2
    return lr


def interpolation_pass(logs):
    """The first row (= number of passes) whose train accuracy is 1.0, or None if there is none."""
    hits = np.flatnonzero(np.asarray(logs)[:, 2] == 1.0)
    return int(hits[0]) if hits.size else None


# ---------------------------------------------------------------------------------------------
# The fast path: hand-written forward/backward on augmented matrices


def augment(X):
    """[X, 1] as a C-contiguous float32 numpy array, so a bias is the last row of its weight matrix."""
    X = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    out = np.empty((X.shape[0], X.shape[1] + 1), dtype=np.float32)  # (n, d+1)
    out[:, :-1] = X
    out[:, -1] = 1.0
    return out


@dataclasses.dataclass
class AugmentedMLP:
    """A 1-hidden-layer MLP whose biases are the last rows of Fortran-ordered float32 matrices.

    `ws`/`bs` are torch views of the same memory, so the contract's functions evaluate it directly.
    """
    W1: np.ndarray  # (d+1, h) Fortran order; row d is b1
    W2: np.ndarray  # (h+1, K) Fortran order; row h is b2

    @classmethod
    def from_lists(cls, ws, bs) -> "AugmentedMLP":
        (w1, w2), (b1, b2) = ws, bs
        W1 = np.asfortranarray(np.vstack([w1.detach().numpy(), b1.detach().numpy()[None]]), dtype=np.float32)
        W2 = np.asfortranarray(np.vstack([w2.detach().numpy(), b2.detach().numpy()[None]]), dtype=np.float32)
        return cls(W1, W2)

    @property
    def ws(self) -> list[torch.Tensor]:
        return [torch.from_numpy(self.W1[:-1]), torch.from_numpy(self.W2[:-1])]  # (d, h), (h, K)

    @property
    def bs(self) -> list[torch.Tensor]:
        return [torch.from_numpy(self.W1[-1]), torch.from_numpy(self.W2[-1])]  # (h,), (K,)


def _rank1_update():
    """A function ger(alpha, x, y, A) doing A += alpha * outer(x, y) in place on a Fortran float32 A."""
    try:
        from scipy.linalg import blas  # a dependency of mlxtend; one BLAS sger call, no temporary
    except ImportError:  # pragma: no cover - numpy fallback, about 2x slower at width 512
        def ger(alpha, x, y, A):
            A += np.multiply.outer(x, alpha * y)
        return ger

    def ger(alpha, x, y, A):
        blas.sger(alpha, x, y, a=A, overwrite_a=True)
    return ger


def fast_sgd_pass(net: AugmentedMLP, X_aug, y, index, learning_rate, reg_param=0.0):
    """Single-example SGD steps on the rows `index` of X_aug (n, d+1), updating `net` in place.

    Per step, with x (d+1,) and z = W2^T [relu(W1^T x), 1]: dz = softmax(z) - onehot(y),
    dh = (W2[:h] dz) * (h > 0), W2 -= lr * [h, 1] dz^T, W1 -= lr * x dh^T (+ weight decay on the
    non-bias rows when reg_param > 0), all gradients taken before any update, as autograd does.
    """
    ger = _rank1_update()
    W1, W2 = net.W1, net.W2
    h_size = W1.shape[1]
    h = np.empty(h_size + 1, dtype=np.float32)  # (h+1,) hidden activations and the constant 1
    h[h_size] = 1.0
    hidden = h[:h_size]  # (h,)
    dh = np.empty(h_size, dtype=np.float32)  # (h,)
    z = np.empty(W2.shape[1], dtype=np.float32)  # (K,)
    W2_weights = W2[:h_size]  # (h, K) view without the bias row
    decay = np.float32(1.0 - learning_rate * reg_param)
    alpha = -float(learning_rate)
    with np.errstate(all="ignore"):  # a diverging run overflows to inf/NaN, which the logs record
        for i in np.asarray(index).tolist():
            x = X_aug[i]  # (d+1,)
            np.dot(x, W1, out=hidden)  # (h,)
            np.maximum(hidden, 0.0, out=hidden)
            np.dot(h, W2, out=z)  # (K,)
            z -= z.max()
            np.exp(z, out=z)
            z /= z.sum()  # softmax
            z[y[i]] -= 1.0  # d loss / d scores
            np.dot(W2_weights, z, out=dh)  # (h,)
            dh *= hidden > 0
            if reg_param:
                W1[:-1] *= decay
                W2_weights *= decay
            ger(alpha, h, z, W2)
            ger(alpha, x, dh, W1)
    return net


# ---------------------------------------------------------------------------------------------
# The experiment


@dataclasses.dataclass
class Config:
    """The experiment's settings; every field is a command-line flag (--search-width for search_width)."""
    seed: int = 0  # seeds the subsample, and every run's init and index stream (repro.seed_everything)
    deterministic: bool = False  # run inside labcheck.repro.deterministic() (numpy path: already deterministic)
    quick: bool = False  # apply QUICK: the CI budget
    dry_run: bool = False  # apply DRY_RUN: one tiny run to test the pipeline (`--dry-run`)
    out: str | None = None  # folder for the plots, logs.csv and answers.json; None writes nothing
    data_root: str | None = None  # extra folder searched first for the Fashion-MNIST IDX files
    widths: tuple[int, ...] = (8, 16, 32, 128, 512)  # hidden sizes h compared by the exercise
    search_width: int = 16  # eta* is searched at this width only, as the exercise says
    start_lr: float = 1e-2  # first learning rate of the powers-of-10 search (the seed's Hint 1)
    lr: float | None = None  # skip the search and the halving rule; train at this learning rate
    max_halvings: int = 6  # the seed's note: halve the lr again while training at it diverges (at most this often)
    passes: int = 120  # passes over the train subsample per width (the seed's 120)
    train_fraction: float = 0.12  # random subsample of the 60,000 training images (7,200)
    n_test: int | None = None  # first n test images only (None: all 10,000, as the seed)
    reg_param: float = 0.0  # L2 penalty; the exercise uses none
    autograd: bool = False  # the seed's autograd sgd_one_pass instead of the fast path (about 10x slower)
    device: str = "cpu"  # only "cpu" does anything: one example per step is latency bound

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Config":
        """The flags as a Config, then QUICK (--quick) and DRY_RUN (--dry-run) applied over them."""
        from labcheck import repro

        return repro.config_from_args(cls, args, QUICK, DRY_RUN)


QUICK = dict(passes=12)  # CI budget: 12 of the 120 passes, same data, search and widths (~2 min on one core)
DRY_RUN = dict(passes=1, widths=(8, 16), train_fraction=0.001, n_test=60)  # 60 train / 60 test images, 1 pass


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    d = Config()
    p = argparse.ArgumentParser(description="Performance vs width on Fashion-MNIST (hw2)", add_help=add_help)
    p.add_argument("--seed", type=int, default=d.seed, metavar="S", help=f"random seed (default: {d.seed})")
    p.add_argument("--deterministic", action="store_true",
                   help=f"deterministic torch kernels (default: {d.deterministic})")
    p.add_argument("--quick", action="store_true",
                   help=f"CI budget: {QUICK['passes']} passes per width (default: {d.quick})")
    p.add_argument("--dry-run", action="store_true", help=f"one tiny run to test the pipeline (default: {d.dry_run})")
    p.add_argument("--out", default=d.out, metavar="DIR", help=f"output folder; none: no files (default: {d.out})")
    p.add_argument("--data-root", default=d.data_root, metavar="DIR",
                   help=f"folder searched first for Fashion-MNIST (default: {d.data_root})")
    p.add_argument("--widths", type=int, nargs="+", default=list(d.widths), metavar="H",
                   help=f"hidden sizes (default: {' '.join(map(str, d.widths))})")
    p.add_argument("--search-width", type=int, default=d.search_width, metavar="H",
                   help=f"width of the divergent-lr search (default: {d.search_width})")
    p.add_argument("--start-lr", type=float, default=d.start_lr, metavar="LR",
                   help=f"first lr of the search (default: {d.start_lr})")
    p.add_argument("--lr", type=float, default=d.lr, metavar="LR",
                   help=f"train at this lr, skipping the search and the halving rule (default: {d.lr})")
    p.add_argument("--max-halvings", type=int, default=d.max_halvings, metavar="K",
                   help=f"halve the lr at most K times while training at it diverges (default: {d.max_halvings})")
    p.add_argument("--passes", type=int, default=d.passes, metavar="N", help=f"passes per width (default: {d.passes})")
    p.add_argument("--train-fraction", type=float, default=d.train_fraction, metavar="F",
                   help=f"fraction of the train set used (default: {d.train_fraction})")
    p.add_argument("--n-test", type=int, default=d.n_test, metavar="N",
                   help=f"first N test images only (default: {d.n_test}, all)")
    p.add_argument("--reg-param", type=float, default=d.reg_param, metavar="R",
                   help=f"L2 penalty (default: {d.reg_param})")
    p.add_argument("--autograd", action="store_true",
                   help=f"use the seed's autograd SGD instead of the fast path (default: {d.autograd})")
    p.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"), metavar="DEV",
                   help=f"auto, cpu or cuda; this exercise always trains on the CPU (default: {d.device})")
    return p


def load_data(cfg: Config):
    """(X_train, y_train, X_test, y_test, source): the seeded subsample, standardized per pixel."""
    from labcheck import data

    ds = data.load(data.FASHION, cfg.data_root)
    train = data.subsample_fraction(ds.train, cfg.train_fraction, cfg.seed)
    test = ds.test if cfg.n_test is None else ds.test.subset(np.arange(cfg.n_test))
    X_train, X_test = data.standardize_per_pixel(train.flat_float(), test.flat_float())  # (n, 784), (n', 784)
    return X_train, train.labels, X_test, test.labels, ds.source


def make_diverges(X_train, y_train, hidden_size, seed, reg_param=0.0, trace=None):
    """diverges(lr): one seeded pass at lr ends with a non-finite objective or one above the initial."""
    from labcheck import repro

    def diverges(lr: float) -> bool:
        repro.seed_everything(seed)
        logs = train_model(X_train, y_train, X_train[:1], y_train[:1], hidden_size, lr, passes=1,
                           reg_param=reg_param)
        initial, after = logs[0, 1], logs[1, 1]
        result = bool(not math.isfinite(after) or after > initial)
        if trace is not None:
            trace.append({"lr": lr, "initial_loss": float(initial), "loss_after_one_pass": float(after),
                          "diverges": result})
        return result

    return diverges


def later_divergence(logs) -> int | None:
    """First pass whose train objective is not finite or above the untrained one (logs row 0), else None.

    The same criterion as the one-pass search (`make_diverges`), applied to every pass of a long run.
    """
    objective = np.asarray(logs)[:, 1]  # (passes+1,)
    bad = np.flatnonzero(~np.isfinite(objective[1:]) | (objective[1:] > objective[0]))
    return int(bad[0]) + 1 if bad.size else None


def run_experiment(cfg: Config, X_train, y_train, X_test, y_test, log=None):
    """Search eta* at cfg.search_width, train it at eta*/2 (halving while that run diverges), then every width.

    The halving rule is the seed's note on the heuristic: "A learning rate that satisfies the heuristic
    might still result in the loss diverging, in which case we would have to redo the process with half
    that learning rate." Here: while the search width's run at lr diverges at some pass (`later_divergence`),
    lr is halved (at most cfg.max_halvings times). Returns (answers, logs by width).
    """
    from tqdm import tqdm

    from labcheck import repro

    log = log or tqdm.write
    trace: list[dict] = []
    logs_by_width, seconds_per_pass = {}, {}

    def train(h, lr):
        repro.seed_everything(cfg.seed)  # every width (and every retry) starts from the same RNG state
        with tqdm(total=cfg.passes, desc=f"width {h:4d}", unit="pass", leave=False) as bar:
            t = time.perf_counter()
            logs = train_model(X_train, y_train, X_test, y_test, h, lr, passes=cfg.passes, reg_param=cfg.reg_param,
                               fast=not cfg.autograd, progress=bar.update)
            seconds_per_pass[h] = (time.perf_counter() - t) / cfg.passes
        return logs

    t0 = time.perf_counter()
    halvings: list[dict] = []
    if cfg.lr is None:
        diverges = make_diverges(X_train, y_train, cfg.search_width, cfg.seed, cfg.reg_param, trace)
        eta_star = find_divergent_lr(diverges, start=cfg.start_lr)
        lr = eta_star / 2
        log(f"divergent lr at width {cfg.search_width}: eta* = {eta_star:g} after {len(trace)} one-pass runs "
            f"({time.perf_counter() - t0:.1f} s); training at eta*/2 = {lr:g}")
        while True:
            logs = train(cfg.search_width, lr)
            bad_pass = later_divergence(logs)
            if bad_pass is None or len(halvings) >= cfg.max_halvings:
                break
            halvings.append({"lr": lr, "diverged_at_pass": bad_pass, "objective": float(logs[bad_pass, 1])})
            log(f"width {cfg.search_width} at lr {lr:g} diverges at pass {bad_pass} "
                f"(objective {logs[bad_pass, 1]:.4g}); halving to {lr / 2:g}")
            lr /= 2
        logs_by_width[cfg.search_width] = logs
    else:
        eta_star, lr = None, cfg.lr
    for h in cfg.widths:
        if h not in logs_by_width:
            logs_by_width[h] = train(h, lr)
    logs_by_width = {h: logs_by_width[h] for h in cfg.widths if h in logs_by_width}
    for h, logs in logs_by_width.items():
        row = logs[-1]
        log(f"width {h:4d}: train loss {row[1]:.4f} acc {row[2]:.4f} | test loss {row[3]:.4f} acc {row[4]:.4f} "
            f"| interpolates at pass {interpolation_pass(logs)} | {seconds_per_pass[h]:.3f} s/pass")
    reached = {h: interpolation_pass(logs) for h, logs in logs_by_width.items()}
    interpolating = [h for h in cfg.widths if reached.get(h) is not None]
    answers = {
        "divergent_lr": eta_star,
        "learning_rate": lr,
        "halvings": halvings,
        "search_width": cfg.search_width,
        "divergence_criterion": "one seeded pass at lr ends with a non-finite train objective or one larger "
                                "than the objective before it (ln 10 at the 1e-6 init); a long run diverges when "
                                "any pass ends so",
        "search_trace": trace,
        "passes": cfg.passes,
        "smallest_interpolating_width": min(interpolating) if interpolating else None,
        "passes_to_interpolation": {str(h): reached[h] for h in logs_by_width},
        "diverged_at_pass": {str(h): later_divergence(logs) for h, logs in logs_by_width.items()},
        "final": {str(h): dict(zip(("train_loss", "train_acc", "test_loss", "test_acc"), map(float, logs[-1, 1:])))
                  for h, logs in logs_by_width.items()},
        "max_train_acc": {str(h): float(logs[:, 2].max()) for h, logs in logs_by_width.items()},
        "seconds_per_pass": {str(h): s for h, s in seconds_per_pass.items()},
        "seconds_total": time.perf_counter() - t0,
        "n_train": len(X_train),
        "n_test": len(X_test),
        "seed": cfg.seed,
        "sgd": "autograd (seed)" if cfg.autograd else "fast numpy path",
    }
    return answers, logs_by_width


METRICS = (("train_loss", 1, "train loss"), ("train_accuracy", 2, "train accuracy"),
           ("test_loss", 3, "test loss"), ("test_accuracy", 4, "test accuracy"))


def write_outputs(out: Path, answers: dict, logs_by_width: dict) -> None:
    """logs.csv, answers.json, the four metric plots and passes_to_interpolation.png in `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "logs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["hidden_size", "passes", "train_loss", "train_accuracy", "test_loss", "test_accuracy"])
        for h, logs in logs_by_width.items():
            for p, row in enumerate(logs):
                writer.writerow([h, p, *(f"{v:.6g}" for v in row[1:])])
    (out / "answers.json").write_text(json.dumps(answers, indent=2) + "\n")
    lr = answers["learning_rate"]
    for name, column, label in METRICS:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for h, logs in logs_by_width.items():
            ax.plot(np.arange(len(logs)), logs[:, column], label=f"h = {h}")
        ax.set_xlabel("passes over the training data")
        ax.set_ylabel(label)
        if "loss" in name:
            ax.set_yscale("log")
        ax.set_title(f"{label} vs passes (lr = {lr:g})")
        ax.legend(title="width")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
    widths = list(logs_by_width)
    passes = answers["passes"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, h in enumerate(widths):
        p = answers["passes_to_interpolation"][str(h)]
        if p is None:
            ax.bar(i, passes, color="none", edgecolor="gray", hatch="//")
            ax.text(i, passes / 2, f"not within\n{passes} passes", ha="center", va="center", fontsize=8)
        else:
            ax.bar(i, p, color="tab:blue")
            ax.text(i, p, str(p), ha="center", va="bottom")
    ax.set_xticks(range(len(widths)), [str(h) for h in widths])
    ax.set_xlabel("hidden width h")
    ax.set_ylabel("passes until train accuracy = 100%")
    ax.set_title("passes to interpolation vs width")
    fig.tight_layout()
    fig.savefig(out / "passes_to_interpolation.png", dpi=110)
    plt.close(fig)


def main(args: argparse.Namespace) -> dict:
    """Every task of the exercise; the answers (plus data_source and config) as a JSON-able dict."""
    from labcheck import repro

    from labcheck.runner import limit_threads

    cfg = Config.from_args(args)
    limit_threads()  # one torch and one BLAS thread: one example per step, threads only add waiting (10x here)
    repro.seed_everything(cfg.seed)
    X_train, y_train, X_test, y_test, source = load_data(cfg)
    print(f"Fashion-MNIST ({source}): {len(X_train)} train / {len(X_test)} test, seed {cfg.seed}")
    with repro.deterministic(cfg.deterministic):
        answers, logs_by_width = run_experiment(cfg, X_train, y_train, X_test, y_test)
    answers["data_source"] = source
    answers["config"] = dataclasses.asdict(cfg)
    if cfg.out is not None:
        write_outputs(Path(cfg.out), answers, logs_by_width)
    print(f"smallest interpolating width: {answers['smallest_interpolating_width']} "
          f"(in {answers['passes']} passes at lr {answers['learning_rate']:g})"
          + (f"; outputs in {cfg.out}" if cfg.out else ""))
    return answers


def band_metrics(answers: dict) -> dict[str, float]:
    """The numbers bands and claims are about. Widths that never interpolate have no passes_to_interpolation,
    and smallest_interpolating_width is absent when no width interpolates (never encoded as a number)."""
    metrics = {"divergent_lr": answers["divergent_lr"], "learning_rate": answers["learning_rate"],
               "halvings": float(len(answers["halvings"])),
               "interpolating_widths": float(sum(p is not None for p in answers["passes_to_interpolation"].values()))}
    if answers["smallest_interpolating_width"] is not None:
        metrics["smallest_interpolating_width"] = float(answers["smallest_interpolating_width"])
    for h, final in answers["final"].items():
        metrics[f"max_train_acc.h{h}"] = answers["max_train_acc"][h]
        metrics[f"test_acc.h{h}"] = final["test_acc"]
        if answers["passes_to_interpolation"][h] is not None:
            metrics[f"passes_to_interpolation.h{h}"] = float(answers["passes_to_interpolation"][h])
    return {k: float(v) for k, v in metrics.items() if v is not None}


if __name__ == "__main__":
    main(get_args_parser().parse_args())
