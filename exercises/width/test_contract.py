"""Graded contract tests for `width` (hw2: performance vs width, Fashion-MNIST; CONTRACTS.md `width`).

Every test runs a probe of exercises/width/probes.py on the submission (`lab.call`) and on the reference
(`lab.expect`) with small budgets, and judges here, naming the likely mistake when it can.
The seed gives no points; they are weighted by importance (14 in all).

Every input is drawn from the run's secret (`lab.seed`, `lab.rng`, `draws`: labcheck.secret): seeds, sizes,
widths, learning rates, regularization, the Fashion-MNIST images trained on, the divergence problems and
the logs, so answers recorded on one run answer nothing on the next. Whether sgd_one_pass updates in place
shows in values, never in a flag: the caller's tensors after a pass, and where the next pass on them starts.
"""
import math

import numpy as np
import pytest
import torch

from labcheck import bands, data
from labcheck.exercises import get
probes = get("width").probes_module()

pytestmark = pytest.mark.exercise("width")

LN10 = math.log(10.0)


close = bands.close  # (got, want, "width.<tolerance>")


@pytest.fixture(scope="module")
def small_fashion(draws):
    """200 train / 200 test real Fashion-MNIST images drawn for this run, standardized with the 12% subsample's
    statistics."""
    ds = data.load(data.FASHION)
    train = data.subsample_fraction(ds.train, 0.12, seed=0)
    X_train, X_test = data.standardize_per_pixel(train.flat_float(), ds.test.flat_float())  # (7200, 784), (10000, 784)
    g = torch.Generator().manual_seed(draws.seed("train_model images"))
    rows, test_rows = torch.randperm(len(X_train), generator=g)[:200], torch.randperm(len(X_test), generator=g)[:200]
    return {"X_train": X_train[rows].contiguous(), "y_train": train.labels[rows].clone(),
            "X_test": X_test[test_rows].contiguous(), "y_test": ds.test.labels[test_rows].clone()}


@pytest.mark.public
@pytest.mark.graded(points=2)
def test_mlp(lab):
    rng = lab.rng("mlp")
    cases = (dict(seed=lab.seed("mlp", 1), n=rng.randint(20, 40), d=rng.randint(10, 30), widths=[rng.randint(8, 24)]),
             dict(seed=lab.seed("mlp", 2), n=rng.randint(20, 40), d=rng.randint(8, 20),
                  widths=[rng.randint(6, 16), rng.randint(4, 12)]))
    for case in cases:
        got = lab.call("mlp_forward", **case)
        want = lab.expect("mlp_forward", **case)
        assert tuple(got.shape) == tuple(want.shape), (
            f"mlp returned shape {tuple(got.shape)} for {case}, expected (n, K) = {tuple(want.shape)}")
        if not close(got, want, "width.mlp"):
            if got.min() >= 0 and want.min() < 0:
                pytest.fail("mlp's scores are never negative: ReLU applied on the output layer? "
                            "(ReLU goes after every layer but the last)")
            pytest.fail(f"mlp scores differ from the reference for {case}: max |diff| = "
                        f"{(got - want).abs().max().item():.3g}. Check `hidden @ w + b` with ws[j] of shape (d_in, d_out)")


