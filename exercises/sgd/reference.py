"""SGD from scratch: a 784-100-100-10 ReLU MLP kept in a parameter dict, trained on MNIST.

Reference for the `sgd` exercise (seed: ../shared/seeds/lab3_sgd_from_scratch_mnist.txt, "Lab 3
Exercises for COMP 691 (Deep Learning)", exercises 2-4 and the optional momentum part). It defines
exactly the contract names of CONTRACTS.md (`initialize_nn`, `my_nn`, `sgd_step`, `sgd_momentum_step`,
`evaluate`, `train_sgd`), the general `sgd_update` that mirrors torch.optim.SGD (momentum, dampening,
weight decay, Nesterov), `train_torch_sgd`, and the experiment:

  pixels scaled to [0, 1] (the seed's ToTensor), weights N(0, std 1/sqrt(fan_in)), zero biases;
  loss and accuracy of the untrained network on the test set; then four runs of 20 epochs at batch
  128 and lr 0.01 from the SAME initialization and the SAME batch order: custom SGD, torch.optim.SGD,
  custom momentum (v = mu v + g, w -= lr v, mu 0.9) and torch's momentum. Per-iteration loss and
  accuracy plots overlay the custom and torch runs; answers.json holds the final test accuracies.

Exactness: `sgd_step`, `sgd_momentum_step` and `sgd_update` apply the same float32 operations as
torch's `_single_tensor_sgd` in the same order (`p.add_(g, alpha=-lr)` is one fused multiply-add),
so their parameters equal torch.optim.SGD's bit for bit, and the custom and torch curves coincide.
A textbook `p -= lr * g` rounds twice and differs from torch by float rounding only.

Seed bugs not copied: its `initialize_nn` rebinds each entry to `zeros_like(param)` (a new tensor
that does not require grad: the biases were never trained; its uniform(-1, 1) first draw is replaced by
`initialize_nn` before anything is printed, and its network has 50 hidden units, not 100); its `test()` divides each batch's correct count by the nominal
batch size on a drop_last loader (the last 16 test images are never seen); it does not shuffle, and
re-initializes each run with a fresh draw (so its custom vs torch comparison mixes two inits).
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

SIZES = (784, 100, 100, 10)  # input pixels, two hidden layers, classes
RUNS = ("custom_sgd", "torch_sgd", "custom_momentum", "torch_momentum")
# What the seed notebook printed is in exercises/sgd/claims.json (claims to judge, never bands).


# ---------------------------------------------------------------------------------------------
# The contract


def initialize_nn(param_dict, sizes=SIZES, generator=None, device=None):
    """Fill W0..W2 with N(0, std 1/sqrt(fan_in)) and b0..b2 with zeros, all leaves requiring grad.

    Existing entries keep their shape and device; missing ones are created from `sizes`. The
    entries are replaced by fresh leaf tensors (old gradients are dropped) and `param_dict` itself
    is returned. `generator` is an optional torch.Generator (default: torch's global RNG).
    """
    for j, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        old = param_dict.get(f"W{j}")
        if old is not None:
            d_in, d_out = old.shape
        dev = device if device is not None else (old.device if old is not None else "cpu")
        w = torch.randn(d_in, d_out, generator=generator, device=dev) / math.sqrt(d_in)  # (d_in, d_out)
        param_dict[f"W{j}"] = w.requires_grad_()
        param_dict[f"b{j}"] = torch.zeros(d_out, device=dev, requires_grad=True)  # (d_out,)
    return param_dict


def my_nn(input, param_dict):
    """Logits W2 relu(W1 relu(W0 x + b0) + b1) + b2 (as x @ W + b) for (B,784), (B,28,28) or (B,1,28,28)."""
    x = input.flatten(start_dim=1)  # (B, 784)
    h = torch.relu(x @ param_dict["W0"] + param_dict["b0"])  # (B, 100)
    h = torch.relu(h @ param_dict["W1"] + param_dict["b1"])  # (B, 100)
    return h @ param_dict["W2"] + param_dict["b2"]  # (B, 10)


def _pairs(params, others=None):
    """Tensors of `params` (a dict or an iterable), paired by key or position with `others`."""
    if isinstance(params, dict):
        keys = list(params)
        return [(params[k], others[k] if others is not None else None) for k in keys]
    params = list(params)
    others = list(others) if others is not None else [None] * len(params)
    if len(others) != len(params):
        raise ValueError(f"{len(params)} parameters but {len(others)} velocities")
    return list(zip(params, others))


@torch.no_grad()
def sgd_step(params, lr):
    """p -= lr * p.grad in place for every tensor with a gradient, then zero that gradient."""
    for p, _ in _pairs(params):
        if p.grad is None:
            continue
        p.add_(p.grad, alpha=-lr)  # one fused op, as torch.optim.SGD does
        p.grad.zero_()


@torch.no_grad()
def sgd_momentum_step(params, velocities, lr, mu):
    """v = mu * v + g; p -= lr * v; both in place (velocities pair with params by key or position)."""
    for p, v in _pairs(params, velocities):
        if p.grad is None:
            continue
        v.mul_(mu).add_(p.grad)  # v = mu v + g
        p.add_(v, alpha=-lr)
        p.grad.zero_()


@torch.no_grad()
def evaluate(param_dict, loader):
    """(mean cross-entropy, accuracy in [0, 1]) over every sample the loader yields."""
    device = param_dict["W0"].device
    total_loss, correct, count = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = my_nn(x, param_dict)  # (B, 10)
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(dim=1) == y).sum().item()
        count += len(y)
    return total_loss / count, correct / count


def train_sgd(param_dict, loader, lr=0.01, epochs=20, momentum=0.0, desc=None):
    """Mini-batch SGD (with momentum when momentum > 0) by the two steps above; per-batch loss/accuracy.

    `desc` turns on a tqdm bar over epochs with that label.
    """
    params = list(param_dict.values())
    for p in params:
        p.grad = None  # start from clean gradients whatever the caller did before
    velocities = [torch.zeros_like(p) for p in params] if momentum else None
    device = params[0].device
    losses, accuracies = [], []
    for _ in _epochs(epochs, desc):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = my_nn(x, param_dict)  # (B, 10)
            loss = F.cross_entropy(logits, y)  # mean over the batch
            loss.backward()
            if momentum:
                sgd_momentum_step(params, velocities, lr, momentum)
            else:
                sgd_step(params, lr)
            losses.append(loss.item())
            accuracies.append((logits.argmax(dim=1) == y).float().mean().item())
    return losses, accuracies


# ---------------------------------------------------------------------------------------------
# torch.optim.SGD, and the general rule it implements


@torch.no_grad()
def sgd_update(params, state, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    """One torch.optim.SGD step (`_single_tensor_sgd`, same ops in the same order); grads are kept.

    `state` is a dict the caller keeps between steps; it maps a parameter's position (or key) to its
    momentum buffer, which the first step creates as a copy of the gradient (as torch does).
    """
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    items = params.items() if isinstance(params, dict) else enumerate(params)
    for key, p in items:
        if p.grad is None:
            continue
        grad = p.grad
        if weight_decay != 0:
            grad = grad.add(p, alpha=weight_decay)  # g + wd * p
        if momentum != 0:
            buf = state.get(key)
            if buf is None:
                buf = state[key] = grad.detach().clone()
            else:
                buf.mul_(momentum).add_(grad, alpha=1 - dampening)  # mu b + (1 - dampening) g
            grad = grad.add(buf, alpha=momentum) if nesterov else buf
        p.add_(grad, alpha=-lr)


def train_torch_sgd(param_dict, loader, lr=0.01, epochs=20, momentum=0.0, desc=None):
    """The same loop as `train_sgd`, with torch.optim.SGD doing the update."""
    params = list(param_dict.values())
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
    optimizer.zero_grad()
    device = params[0].device
    losses, accuracies = [], []
    for _ in _epochs(epochs, desc):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = my_nn(x, param_dict)  # (B, 10)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            accuracies.append((logits.argmax(dim=1) == y).float().mean().item())
    return losses, accuracies


def _epochs(epochs, desc):
    if desc is None:
        return range(epochs)
    from tqdm.auto import trange

    return trange(epochs, desc=desc, leave=False)


# ---------------------------------------------------------------------------------------------
# The experiment


@dataclasses.dataclass
class Config:
    """The experiment's settings; every field is a command-line flag."""
    seed: int = 0  # seeds the init draw and the batch order, shared by all four runs
    deterministic: bool = False  # torch.use_deterministic_algorithms for the whole run
    quick: bool = False  # apply QUICK: the CI budget
    dry_run: bool = False  # apply DRY_RUN: one batch per run on 256 test images, an integration test
    out: str | None = None  # folder for plots, log.csv and answers.json; None writes nothing
    data_root: str | None = None  # extra folder searched first for the MNIST IDX files
    data: str = "mnist"  # data set name for labcheck.data.load (bands are keyed by the source found)
    batch_size: int = 128  # the seed's mini-batch for training
    lr: float = 0.01  # the seed's learning rate, for all four runs
    momentum: float = 0.9  # mu of the momentum runs (the seed's optional part)
    epochs: int = 20  # passes over the training set per run, as the seed asks
    max_train: int | None = None  # first N training images only (None: all)
    n_test: int | None = None  # first N test images only (None: all)
    eval_batch_size: int = 1000  # batch of evaluate(); any size gives the same mean (sums / N)
    smooth: int = 50  # moving-average window (iterations) drawn over the raw curves; 1 = none
    device: str = "auto"  # auto (cuda, then mps, then cpu), cpu or cuda

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Config":
        """The flags as a Config, then QUICK (--quick) and DRY_RUN (--dry-run) applied over them."""
        from labcheck import repro

        return repro.config_from_args(cls, args, QUICK, DRY_RUN)


QUICK = dict(epochs=5)  # CI budget: 5 of the 20 epochs per run (about 1 min on mnist-5k, one core)
DRY_RUN = dict(epochs=1, max_train=128, n_test=256, smooth=1)  # one batch per run, 256 test images


def get_args_parser(add_help=True):
    d = Config()
    parser = argparse.ArgumentParser(description="SGD from scratch vs torch.optim.SGD on MNIST (lab 3)",
                                     add_help=add_help)
    parser.add_argument("--seed", type=int, default=d.seed, metavar="S", help=f"random seed (default: {d.seed})")
    parser.add_argument("--deterministic", action="store_true",
                        help=f"use deterministic algorithms (default: {d.deterministic})")
    parser.add_argument("--quick", action="store_true",
                        help=f"CI budget: {QUICK['epochs']} epochs per run (default: {d.quick})")
    parser.add_argument("--dry-run", action="store_true",
                        help=f"one batch per run, small test set (default: {d.dry_run})")
    parser.add_argument("--out", default=d.out, metavar="DIR", help=f"output folder; none: no files (default: {d.out})")
    parser.add_argument("--data-root", default=d.data_root, metavar="DIR",
                        help=f"folder searched first for the MNIST IDX files (default: {d.data_root})")
    parser.add_argument("--data", default=d.data, metavar="NAME", help=f"data set (default: {d.data})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, metavar="N",
                        help=f"training mini-batch (default: {d.batch_size})")
    parser.add_argument("--lr", type=float, default=d.lr, metavar="LR", help=f"learning rate (default: {d.lr})")
    parser.add_argument("--momentum", type=float, default=d.momentum, metavar="MU",
                        help=f"momentum of the momentum runs (default: {d.momentum})")
    parser.add_argument("--epochs", type=int, default=d.epochs, metavar="N", help=f"epochs per run (default: {d.epochs})")
    parser.add_argument("--max-train", type=int, default=d.max_train, metavar="N",
                        help=f"first N training images only (default: {d.max_train}, all)")
    parser.add_argument("--n-test", type=int, default=d.n_test, metavar="N",
                        help=f"first N test images only (default: {d.n_test}, all)")
    parser.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size, metavar="N",
                        help=f"batch size of evaluation (default: {d.eval_batch_size})")
    parser.add_argument("--smooth", type=int, default=d.smooth, metavar="K",
                        help=f"moving-average window of the plots, in iterations (default: {d.smooth})")
    parser.add_argument("--device", default=d.device, metavar="DEV", help=f"auto, cpu or cuda (default: {d.device})")
    return parser


