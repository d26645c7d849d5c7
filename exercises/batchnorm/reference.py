"""BatchNorm MLPs on MNIST (600 images per class), all of it in this single file.

Reproduces exercise 3 of assignment A4 (seed: shared/seeds/a4_batchnorm_mlp_mnist.txt):
  Q1  `MLP`: Linear(784,512)-ReLU, Linear(512,512)-BatchNorm1d(512)-ReLU, Linear(512,10), trained with
      SGD(lr 0.01, momentum 0.9), batch 64, 20 epochs, reshuffled every epoch, on raw 0..255 pixels;
      per-epoch wall-clock time.
  Q2  training and test accuracy and loss vs epoch, measured in eval mode over the full train and test sets.
  Q3  MLP vs VGG11 (the VGG11 numbers belong to another exercise; answers.json says so).
  Q4  `MLP4`: one more Linear(512,512)-BatchNorm1d(512)-ReLU block before the output.
Contract names (shared/CONTRACTS.md, `batchnorm`): MLP, MLP4, train.

Kept from the seed: raw 0..255 inputs, the first 600 images of each class (both splits), metrics in eval
mode over every sample. Not kept: the seed appends 0-dim tensors to its accuracy lists (here: floats), and
its clock (time.time) starts after model.train() and stops after the evaluation, so "Time elapsed" mixes
training with evaluation. Here `epoch_time` is the training pass alone (shuffle + all steps, synchronized
on accelerators, perf_counter) and `eval_time` the evaluation; the seed's figure compares with their sum.

    labcheck reproduce batchnorm [--quick] [--out runs/batchnorm]
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from labcheck import core, data, repro

# ---------------------------------------------------------------------------------------------
# Models


class MLP(nn.Module):
    """Linear(784,512)-ReLU, Linear(512,512)-BatchNorm1d(512)-ReLU, Linear(512,10) (seed, Q1)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 512)
        self.fc2 = nn.Linear(512, 512)
        self.bn2 = nn.BatchNorm1d(512)  # momentum 0.1, eps 1e-5 (PyTorch defaults)
        self.out = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x))  # (B, 512)
        x = F.relu(self.bn2(self.fc2(x)))  # (B, 512), normalized before the ReLU
        return self.out(x)  # (B, 10) logits