@pytest.mark.public
@pytest.mark.graded(points=2)
def test_compute_objective(lab):
    rng = lab.rng("compute_objective")
    case = dict(seed=lab.seed("compute_objective"), n=rng.randint(30, 60), d=rng.randint(10, 20),
                width=rng.randint(6, 16), reg_params=[0.0, round(rng.uniform(0.05, 0.3), 3), round(rng.uniform(0.5, 2), 3)])
    got = lab.call("objective", **case)
    want = lab.expect("objective", **case)
    v0, w0 = got["values"][0], want["values"][0]
    if not close(v0, w0, "width.objective"):
        hint = " reduction='sum' instead of 'mean'?" if abs(v0 - case["n"] * w0) < 1e-3 * abs(v0) else ""
        pytest.fail(f"with reg_param=0 the objective is {v0:.6g}, expected the mean cross-entropy {w0:.6g}.{hint}")
    squares, norms = sum(got["squared_norms"]), sum(got["norms"])
    for reg, value, expected in zip(case["reg_params"][1:], got["values"][1:], want["values"][1:]):
        if close(value, expected, "width.objective"):
            continue
        penalty = value - v0
        guesses = {
            "reg_param * sum ||w||^2 (the 0.5 is missing)": reg * squares,
            "0.5 * reg_param * sum ||w|| (norm instead of squared norm)": 0.5 * reg * norms,
            "reg_param * sum ||w|| (norm, no 0.5)": reg * norms,
            "0.5 * reg_param * (sum ||w||)^2": 0.5 * reg * norms**2,
            "no penalty at all": 0.0,
        }
        guess = min(guesses, key=lambda k: abs(guesses[k] - penalty))
        hint = f" It looks like {guess}." if abs(guesses[guess] - penalty) < 1e-3 * max(1.0, abs(penalty)) else ""
        pytest.fail(f"reg_param={reg}: objective {value:.6g}, expected {expected:.6g}; your L2 term is {penalty:.6g}, "
                    f"expected 0.5 * reg_param * sum ||w||^2 = {0.5 * reg * squares:.6g}.{hint}")


@pytest.mark.public
@pytest.mark.graded(points=1)
def test_compute_accuracy(lab):
    # Each case draws how many labels are wrong, so the right accuracy differs per call (no constant passes).
    rng = lab.rng("compute_accuracy")
    cases = [dict(seed=lab.seed("compute_accuracy", i), n=rng.randint(30, 70), d=rng.randint(8, 14),
                  width=rng.randint(8, 16)) for i in range(3)]
    for case in cases:
        got = lab.call("accuracy", **case)
        want = lab.expect("accuracy", **case)
        assert close(want["value"], want["expected"], "width.accuracy")  # the reference itself
        assert close(got["value"], want["expected"], "width.accuracy"), (
            f"compute_accuracy = {got['value']:.6g} where a fraction {want['expected']:.6g} of the predictions "
            f"are right ({case}): compare argmax(scores, dim=1) with y and divide by n")


def _alternative_passes(reference, case):
    """What a first pass gives under common index mistakes, computed with the reference's fast path."""
    n, seed = case["n"], case["seeds"][0]
    rng = np.random.RandomState(seed)
    orders = {
        "iterates over the examples in order (no random draws)": np.arange(n),
        "draws a permutation (sampling without replacement)": np.random.RandomState(seed).permutation(n),
        "uses np.random.choice(n, n, replace=False) (no replacement)": rng.choice(n, n, replace=False),
    }
    X, y, ws, bs = probes.make_problem(case["seed"], case["n"], case["d"], case["width"])
    out = {}
    for name, index in orders.items():
        net = reference.AugmentedMLP.from_lists(ws, bs)
        reference.fast_sgd_pass(net, reference.augment(X), y.numpy(), index, case["learning_rate"], case["reg_param"])
        out[name] = [*net.ws, *net.bs]
    return out