def load_data(cfg, device):
    """(x_train, y_train, x_test, y_test, DataSet): pixels / 255 as (N, 784) float32 on `device`."""
    from labcheck import data

    ds = data.load(cfg.data, cfg.data_root)
    x_train = (ds.train.flat_float() / 255).to(device)  # (N, 784) in [0, 1], as ToTensor gives
    x_test = (ds.test.flat_float() / 255).to(device)  # (M, 784)
    return x_train, ds.train.labels.to(device), x_test, ds.test.labels.to(device), ds


def run_experiment(cfg, device, progress=True):
    """Init metrics and the four runs; returns a dict of results (curves, final metrics, timings)."""
    from labcheck import core, repro

    x_train, y_train, x_test, y_test, ds = load_data(cfg, device)
    epochs = cfg.epochs
    x_train, y_train = x_train[: cfg.max_train], y_train[: cfg.max_train]  # (N, 784); all when max_train is None
    x_test, y_test = x_test[: cfg.n_test], y_test[: cfg.n_test]  # (M, 784)
    test_loader = core.ResidentLoader(x_test, y_test, batch_size=cfg.eval_batch_size, shuffle=False)

    repro.seed_everything(cfg.seed)
    init = initialize_nn({}, generator=repro.generator(cfg.seed, device), device=device)
    init_loss, init_acc = evaluate(init, test_loader)

    results = {"source": ds.source, "location": ds.location, "n_train": len(x_train), "n_test": len(x_test),
               "epochs": epochs, "init": {"test_loss": init_loss, "test_acc": init_acc}, "runs": {}}
    trainers = {"custom": train_sgd, "torch": train_torch_sgd}
    for name in RUNS:
        kind, rule = name.split("_")
        params = {k: v.detach().clone().requires_grad_() for k, v in init.items()}  # same init for all runs
        loader = core.ResidentLoader(x_train, y_train, batch_size=cfg.batch_size, seed=cfg.seed)  # same order
        momentum = cfg.momentum if rule == "momentum" else 0.0
        core.synchronize(device)
        start = time.perf_counter()
        losses, accs = trainers[kind](params, loader, lr=cfg.lr, epochs=epochs, momentum=momentum,
                                      desc=name if progress else None)
        core.synchronize(device)
        seconds = time.perf_counter() - start
        test_loss, test_acc = evaluate(params, test_loader)
        results["runs"][name] = {"losses": losses, "accuracies": accs, "test_loss": test_loss,
                                 "test_acc": test_acc, "seconds": seconds,
                                 "params": {k: v.detach().cpu() for k, v in params.items()}}
    return results


