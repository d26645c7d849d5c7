"""How often width's eta* flips under a rounding-level change (issue #24 item 4: a knife edge, measured).

eta* is decided by one-pass runs at width 16: a run "diverges" when its train loss after one pass of
single-example SGD ends above the untrained one (ln 10). Our fast numpy step and the seed's autograd step
do the same update up to float32 rounding (tests/test_width.py), so they are two runs of the same seed that
differ only by rounding. Per seed, this prints both paths' one-pass losses at 1e-2, 2e-2 and 4e-2 and the
eta* each path's search finds (from 1e-2: 1e-1 diverges, then double while 2x stays stable), then the share
of seeds whose eta* differs between the two paths: the flip rate.

    PYTHONPATH=src python scripts/eta_star_flips.py --seeds 20     # quick budget's data, one thread (~5 min)
"""
import argparse
import json
import math

from labcheck import repro, runner, study
from labcheck.exercises import get

LRS = (0.01, 0.02, 0.04)  # the search's steps: 1e-2 is stable at every seed, 4e-2 diverges at every seed


def one_pass(ref, X, y, width: int, seed: int, lr: float, fast: bool) -> tuple[float, float, bool]:
    """(untrained loss, loss after one pass, diverges) of one seeded pass at lr, as make_diverges runs it."""
    repro.seed_everything(seed)
    logs = ref.train_model(X, y, X[:1], y[:1], width, lr, passes=1, fast=fast)
    initial, after = float(logs[0, 1]), float(logs[1, 1])
    return initial, after, bool(not math.isfinite(after) or after > initial)


def eta_star(verdicts: dict[float, bool]) -> float:
    """The search's answer from the verdicts at LRS (1e-2 stable; double while twice the lr is stable)."""
    lr = LRS[0]
    while 2 * lr in verdicts and not verdicts[2 * lr]:
        lr *= 2
    return lr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 (default: 20)")
    args = p.parse_args()
    runner.limit_threads()
    ref = get("width").load_reference()
    flips = 0
    for seed in range(args.seeds):
        cfg = ref.Config.from_args(ref.get_args_parser().parse_args(["--quick", "--seed", str(seed)]))
        X, y, _, _, _ = ref.load_data(cfg)
        runs = {path: {lr: one_pass(ref, X, y, cfg.search_width, seed, lr, path == "fast") for lr in LRS}
                for path in ("fast", "autograd")}
        answers = {path: eta_star({lr: r[2] for lr, r in per_lr.items()}) for path, per_lr in runs.items()}
        flips += answers["fast"] != answers["autograd"]
        print(json.dumps({"seed": seed, "eta_star": answers,
                          "loss_after_one_pass_at_0.02": {k: v[0.02][1] for k, v in runs.items()}}), flush=True)
    print(f"eta* differs between the two roundings at {flips} of {args.seeds} seeds")


if __name__ == "__main__":
    main()