@pytest.mark.graded(points=3)
def test_sgd_one_pass(lab):
    rng = lab.rng("sgd_one_pass")
    case = dict(seed=lab.seed("sgd_one_pass"), n=rng.randint(30, 50), d=rng.randint(8, 16), width=rng.randint(4, 8),
                reg_param=round(rng.uniform(0.01, 0.1), 3), learning_rate=round(rng.uniform(0.02, 0.08), 3),
                seeds=[lab.seed("sgd_one_pass", "pass", 1), lab.seed("sgd_one_pass", "pass", 2)])
    got = lab.call("sgd_pass", **case)["passes"]
    want = lab.expect("sgd_pass", **case)["passes"]
    if not any(got[0]["caller_changed"]):
        pytest.fail("sgd_one_pass left the caller's ws and bs unchanged: the update must be in place "
                    "(`var -= lr * g` under torch.no_grad(), not `w = w - lr * g`)")
    names = ["ws[0]", "ws[1]", "bs[0]", "bs[1]"]
    for k, (g, w) in enumerate(zip(got, want)):
        wrong = [name for name, a, b in zip(names, g["caller"], w["caller"]) if not close(a, b, "width.sgd_one_pass")]
        if wrong and k == 0:
            for mistake, params in _alternative_passes(lab.reference_module(), case).items():
                if all(close(a, p.detach(), "width.sgd_one_pass") for a, p in zip(g["caller"], params)):
                    pytest.fail(f"after one pass {', '.join(wrong)} differ from the reference: sgd_one_pass {mistake}; "
                                "each step must draw `np.random.choice(len(X))` (uniform, with replacement)")
            rng_note = ("" if g["next_random"] == w["next_random"] else
                        " It also consumed a different number of numpy random draws than len(X) calls to "
                        "np.random.choice.")
            pytest.fail(f"after one pass (n={case['n']}, lr={case['learning_rate']}, reg={case['reg_param']}) "
                        f"{', '.join(wrong)} of the caller's tensors differ from the reference's single-example "
                        f"SGD.{rng_note}")
        if wrong:
            pytest.fail(f"the first pass is right, but a second pass on the same ws and bs leaves {', '.join(wrong)} "
                        "where a pass from the right starting point does not: the second pass must start from the "
                        "first one's updates, made in place on the caller's tensors")
        if g["returned"] is None or not all(close(r, c, "width.sgd_one_pass") for r, c in zip(g["returned"], g["caller"])):
            pytest.fail("sgd_one_pass must return the updated (ws, bs) it was given")


@pytest.mark.graded(points=3)
def test_train_model(lab, small_fashion):
    rng = lab.rng("train_model")
    case = dict(seed=lab.seed("train_model"), hidden_size=rng.randint(16, 48),
                learning_rate=round(rng.uniform(5e-3, 2e-2), 4), passes=4, **small_fashion)
    got = np.asarray(lab.call("train_logs", **case))
    want = np.asarray(lab.expect("train_logs", **case))
    assert got.shape == want.shape, (
        f"train_model returned shape {got.shape}, expected (passes + 1, 5) = {want.shape}: "
        "one row before training and one after each pass")
    assert np.all(got[:, 0] == case["hidden_size"]), "column 0 of the logs must be hidden_size"
    if not close(got[0, 1], LN10, "width.initial_loss"):
        pytest.fail(f"the train loss before training is {got[0, 1]:.4g}, expected ln(10) = {LN10:.4f}: "
                    "weights must start as 1e-6 * torch.randn(...) (without the 1e-6 scale the scores are huge)")
    if not close(got, want, "width.train_logs"):
        bad = np.argwhere(~np.isclose(got, want, **bands.tolerance("width.train_logs")))
        row, col = bad[0]
        columns = ["hidden_size", "train_loss", "train_acc", "test_loss", "test_acc"]
        pytest.fail(f"logs differ from the reference first at pass {row}, {columns[col]}: {got[row, col]:.6g} vs "
                    f"{want[row, col]:.6g}. Expected: init 1e-6*randn(784, h) then 1e-6*randn(h, 10) from torch's "
                    "global RNG, zero biases, then one sgd_one_pass per pass, logs after 0..passes passes")