def moving_average(values, window):
    """Mean of the last `window` values at each iteration (shorter at the start)."""
    t = torch.tensor(values, dtype=torch.float64)  # (T,)
    c = torch.cat([torch.zeros(1, dtype=torch.float64), t.cumsum(0)])  # (T+1,)
    idx = torch.arange(1, len(t) + 1)  # (T,)
    lo = (idx - window).clamp(min=0)
    return ((c[idx] - c[lo]) / (idx - lo)).tolist()


def plot_pair(results, runs, title, path, window):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axs = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, label in ((axs[0], "losses", "train loss"), (axs[1], "accuracies", "train accuracy")):
        for name, ls, color in zip(runs, ("-", "--"), ("tab:blue", "tab:orange")):
            curve = results["runs"][name][key]
            ax.plot(curve, color=color, alpha=0.25, lw=0.6)
            ax.plot(moving_average(curve, window), color=color, ls=ls, lw=1.5,
                    label=f"{name.replace('_', ' ')} (test acc {results['runs'][name]['test_acc']:.2%})")
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
        ax.set_title(f"{label} per mini-batch")
        ax.legend()
    fig.suptitle(f"{title}: raw curves (faint) and their trailing {window}-iteration mean")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def max_curve_difference(results, a, b):
    ra, rb = results["runs"][a], results["runs"][b]
    diffs = [abs(x - y) for x, y in zip(ra["losses"], rb["losses"])]
    param_diff = max((ra["params"][k] - rb["params"][k]).abs().max().item() for k in ra["params"])
    return {"max_abs_loss_difference": max(diffs, default=0.0), "max_abs_param_difference": param_diff}


