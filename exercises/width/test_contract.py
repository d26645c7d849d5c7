"""Graded contract tests for `width` (hw2: performance vs width, Fashion-MNIST; CONTRACTS.md `width`).

Every test runs a probe of exercises/width/probes.py on the submission (`lab.call`) and on the reference
(`lab.expect`) with small budgets, and judges here, naming the likely mistake when it can.
The seed gives no points; they are weighted by importance (16 in all).
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
TRAIN_DEFAULTS = {"passes": 120, "reg_param": 0.0}  # the contract's train_model(..., learning_rate, ...) defaults
DIVERGENT_DEFAULTS = {"start": 1e-2}  # the contract's find_divergent_lr(diverges, start=1e-2)


def close(got, want, key: str) -> bool:
    try:
        torch.testing.assert_close(torch.as_tensor(got), torch.as_tensor(want), **bands.tolerance(key),
                                   check_dtype=False)
    except AssertionError:
        return False
    return True


@pytest.fixture(scope="module")
def small_fashion():
    """200 train / 200 test real Fashion-MNIST images, standardized with the 12% subsample's statistics."""
    ds = data.load(data.FASHION)
    train = data.subsample_fraction(ds.train, 0.12, seed=0)
    X_train, X_test = data.standardize_per_pixel(train.flat_float(), ds.test.flat_float())  # (7200, 784), (10000, 784)
    return {"X_train": X_train[:200].contiguous(), "y_train": train.labels[:200].clone(),
            "X_test": X_test[:200].contiguous(), "y_test": ds.test.labels[:200].clone()}


@pytest.mark.public
@pytest.mark.graded(points=2)
def test_mlp(lab):
    for case in (dict(seed=1, n=30, d=20, widths=[16]), dict(seed=2, n=25, d=12, widths=[8, 6])):
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
    case = dict(seed=3, n=40, d=15, width=9, reg_params=[0.0, 0.1, 1.0])
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


# Each case draws how many labels are wrong, so the right accuracy differs per call (no constant passes).
ACCURACY_CASES = [dict(seed=4, n=64, d=10, width=12), dict(seed=41, n=50, d=8, width=16),
                  dict(seed=417, n=37, d=12, width=10)]


@pytest.mark.public
@pytest.mark.graded(points=1)
def test_compute_accuracy(lab):
    for case in ACCURACY_CASES:
        got = lab.call("accuracy", **case)
        want = lab.expect("accuracy", **case)
        assert close(want["value"], want["expected"], "width.accuracy")  # the reference itself
        assert close(got["value"], want["expected"], "width.accuracy"), (
            f"compute_accuracy = {got['value']:.6g} where a fraction {want['expected']:.6g} of the predictions "
            f"are right ({case}): compare argmax(scores, dim=1) with y and divide by n")


def _alternative_passes(reference, case):
    """What a pass gives under common index mistakes, computed with the reference's fast path."""
    n, seed = case["n"], case["seed"]
    rng = np.random.RandomState(seed)
    orders = {
        "iterates over the examples in order (no random draws)": np.arange(n),
        "draws a permutation (sampling without replacement)": np.random.RandomState(seed).permutation(n),
        "uses np.random.choice(n, n, replace=False) (no replacement)": rng.choice(n, n, replace=False),
    }
    X, y, ws, bs = probes.make_problem(seed, case["n"], case["d"], case["width"])
    out = {}
    for name, index in orders.items():
        net = reference.AugmentedMLP.from_lists(ws, bs)
        reference.fast_sgd_pass(net, reference.augment(X), y.numpy(), index, case["learning_rate"], case["reg_param"])
        out[name] = [*net.ws, *net.bs]
    return out


@pytest.mark.graded(points=3)
def test_sgd_one_pass(lab):
    case = dict(seed=5, n=40, d=12, width=6, reg_param=0.05, learning_rate=0.05)
    got = lab.call("sgd_pass", **case)
    want = lab.expect("sgd_pass", **case)
    if not any(got["inputs_changed"]):
        pytest.fail("sgd_one_pass left the caller's ws and bs unchanged: the update must be in place "
                    "(`var -= lr * g` under torch.no_grad(), not `w = w - lr * g`)")
    names = ["ws[0]", "ws[1]", "bs[0]", "bs[1]"]
    wrong = [name for name, g, w in zip(names, got["inputs"], want["inputs"]) if not close(g, w, "width.sgd_one_pass")]
    if wrong:
        for mistake, params in _alternative_passes(lab.reference_module(), case).items():
            if all(close(g, p.detach(), "width.sgd_one_pass") for g, p in zip(got["inputs"], params)):
                pytest.fail(f"after one pass {', '.join(wrong)} differ from the reference: sgd_one_pass {mistake}; "
                            "each step must draw `np.random.choice(len(X))` (uniform, with replacement)")
        rng_note = ("" if got["next_random"] == want["next_random"] else
                    " It also consumed a different number of numpy random draws than len(X) calls to np.random.choice.")
        pytest.fail(f"after one pass (n={case['n']}, lr={case['learning_rate']}, reg={case['reg_param']}) "
                    f"{', '.join(wrong)} differ from the reference's single-example SGD.{rng_note}")
    if got["returned"] is None or not all(close(r, i, "width.sgd_one_pass")
                                          for r, i in zip(got["returned"], got["inputs"])):
        pytest.fail("sgd_one_pass must return the updated (ws, bs) it was given")