def divergence_cases(lab) -> list[dict]:
    """Divergence thresholds and gradient descent on 0.5*L*w^2 (diverges for lr > 2/L), drawn for this run:
    a threshold below the default start, one above it, one from another start, two curvatures."""
    rng = lab.rng("find_divergent_lr")
    return [
        {"kind": "threshold", "value": float(f"{10 ** rng.uniform(-4, -2.2):.4g}"), "start": None},
        {"kind": "threshold", "value": float(f"{10 ** rng.uniform(-1.5, 0):.4g}"), "start": 1e-2},
        {"kind": "threshold", "value": float(f"{10 ** rng.uniform(1, 3):.4g}"), "start": 1.0},
        {"kind": "quadratic", "value": float(f"{rng.uniform(1.5, 10):.4g}"), "start": 1e-2},
        {"kind": "quadratic", "value": float(f"{rng.uniform(30, 300):.4g}"), "start": 1e-2},
    ]


def _rule(case):
    if case["kind"] == "threshold":
        return lambda lr: lr > case["value"]
    return probes._quadratic_diverges(case["value"])


@pytest.mark.graded(points=2)
def test_find_divergent_lr(lab):
    cases = divergence_cases(lab)
    got = lab.call("divergent_lr", cases=cases)
    failures = []
    for case, result in zip(cases, got):
        eta, diverges = result["eta"], _rule(case)
        if not diverges(eta) and diverges(2 * eta):
            continue
        what = (f"{case['kind']} {case['value']}" + (f", start={case['start']}" if case["start"] else ""))
        if diverges(eta) and not diverges(eta / 2):
            failures.append(f"{what}: returned {eta:g}, which diverges; {eta / 2:g} does not, so you returned "
                            "2*eta* (the first divergent lr) instead of eta* (the last stable one)")
        else:
            failures.append(f"{what}: returned {eta:g}; diverges(eta)={diverges(eta)}, diverges(2*eta)="
                            f"{diverges(2 * eta)} (want False, True) after {result['n_calls']} calls")
    if failures:
        lab.partial(1 - len(failures) / len(cases), f"{len(failures)} of {len(cases)} cases wrong")
        pytest.fail("find_divergent_lr must return eta* with diverges(eta*) False and diverges(2*eta*) True:\n"
                    + "\n".join(failures))


def _logs(train_acc):
    acc = np.asarray(train_acc, dtype=np.float64)
    rows = len(acc)
    return np.column_stack([np.full(rows, 16.0), np.linspace(2.3, 0.01, rows), acc,
                            np.linspace(2.3, 0.5, rows), 0.8 * acc])


def interpolation_logs(lab) -> list:
    """Logs drawn for this run: reached after some passes, never (0.99.. only), reached then lost then reached
    again, reached after the first pass."""
    rng = lab.rng("interpolation_pass")

    def rising(k):  # k train accuracies below 1, increasing
        return sorted(round(rng.uniform(0.1, 0.999), 4) for _ in range(k))

    first = rng.randint(2, 6)
    lost = rng.randint(1, 3)
    return [
        _logs(rising(first) + [1.0] * rng.randint(1, 3)),
        _logs(rising(rng.randint(3, 7)) + [0.9995, 0.9998][: rng.randint(1, 2)]),
        _logs(rising(lost) + [1.0, round(rng.uniform(0.99, 0.999), 4)] + [1.0] * rng.randint(1, 3)),
        _logs([round(rng.uniform(0.05, 0.3), 4), 1.0] + [1.0] * rng.randint(0, 2)),
    ]


@pytest.mark.public
@pytest.mark.graded(points=1)
def test_interpolation_pass(lab):
    logs = interpolation_logs(lab)
    got = lab.call("interpolation", logs_list=logs)
    want = lab.expect("interpolation", logs_list=logs)
    wrong = [(g, w) for g, w in zip(got, want) if g != w]
    if wrong:
        off_by_one = all(g is not None and w is not None and g == w + 1 for g, w in wrong)
        hint = (" Off by one: row j of the logs is after j passes (row 0 is before training), so the answer is "
                "the row index itself." if off_by_one else "")
        lab.partial(1 - len(wrong) / len(want), f"{len(wrong)} of {len(want)} logs wrong")
        pytest.fail(f"interpolation_pass gave {got}, expected {want} (first row with train accuracy 1.0, "
                    f"else None).{hint}")