def answers(cfg, results):
    runs = results["runs"]
    same = {"sgd": max_curve_difference(results, "custom_sgd", "torch_sgd"),
            "momentum": max_curve_difference(results, "custom_momentum", "torch_momentum")}
    acc = {name: runs[name]["test_acc"] for name in RUNS}
    return {
        "source": results["source"],
        "n_train": results["n_train"],
        "n_test": results["n_test"],
        "epochs": results["epochs"],
        "init": results["init"],
        "final_test_acc": acc,
        "final_test_loss": {name: runs[name]["test_loss"] for name in RUNS},
        "train_seconds": {name: runs[name]["seconds"] for name in RUNS},
        "custom_vs_torch": same,
        "answers": {
            "initialization": (f"The untrained network has test loss {results['init']['test_loss']:.4f} "
                               f"(ln 10 = {math.log(10):.4f} is a uniform guess) and test accuracy "
                               f"{results['init']['test_acc']:.2%}, i.e. chance (~10%)."),
            "custom_sgd": f"Custom mini-batch SGD reaches {acc['custom_sgd']:.2%} test accuracy after "
                          f"{results['epochs']} epochs.",
            "torch_sgd": (f"torch.optim.SGD reaches {acc['torch_sgd']:.2%}; from the same init and batch order "
                          f"its loss curve differs from the custom one by at most "
                          f"{same['sgd']['max_abs_loss_difference']:.3g} (the updates are the same float ops)."),
            "momentum": (f"With momentum {cfg.momentum}: custom {acc['custom_momentum']:.2%}, torch "
                         f"{acc['torch_momentum']:.2%} (max loss difference "
                         f"{same['momentum']['max_abs_loss_difference']:.3g}); " + momentum_answer(runs)),
        },
    }