class MLP4(nn.Module):
    """MLP with one more Linear(512,512)-BatchNorm1d(512)-ReLU block before the output (seed, Q4)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 512)
        self.fc2 = nn.Linear(512, 512)
        self.bn2 = nn.BatchNorm1d(512)
        self.fc3 = nn.Linear(512, 512)
        self.bn3 = nn.BatchNorm1d(512)
        self.out = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x))  # (B, 512)
        x = F.relu(self.bn2(self.fc2(x)))  # (B, 512)
        x = F.relu(self.bn3(self.fc3(x)))  # (B, 512)
        return self.out(x)  # (B, 10)


MODELS = {"MLP": MLP, "MLP4": MLP4}

# ---------------------------------------------------------------------------------------------
# Training


def train(model: nn.Module, X: torch.Tensor, Y: torch.Tensor, X_test: torch.Tensor, Y_test: torch.Tensor,
          n_epochs: int = 20, batch_size: int = 64, lr: float = 0.01, momentum: float = 0.9, *,
          seed: int | None = None, max_steps: int | None = None, progress: bool = False) -> dict:
    """Train `model` in place with SGD(lr, momentum) on (X, Y), reshuffled every epoch.

    X, X_test: (N, 784) float pixels, on the model's device. After each epoch the loss and accuracy
    over every sample of both sets are measured in eval mode (BatchNorm uses its running statistics).
    `seed` fixes the shuffling (default: drawn from torch's global RNG); `max_steps` stops early
    (--dry-run). Returns per-epoch lists of floats, plus 'eval_time' beside the contract's keys.
    """
    if seed is None:
        seed = int(torch.randint(2**62, ()).item())  # so torch.manual_seed fixes the batch order
    loader = core.ResidentLoader(X, Y, batch_size=batch_size, shuffle=True, seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    device = X.device
    history = {key: [] for key in ("train_accuracy", "test_accuracy", "train_loss", "test_loss",
                                   "epoch_time", "eval_time")}
    steps = 0
    for _ in tqdm(range(n_epochs), desc=type(model).__name__, unit="epoch", disable=not progress, leave=False):
        model.train()
        core.synchronize(device)
        start = time.perf_counter()
        for xb, yb in loader:  # a fresh permutation every epoch
            loss = F.cross_entropy(model(xb), yb)  # (B, 10) logits -> mean loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        core.synchronize(device)
        history["epoch_time"].append(time.perf_counter() - start)

        model.eval()
        start = time.perf_counter()
        train_loss, train_acc = core.evaluate_logits(model, X, Y)
        test_loss, test_acc = core.evaluate_logits(model, X_test, Y_test)
        core.synchronize(device)
        history["eval_time"].append(time.perf_counter() - start)
        history["train_loss"].append(train_loss)
        history["train_accuracy"].append(train_acc)
        history["test_loss"].append(test_loss)
        history["test_accuracy"].append(test_acc)
        if max_steps is not None and steps >= max_steps:
            break
    return history


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# The experiment


@dataclasses.dataclass
class Config:
    """The experiment's settings; every field is a command-line flag."""
    seed: int = 0  # seeds the weights and the shuffling (repro.seed_everything before each model)
    deterministic: bool = False  # run inside labcheck.repro.deterministic()
    quick: bool = False  # apply QUICK: the CI budget
    dry_run: bool = False  # apply DRY_RUN: one training step per model on 64 images per class (test suite)
    out: str | None = None  # plots, log.csv, comparison.md and answers.json go here; None writes nothing
    data_root: str | None = None  # extra folder searched first for the MNIST IDX files
    per_class: int = 600  # images per class in each split (seed); mnist-5k has only 400 train / 100 test
    epochs: int = 20  # seed: n_epochs = 20
    max_steps: int | None = None  # stop each model after this many SGD steps (None: all epochs)
    batch_size: int = 64  # seed
    lr: float = 0.01  # seed: SGD learning rate
    momentum: float = 0.9  # seed: SGD momentum
    models: str = "MLP,MLP4"  # Q1 and Q4, trained one after the other from the same seed
    device: str = "auto"  # auto | cpu | cuda

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Config":
        """The flags as a Config, then QUICK (--quick) and DRY_RUN (--dry-run) applied over them."""
        return repro.config_from_args(cls, args, QUICK, DRY_RUN)


QUICK = dict(epochs=5)  # CI budget: 5 of the seed's 20 epochs (about 1 min per model on mnist-5k, one core)
DRY_RUN = dict(epochs=1, per_class=64, max_steps=1)  # one step per model on 64 images per class


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    d = Config()
    p = argparse.ArgumentParser(description="BatchNorm MLPs on MNIST (A4 exercise 3)", add_help=add_help)
    p.add_argument("--seed", type=int, default=d.seed, metavar="S", help=f"random seed (default: {d.seed})")
    p.add_argument("--deterministic", action="store_true",
                   help=f"deterministic torch kernels (default: {d.deterministic})")
    p.add_argument("--quick", action="store_true", help=f"CI budget: {QUICK['epochs']} epochs (default: {d.quick})")
    p.add_argument("--dry-run", action="store_true", help=f"one step per model, tiny data (default: {d.dry_run})")
    p.add_argument("--out", default=d.out, metavar="DIR", help=f"output folder; none: no files (default: {d.out})")
    p.add_argument("--data-root", default=d.data_root, metavar="DIR",
                   help=f"extra folder searched first for MNIST (default: {d.data_root})")
    p.add_argument("--per-class", type=int, default=d.per_class, metavar="N",
                   help=f"images per class in each split (default: {d.per_class})")
    p.add_argument("--epochs", type=int, default=d.epochs, metavar="E", help=f"epochs per model (default: {d.epochs})")
    p.add_argument("--max-steps", type=int, default=d.max_steps, metavar="N",
                   help=f"stop each model after N SGD steps (default: {d.max_steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, metavar="B",
                   help=f"mini-batch size (default: {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, metavar="LR", help=f"SGD learning rate (default: {d.lr})")
    p.add_argument("--momentum", type=float, default=d.momentum, metavar="M", help=f"SGD momentum (default: {d.momentum})")
    p.add_argument("--models", default=d.models, metavar="NAMES",
                   help=f"comma-separated models to train (default: {d.models})")
    p.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda", "mps"), metavar="DEV",
                   help=f"auto, cpu, cuda or mps (default: {d.device})")
    return p


def load_data(cfg: Config, device: torch.device) -> tuple[dict, dict]:
    """The first `per_class` images of each class of both splits, flattened, raw 0..255 floats."""
    per_class = cfg.per_class
    ds = data.load(data.MNIST, cfg.data_root)
    train_split = data.first_per_class(ds.train, per_class)
    test_split = data.first_per_class(ds.test, per_class)
    tensors = {
        "X": train_split.flat_float().to(device),  # (N, 784) in 0..255, as in the seed
        "Y": train_split.labels.to(device),  # (N,)
        "X_test": test_split.flat_float().to(device),  # (M, 784)
        "Y_test": test_split.labels.to(device),  # (M,)
    }
    info = {
        "name": ds.name, "source": ds.source, "location": ds.location,
        "per_class_asked": per_class,
        "train_per_class": train_split.labels.bincount(minlength=10).tolist(),
        "test_per_class": test_split.labels.bincount(minlength=10).tolist(),
        "train_size": len(train_split), "test_size": len(test_split),
    }
    return tensors, info


def run_model(name: str, tensors: dict, cfg: Config, device: torch.device) -> tuple[nn.Module, dict]:
    repro.seed_everything(cfg.seed)  # same initial RNG state for every model
    model = MODELS[name]().to(device)
    history = train(model, tensors["X"], tensors["Y"], tensors["X_test"], tensors["Y_test"], n_epochs=cfg.epochs,
                    batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum, seed=cfg.seed,
                    max_steps=cfg.max_steps, progress=True)
    return model, history


def first_epoch_reaching(values: list[float], fraction: float = 0.995) -> int:
    """1-based first epoch whose value is within `fraction` of the run's best (a plateau marker)."""
    best = max(values)
    return next(i + 1 for i, v in enumerate(values) if v >= fraction * best)


def summarize(name: str, model: nn.Module, history: dict) -> dict:
    times = history["epoch_time"][1:] or history["epoch_time"]  # epoch 1 pays warm-up
    evals = history["eval_time"][1:] or history["eval_time"]
    return {
        "model": name,
        "parameters": count_parameters(model),
        "epochs": len(history["epoch_time"]),
        "final_train_accuracy": history["train_accuracy"][-1],
        "final_test_accuracy": history["test_accuracy"][-1],
        "best_test_accuracy": max(history["test_accuracy"]),
        "final_train_loss": history["train_loss"][-1],
        "final_test_loss": history["test_loss"][-1],
        "test_plateau_epoch": first_epoch_reaching(history["test_accuracy"]),
        "test_accuracy_range_last_half": (max(history["test_accuracy"][len(history["test_accuracy"]) // 2:])
                                          - min(history["test_accuracy"][len(history["test_accuracy"]) // 2:])),
        "mean_epoch_time_s": sum(times) / len(times),
        "mean_eval_time_s": sum(evals) / len(evals),
    }


def write_plots(out: Path, histories: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for metric, ylabel in (("accuracy", "Accuracy"), ("loss", "Cross-entropy loss")):
        fig, ax = plt.subplots(figsize=(8, 5))
        for (name, history), color in zip(histories.items(), ("tab:blue", "tab:orange", "tab:green")):
            epochs = range(1, len(history[f"train_{metric}"]) + 1)
            ax.plot(epochs, history[f"train_{metric}"], "o-", color=color, label=f"{name} train")
            ax.plot(epochs, history[f"test_{metric}"], "o--", color=color, label=f"{name} test")
        ax.set(xlabel="Epoch", ylabel=ylabel, title=f"Training and test {metric} vs epoch (eval mode)")
        ax.grid(True)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{metric}.png", dpi=120)
        plt.close(fig)
        written.append(f"{metric}.png")
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, history in histories.items():
        epochs = range(1, len(history["epoch_time"]) + 1)
        ax.plot(epochs, history["epoch_time"], "o-", label=f"{name} training pass")
    ax.set(xlabel="Epoch", ylabel="Seconds", title="Wall-clock time per epoch")
    ax.grid(True)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "epoch_time.png", dpi=120)
    plt.close(fig)
    written.append("epoch_time.png")
    return written


def write_log(out: Path, histories: dict) -> None:
    keys = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "epoch_time", "eval_time")
    with open(out / "log.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("model", "epoch", *keys))
        for name, history in histories.items():
            for i in range(len(history["epoch_time"])):
                writer.writerow((name, i + 1, *(f"{history[k][i]:.6g}" for k in keys)))


def comparison_table(summaries: list[dict]) -> str:
    rows = [
        "| model | parameters | final train acc | final test acc | best test acc | final test loss "
        "| test plateau epoch | training s/epoch | eval s/epoch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        rows.append(
            f"| {s['model']} | {s['parameters']:,} | {s['final_train_accuracy']:.4f} | {s['final_test_accuracy']:.4f} "
            f"| {s['best_test_accuracy']:.4f} | {s['final_test_loss']:.4f} | {s['test_plateau_epoch']} "
            f"| {s['mean_epoch_time_s']:.3f} | {s['mean_eval_time_s']:.3f} |"
        )
    return "\n".join(rows) + "\n"


def answers(summaries: dict, info: dict, cfg: Config, epochs: int, device: torch.device) -> dict:
    out = {
        "data": {**info, "note": "the seed asks for 600 per class of full MNIST; the sizes above are what this "
                 "machine has (mnist-5k: 400 train / 100 test per class)" if info["source"] == data.MNIST_5K else ""},
        "budget": {"epochs": epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "momentum": cfg.momentum,
                   "seed": cfg.seed, "device": str(device), "torch_threads": torch.get_num_threads(),
                   "quick": cfg.quick, "dry_run": cfg.dry_run},
        "seed_timing_anchor": {"MLP_s_per_epoch": 0.9, "MLP4_s_per_epoch": 1.25,
                               "note": "seed notebook, laptop CPU, training + evaluation of 6000+6000 images"},
    }
    mlp, mlp4 = summaries.get("MLP"), summaries.get("MLP4")
    if mlp:
        out["Q1_MLP"] = {"parameters": mlp["parameters"], "training_s_per_epoch": mlp["mean_epoch_time_s"],
                         "training_plus_eval_s_per_epoch": mlp["mean_epoch_time_s"] + mlp["mean_eval_time_s"]}
        out["Q2_training_process"] = {
            "final_train_accuracy": mlp["final_train_accuracy"], "final_test_accuracy": mlp["final_test_accuracy"],
            "final_train_loss": mlp["final_train_loss"], "final_test_loss": mlp["final_test_loss"],
            "test_plateau_epoch": mlp["test_plateau_epoch"],
            "answer": f"train accuracy reaches {mlp['final_train_accuracy']:.3f} and test accuracy "
                      f"{mlp['final_test_accuracy']:.3f} after {epochs} epochs; test accuracy is within 0.5% of its "
                      f"best from epoch {mlp['test_plateau_epoch']} on, while the gap between train and test loss "
                      f"shows the over-fitting of {info['train_size']} training images.",
        }
        tail = mlp["test_accuracy_range_last_half"]
        out["Q3_MLP_vs_VGG11"] = {
            "test_plateau_epoch": mlp["test_plateau_epoch"], "best_test_accuracy": mlp["best_test_accuracy"],
            "test_accuracy_range_last_half": tail,
            "answer": f"As far as this exercise allows: the MLP's test accuracy is within 0.5% of its best "
                      f"({mlp['best_test_accuracy']:.4f}) from epoch {mlp['test_plateau_epoch']} of {epochs} on, and "
                      f"varies by {tail:.4f} ({tail * info['test_size']:.0f} of {info['test_size']} test images) over the "
                      "second half of training, so 'converges quickly and is very stable' holds for our runs "
                      "(labcheck reproduce batchnorm --seeds N gives its spread over seeds). The comparison with "
                      "VGG11 ('about 1% lower') cannot be judged here: VGG11 and its numbers belong to another "
                      "exercise of the assignment.",
        }
    if mlp and mlp4:
        out["Q4_MLP4_vs_MLP"] = {
            "parameters": mlp4["parameters"],
            "test_accuracy_difference": mlp4["final_test_accuracy"] - mlp["final_test_accuracy"],
            "best_test_accuracy_difference": mlp4["best_test_accuracy"] - mlp["best_test_accuracy"],
            "test_plateau_epoch": {"MLP": mlp["test_plateau_epoch"], "MLP4": mlp4["test_plateau_epoch"]},
            "time_ratio_MLP4_over_MLP": mlp4["mean_epoch_time_s"] / mlp["mean_epoch_time_s"],
            "answer": f"MLP4 ends at test accuracy {mlp4['final_test_accuracy']:.4f} vs {mlp['final_test_accuracy']:.4f} "
                      f"(difference {mlp4['final_test_accuracy'] - mlp['final_test_accuracy']:+.4f}, i.e. "
                      f"{(mlp4['final_test_accuracy'] - mlp['final_test_accuracy']) * info['test_size']:+.0f} of "
                      f"{info['test_size']} test images) and costs {mlp4['mean_epoch_time_s'] / mlp['mean_epoch_time_s']:.2f}x "
                      "the training time per epoch. One seed cannot settle the seed notebook's claim that MLP4 "
                      "generalizes better: `labcheck reproduce batchnorm --seeds N` judges it across seeds "
                      "(Welch's t-test, report.md).",
        }
    return out


def main(args: argparse.Namespace) -> dict:
    """Q1-Q4 of the exercise; the answers, summaries and histories (plus data_source and config) as a dict."""
    cfg = Config.from_args(args)
    device = core.select_device(cfg.device)
    repro.seed_everything(cfg.seed)
    tensors, info = load_data(cfg, device)
    print(f"data: {info['source']} ({info['location']}), train {info['train_size']} / test {info['test_size']} "
          f"images; device {device}; {cfg.epochs} epochs")
    histories, summaries = {}, {}
    with repro.deterministic(cfg.deterministic):
        for name in cfg.models.split(","):
            model, histories[name] = run_model(name, tensors, cfg, device)
            summaries[name] = summarize(name, model, histories[name])
            s = summaries[name]
            print(f"{name}: test acc {s['final_test_accuracy']:.4f}, train acc {s['final_train_accuracy']:.4f}, "
                  f"{s['mean_epoch_time_s']:.3f} s/epoch training + {s['mean_eval_time_s']:.3f} s eval")
    result = answers(summaries, info, cfg, cfg.epochs, device)
    table = comparison_table(list(summaries.values()))
    print(table)
    if cfg.out is not None:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        write_log(out, histories)
        plots = write_plots(out, histories)
        (out / "comparison.md").write_text(table)
        result["files"] = ["log.csv", "comparison.md", *plots]
        (out / "answers.json").write_text(json.dumps(result, indent=2) + "\n")
    return {"histories": histories, "summaries": summaries, "answers": result, "data_source": info["source"],
            "config": dataclasses.asdict(cfg), "device": str(device)}


BAND_METRICS = ("final_test_accuracy", "final_train_accuracy", "final_test_loss", "best_test_accuracy",
                "test_plateau_epoch", "test_accuracy_range_last_half")  # per model; timings are not banded (machine-dependent)


def band_metrics(result: dict) -> dict[str, float]:
    """Per model: final/best accuracies, final test loss and the plateau epoch ("MLP4.final_test_accuracy")."""
    return {f"{name}.{metric}": float(summary[metric])
            for name, summary in result["summaries"].items() for metric in BAND_METRICS}


if __name__ == "__main__":
    main(get_args_parser().parse_args())