@pytest.mark.graded(points=3)
def test_train_model(lab, small_fashion):
    case = dict(seed=0, hidden_size=32, learning_rate=1e-2, passes=4, **small_fashion)
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


@pytest.mark.graded(points=1)
def test_train_model_defaults(lab, small_fashion):
    """Each default of train_model is the contract's: with one setting left out its logs are those it gives with the
    contract's value passed (passes=120, reg_param=0.0; 8 images and a hidden layer of 4: 960 steps a run)."""
    tiny = {k: v[:8].contiguous() for k, v in small_fashion.items()}
    got = lab.call("train_defaults", seed=1, hidden_size=4, learning_rate=1e-2, settings=TRAIN_DEFAULTS, **tiny)
    explicit, wrong = np.asarray(got["explicit"]), []
    for name, logs in got["omitted"].items():
        logs = np.asarray(logs)
        if logs.shape != explicit.shape or not np.array_equal(logs, explicit):
            rows = f" ({len(logs) - 1} passes logged, not {len(explicit) - 1})" if logs.shape != explicit.shape else ""
            wrong.append(f"{name}={TRAIN_DEFAULTS[name]!r}{rows}")
    assert not wrong, (f"train_model trains differently when a setting is left to its default than with the contract's "
                       f"default passed: {', '.join(wrong)}. Is the signature train_model(X_train, y_train, X_test, "
                       "y_test, hidden_size, learning_rate, passes=120, reg_param=0.0)?")


# Cases: a divergence threshold, or gradient descent on 0.5*L*w^2 (diverges for lr > 2/L).
DIVERGENCE_CASES = [
    {"kind": "threshold", "value": 3.7e-3, "start": None},
    {"kind": "threshold", "value": 0.5, "start": 1e-2},
    {"kind": "threshold", "value": 150.0, "start": 1.0},
    {"kind": "quadratic", "value": 3.0, "start": 1e-2},
    {"kind": "quadratic", "value": 70.0, "start": 1e-2},
]


def _rule(case):
    if case["kind"] == "threshold":
        return lambda lr: lr > case["value"]
    return probes._quadratic_diverges(case["value"])


@pytest.mark.graded(points=2)
def test_find_divergent_lr(lab):
    got = lab.call("divergent_lr", cases=DIVERGENCE_CASES)
    failures = []
    for case, result in zip(DIVERGENCE_CASES, got):
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
        lab.partial(1 - len(failures) / len(DIVERGENCE_CASES), f"{len(failures)} of {len(DIVERGENCE_CASES)} cases wrong")
        pytest.fail("find_divergent_lr must return eta* with diverges(eta*) False and diverges(2*eta*) True:\n"
                    + "\n".join(failures))


@pytest.mark.graded(points=1)
def test_find_divergent_lr_default_start(lab):
    """find_divergent_lr(diverges) alone searches exactly as with the contract's start=1e-2 passed."""
    cases = [{"kind": "threshold", "value": 0.3}, {"kind": "threshold", "value": 2e-4},
             {"kind": "quadratic", "value": 70.0}]
    got = lab.call("divergent_defaults", cases=cases, settings=DIVERGENT_DEFAULTS)
    for case, result in zip(cases, got):
        alone, explicit = result["omitted"]["start"], result["explicit"]
        assert alone["calls"] == explicit["calls"] and alone["eta"] == explicit["eta"], (
            f"find_divergent_lr(diverges) tries {alone['calls'][:4]}... and returns {alone['eta']:g}; with start=1e-2 "
            f"passed it tries {explicit['calls'][:4]}... and returns {explicit['eta']:g} ({case['kind']} "
            f"{case['value']:g}): is the default start=1e-2, as in the contract's signature?")


def _logs(train_acc):
    acc = np.asarray(train_acc, dtype=np.float64)
    rows = len(acc)
    return np.column_stack([np.full(rows, 16.0), np.linspace(2.3, 0.01, rows), acc,
                            np.linspace(2.3, 0.5, rows), 0.8 * acc])


INTERPOLATION_LOGS = [
    _logs([0.1, 0.5, 0.9, 0.99, 1.0, 1.0]),  # first reached after 4 passes
    _logs([0.1, 0.6, 0.99, 0.9995, 0.9998]),  # never
    _logs([0.2, 0.9, 1.0, 0.998, 1.0, 1.0, 1.0]),  # reached after 2, lost, reached again
    _logs([0.1, 1.0]),  # after the first pass
]


@pytest.mark.public
@pytest.mark.graded(points=1)
def test_interpolation_pass(lab):
    got = lab.call("interpolation", logs_list=INTERPOLATION_LOGS)
    want = lab.expect("interpolation", logs_list=INTERPOLATION_LOGS)
    wrong = [(g, w) for g, w in zip(got, want) if g != w]
    if wrong:
        off_by_one = all(g is not None and w is not None and g == w + 1 for g, w in wrong)
        hint = (" Off by one: row j of the logs is after j passes (row 0 is before training), so the answer is "
                "the row index itself." if off_by_one else "")
        lab.partial(1 - len(wrong) / len(want), f"{len(wrong)} of {len(want)} logs wrong")
        pytest.fail(f"interpolation_pass gave {got}, expected {want} (first row with train accuracy 1.0, "
                    f"else None).{hint}")