def momentum_answer(runs: dict) -> str:
    """The momentum-vs-SGD sentence, read off this run's final test accuracy and loss (never assumed)."""
    gain = runs["custom_momentum"]["test_acc"] - runs["custom_sgd"]["test_acc"]
    loss_m, loss_s = runs["custom_momentum"]["test_loss"], runs["custom_sgd"]["test_loss"]
    ends = "ends above" if gain > 0 else "ends below" if gain < 0 else "ends level with"
    lower = "lower" if loss_m < loss_s else "not lower"
    return (f"momentum {ends} plain SGD after the same updates ({gain:+.2%} test accuracy; its final test loss "
            f"{loss_m:.4f} is {lower} than SGD's {loss_s:.4f}).")


def write_log(results, path):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "iteration", "loss", "accuracy"])
        for name in RUNS:
            run = results["runs"][name]
            for i, (loss, acc) in enumerate(zip(run["losses"], run["accuracies"])):
                writer.writerow([name, i, f"{loss:.6f}", f"{acc:.6f}"])


def main(args):
    """Every task of the exercise; the answers (plus data_source and config) as a JSON-able dict."""
    from labcheck import core, repro

    cfg = Config.from_args(args)
    device = core.select_device(cfg.device)
    with repro.deterministic(cfg.deterministic):
        results = run_experiment(cfg, device)
    report = answers(cfg, results)
    report["data_source"] = results["source"]
    report["config"] = dataclasses.asdict(cfg)
    report["device"] = str(device)
    if cfg.out is not None:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        window = max(1, min(cfg.smooth, len(results["runs"][RUNS[0]]["losses"])))
        plot_pair(results, ("custom_sgd", "torch_sgd"), "SGD", out / "sgd_curves.png", window)
        plot_pair(results, ("custom_momentum", "torch_momentum"), f"SGD + momentum {cfg.momentum}",
                  out / "momentum_curves.png", window)
        write_log(results, out / "log.csv")
        (out / "answers.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"data {results['source']} ({results['n_train']} train / {results['n_test']} test), "
          f"{results['epochs']} epochs, device {device}")
    print(f"init: test loss {results['init']['test_loss']:.4f}, test accuracy {results['init']['test_acc']:.2%}")
    for name in RUNS:
        run = results["runs"][name]
        print(f"{name:16s} test loss {run['test_loss']:.4f}  test accuracy {run['test_acc']:.2%}  "
              f"({run['seconds']:.1f} s)")
    if cfg.out is not None:
        print(f"outputs in {cfg.out}")
    return report


def band_metrics(report: dict) -> dict[str, float]:
    """Init loss/accuracy, each run's final test accuracy and loss, and custom-vs-torch differences."""
    metrics = {f"init.{k}": v for k, v in report["init"].items()}
    for name in RUNS:
        metrics[f"test_acc.{name}"] = report["final_test_acc"][name]
        metrics[f"test_loss.{name}"] = report["final_test_loss"][name]
    for rule, diff in report["custom_vs_torch"].items():
        metrics[f"custom_vs_torch.{rule}.max_abs_param_difference"] = diff["max_abs_param_difference"]
    return {k: float(v) for k, v in metrics.items()}


if __name__ == "__main__":
    main(get_args_parser().parse_args())
