"""Graded contract tests for `batchnorm` (BatchNorm MLPs; shared/CONTRACTS.md, seed a4_batchnorm_mlp_mnist.txt).

Everything is judged by behaviour, on small budgets (640 training images, 3 epochs):
  - architecture: parameter shapes in registration order, and eval-mode outputs recomputed from the
    submission's own parameters in the contract's layer order (probes.batchnorm.canonical_forward);
  - BatchNorm modes: batch statistics and running statistics (momentum 0.1) in train mode, running
    statistics (batch-independent outputs) in eval mode;
  - train(): the history it returns, metrics in eval mode, reshuffling every epoch, and SGD with momentum
    (its parameters after training vs SGD replayed on the batches it used, from the same weights).
"""
from __future__ import annotations

import math

import pytest
import torch

from labcheck import bands, data
from labcheck.exercises import get
_probes = get("batchnorm").probes_module()
HISTORY_KEYS = _probes.HISTORY_KEYS
PLACEMENTS = _probes.PLACEMENTS
match_canonical = _probes.match_canonical

pytestmark = pytest.mark.exercise("batchnorm")

TRACE = {"n_epochs": 3, "batch_size": 64, "lr": 0.01, "momentum": 0.9}  # 30 SGD steps
DEFAULTS = {"n_epochs": 20, "batch_size": 64, "lr": 0.01, "momentum": 0.9}  # the contract's train() defaults
TRAIN_PER_CLASS, TEST_PER_CLASS = 64, 20  # 640 / 200 images
SEED = 1234
MISTAKES = {
    "after_relu": "BatchNorm is applied after the ReLU (Linear-ReLU-BatchNorm); the exercise asks for "
                  "Linear-BatchNorm-ReLU",
    "first_layers": "BatchNorm sits on the first hidden layer; the exercise puts it after the second Linear",
    "unused": "the BatchNorm module is defined but never applied in forward()",
}


@pytest.fixture(scope="module")
def mnist() -> dict:
    ds = data.load(data.MNIST)
    train = data.first_per_class(ds.train, TRAIN_PER_CLASS)
    test = data.first_per_class(ds.test, TEST_PER_CLASS)
    X = train.flat_float()  # (640, 784), raw 0..255 as in the seed
    return {
        "X": X, "Y": train.labels, "X_test": test.flat_float(), "Y_test": test.labels,
        "x": X[3::20].clone(),  # (32, 784): a probe batch with every class
        "x_stats": X[7::10].clone(),  # (64, 784): sets realistic BatchNorm running statistics
    }

# MLP() built with MLP4's layers: the notebook's "adding another layer" cell defines `class MLP` a second time
# (the seed does), and the later, deeper class replaced the first one when the file ran.
REDEFINED_MLP = ("MLP() has MLP4's architecture (four Linear layers, two BatchNorm1d): is `class MLP` defined a "
                 "second time with the extra layer? The later definition replaces the first when the file runs. "
                 "Keep MLP as Linear-ReLU, Linear-BatchNorm-ReLU, Linear and name the deeper network MLP4")


def _probe_kwargs(mnist: dict, model: str) -> dict:
    return {"model": model, "seed": SEED, "x": mnist["x"], "x_stats": mnist["x_stats"]}


_TRACES: dict = {}


def _trace(lab, mnist: dict) -> dict:
    """One train() run per submission, shared by the four train tests (a failure is not cached)."""
    key = str(lab.submission)
    if key not in _TRACES:
        _TRACES[key] = lab.call("train_trace", model="MLP", seed=SEED, X=mnist["X"], Y=mnist["Y"],
                                X_test=mnist["X_test"], Y_test=mnist["Y_test"], **TRACE)
    return _TRACES[key]


# ---------------------------------------------------------------------------------------------
# Architecture


def _check_shapes(lab, mnist, model: str) -> None:
    got = lab.call("architecture", **_probe_kwargs(mnist, model))
    want = lab.expect("architecture", **_probe_kwargs(mnist, model))
    if got["param_shapes"] == want["param_shapes"]:
        return
    mlp4 = lab.expect("architecture", **_probe_kwargs(mnist, "MLP4")) if model == "MLP" else None
    if mlp4 is not None and got["param_shapes"] == mlp4["param_shapes"]:
        pytest.fail(REDEFINED_MLP)
    if model == "MLP4":
        mlp = lab.expect("architecture", **_probe_kwargs(mnist, "MLP"))
        if got["param_shapes"] == mlp["param_shapes"]:
            pytest.fail("MLP4 has exactly MLP's parameters: the extra Linear(512,512)-BatchNorm1d(512)-ReLU "
                        "block before the output layer is missing")
    if sorted(got["param_shapes"]) == sorted(want["param_shapes"]):
        lab.partial(0.5, "right layers, but registered in another order than the forward uses them")
    pytest.fail(f"{model}() parameter shapes in registration order are {got['param_shapes']} "
                f"({got['num_parameters']:,} parameters); expected {want['param_shapes']} "
                f"({want['num_parameters']:,}). Define the layers in __init__ in the order forward() applies them.")


def _check_forward(lab, mnist, model: str) -> None:
    got = lab.call("architecture", **_probe_kwargs(mnist, model))
    want = lab.expect("architecture", **_probe_kwargs(mnist, model))
    layers, x = got["layers"], mnist["x"]
    n_lin, n_norm = len(layers["linears"]), len(layers["norms"])
    w_lin, w_norm = len(want["layers"]["linears"]), len(want["layers"]["norms"])
    if layers["other_parameter_modules"]:
        pytest.fail(f"{model} has parameters in unexpected modules {layers['other_parameter_modules']}; "
                    "use nn.Linear and nn.BatchNorm1d only")
    if model == "MLP" and (n_lin, n_norm) == (4, 2):
        pytest.fail(REDEFINED_MLP)
    if (n_lin, n_norm) != (w_lin, w_norm):
        hint = " (the same as MLP: the extra block is missing)" if model == "MLP4" and (n_lin, n_norm) == (3, 1) else ""
        pytest.fail(f"{model} has {n_lin} nn.Linear and {n_norm} BatchNorm modules{hint}; expected {w_lin} and {w_norm}")
    assert got["out"].shape == want["out"].shape, f"{model} output shape {tuple(got['out'].shape)}, expected (32, 10)"
    tol = bands.tolerance("batchnorm.forward")
    ok, err, _ = match_canonical(x, got["out"], layers, **tol)
    if ok:
        torch.testing.assert_close(got["out_alone"], got["out"][: len(got["out_alone"])], **tol,
                                   msg=f"{model} in eval mode gives a sample different outputs alone and in a batch")
        return
    for placement in PLACEMENTS[1:]:
        if match_canonical(x, got["out"], layers, placement=placement, **tol)[0]:
            pytest.fail(f"{model}: {MISTAKES[placement]}")
    if match_canonical(x, got["out"], layers, training=True, **tol)[0]:
        pytest.fail(f"{model} in eval mode still normalizes with batch statistics: after model.eval() the "
                    "BatchNorm must use its running statistics")
    pytest.fail(f"{model} in eval mode does not compute Linear-ReLU, (Linear-BatchNorm-ReLU)*{w_norm}, Linear from "
                f"its own parameters (max abs difference {err:.3g} over the layer orders tried)")


@pytest.mark.public
@pytest.mark.graded(points=1)
def test_mlp_parameter_shapes(lab, mnist):
    _check_shapes(lab, mnist, "MLP")


@pytest.mark.public
@pytest.mark.graded(points=3)
def test_mlp_forward_eval_mode(lab, mnist):
    _check_forward(lab, mnist, "MLP")


@pytest.mark.graded(points=2)
def test_mlp_batchnorm_train_mode(lab, mnist):
    got = lab.call("train_mode_pass", **_probe_kwargs(mnist, "MLP"))
    before, after = got["before"], got["after"]
    if (len(before["linears"]), len(before["norms"])) == (4, 2):
        pytest.fail(REDEFINED_MLP)
    if len(before["norms"]) != 1 or len(before["linears"]) != 3:
        pytest.fail(f"MLP has {len(before['linears'])} nn.Linear and {len(before['norms'])} BatchNorm modules; expected 3 and 1")
    tol = bands.tolerance("batchnorm.running_stats")
    ok, err, stats = match_canonical(mnist["x"], got["out"], before, training=True, **tol)
    if not ok:
        if match_canonical(mnist["x"], got["out"], before, training=False, **tol)[0]:
            pytest.fail("in train mode the MLP normalizes with running statistics: model.train() must use batch statistics")
        for placement in PLACEMENTS[1:]:
            if match_canonical(mnist["x"], got["out"], before, training=True, placement=placement, **tol)[0]:
                pytest.fail(f"MLP in train mode: {MISTAKES[placement]}")
        pytest.fail(f"MLP in train mode does not normalize the second Linear's output with the batch statistics "
                    f"(max abs difference {err:.3g})")
    new, old = after["norms"][0], before["norms"][0]
    want_mean, want_var = stats[0]["running_mean"], stats[0]["running_var"]
    batch_mean = stats[0]["input"].mean(dim=0)
    step = (new["running_mean"].double() - old["running_mean"].double()) / (batch_mean - old["running_mean"].double())
    momentum = step.median().item()
    torch.testing.assert_close(
        new["running_mean"].double(), want_mean, **tol,
        msg=lambda m: f"running_mean after one train-mode batch is off: updated with momentum ~{momentum:.3g}, "
                      f"expected 0.1 (nn.BatchNorm1d's default)\n{m}")
    torch.testing.assert_close(
        new["running_var"].double(), want_var, **tol,
        msg=lambda m: f"running_var after one train-mode batch is off (expected 0.9*old + 0.1*unbiased batch variance)\n{m}")


@pytest.mark.graded(points=1)
def test_mlp4_parameter_shapes(lab, mnist):
    _check_shapes(lab, mnist, "MLP4")


@pytest.mark.graded(points=2)
def test_mlp4_forward_eval_mode(lab, mnist):
    _check_forward(lab, mnist, "MLP4")


# ---------------------------------------------------------------------------------------------
# train()


def _as_float(value) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    return float(value)


@pytest.mark.public
@pytest.mark.graded(points=1)
def test_train_history_format(lab, mnist):
    trace = _trace(lab, mnist)
    history, n = trace["history"], TRACE["n_epochs"]
    missing = [k for k in HISTORY_KEYS if k not in history]
    assert not missing, f"train() result lacks the keys {missing} (has {sorted(history)})"
    for key in HISTORY_KEYS:
        values = history[key]
        assert isinstance(values, (list, tuple)), f"history[{key!r}] is a {type(values).__name__}, expected a list"
        assert len(values) == n, f"history[{key!r}] has {len(values)} entries for {n} epochs (one per epoch)"
        kinds = {type(v).__name__ for v in values if not isinstance(v, (int, float)) or isinstance(v, bool)}
        assert not kinds, (f"history[{key!r}] holds {sorted(kinds)} values, expected Python floats"
                           + (" (append .item() of the tensor)" if "Tensor" in kinds else ""))
        assert all(math.isfinite(v) for v in values), f"history[{key!r}] = {values} is not finite"
    for key in ("train_accuracy", "test_accuracy"):
        assert all(0.0 <= v <= 1.0 for v in history[key]), f"history[{key!r}] = {history[key]}: a fraction in [0, 1], not percent"
    for key in ("train_loss", "test_loss"):
        assert all(v >= 0.0 for v in history[key]), f"history[{key!r}] = {history[key]} has negative losses"
    times = history["epoch_time"]
    assert all(t > 0 for t in times), f"epoch_time = {times}: seconds per epoch must be > 0"
    assert sum(times) <= trace["wall_time"] * 1.01, (
        f"epoch_time sums to {sum(times):.3f} s but train() ran for {trace['wall_time']:.3f} s: "
        "record each epoch's own duration, not the time since the start")


@pytest.mark.graded(points=2)
def test_train_metrics_in_eval_mode(lab, mnist):
    trace = _trace(lab, mnist)
    history, recomputed = trace["history"], trace["eval_metrics"]
    tol = bands.tolerance("batchnorm.metrics")
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
        assert key in history and len(history[key]) > 0, f"train() result has no {key!r} list"
        reported = _as_float(history[key][-1])
        torch.testing.assert_close(
            reported, recomputed[key], **tol,
            msg=f"last {key} = {reported:.6g}, but the trained model in eval mode over all of "
                f"{'X' if key.startswith('train') else 'X_test'} gives {recomputed[key]:.6g}: compute the metrics "
                "after model.eval() (BatchNorm's running statistics) under torch.no_grad(), over the full set")


@pytest.mark.graded(points=2)
def test_train_reshuffles_each_epoch(lab, mnist):
    trace = _trace(lab, mnist)
    n, epochs, bs = len(mnist["X"]), TRACE["n_epochs"], TRACE["batch_size"]
    if not trace["rows_matched"]:
        pytest.fail("the training batches are not rows of X (scaled or not): train on X as passed")
    ids = trace["batch_ids"]
    if not ids:
        pytest.fail("no training forward pass seen (model in train mode with autograd on)")
    seen = sum(len(b) for b in ids)
    assert seen == epochs * n, (f"{len(ids)} training batches with {seen} samples in {epochs} epochs of {n} samples; "
                                f"expected each sample once per epoch ({epochs * n})")
    sizes = [len(b) for b in ids]
    assert max(sizes) == bs, f"largest training batch has {max(sizes)} samples; batch_size={bs} was asked"
    order = torch.cat(ids)
    per_epoch = [order[e * n : (e + 1) * n] for e in range(epochs)]
    for e, p in enumerate(per_epoch):
        assert torch.equal(p.sort().values, torch.arange(n)), (
            f"epoch {e + 1} does not visit every sample exactly once (sampling with replacement?)")
    assert not torch.equal(per_epoch[0], torch.arange(n)), "the first epoch visits the samples in their stored order: shuffle"
    for e in range(1, epochs):
        assert not torch.equal(per_epoch[e], per_epoch[e - 1]), (
            f"epochs {e} and {e + 1} visit the samples in the same order: draw a new permutation every epoch "
            "(inside the epoch loop), not once before it")


@pytest.mark.graded(points=2)
def test_train_sgd_momentum(lab, mnist):
    trace = _trace(lab, mnist)
    replays = trace["replays"]
    if not replays:
        pytest.fail("cannot replay the training: its batches are not rows of X (see test_train_reshuffles_each_epoch)")
    final = trace["final"]
    tol = bands.tolerance("batchnorm.dynamics")

    def matches(replayed) -> bool:
        return len(replayed) == len(final) and all(
            a.shape == b.shape and torch.allclose(a, b, **tol) for a, b in zip(final, replayed))

    if matches(replays["momentum"]):
        return
    if matches(replays["plain"]):
        pytest.fail(f"the parameters after train() match plain SGD without momentum: use "
                    f"torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum) (momentum={TRACE['momentum']})")
    moved = [(a - i).norm() / (b - i).norm().clamp_min(1e-12)
             for a, b, i in zip(final, replays["momentum"], trace["initial"] or final)]
    pytest.fail(f"the parameters after train() differ from SGD(lr={TRACE['lr']}, momentum={TRACE['momentum']}) with "
                f"cross-entropy replayed on the same batches (weights moved {min(moved):.3g}-{max(moved):.3g}x as far "
                "as expected): check the optimizer, its lr and momentum, and the loss")


@pytest.mark.graded(points=1)
def test_train_defaults(lab, mnist):
    """Each default of train() is the contract's: with one setting left out it trains exactly as with the contract's
    value passed (n_epochs=20, batch_size=64, lr=0.01, momentum=0.9; 128 images, 40 SGD steps a run)."""
    small = dict(X=mnist["X"][::5].clone(), Y=mnist["Y"][::5].clone(), X_test=mnist["X_test"][::5].clone(),
                 Y_test=mnist["Y_test"][::5].clone())
    got = lab.call("train_defaults", model="MLP", seed=SEED, **small, settings=DEFAULTS)
    explicit, tol = got["explicit"], bands.tolerance("batchnorm.dynamics")
    wrong = []
    for name, run in got["omitted"].items():
        same = (run["lengths"] == explicit["lengths"] and run["batch_sizes"] == explicit["batch_sizes"]
                and torch.allclose(torch.tensor(run["losses"]), torch.tensor(explicit["losses"]), **tol)
                and all(a.shape == b.shape and torch.allclose(a, b, **tol) for a, b in zip(run["final"], explicit["final"])))
        if not same:
            epochs = sorted(set(run["lengths"].values()))
            detail = (f" ({epochs} entries per history list, not {DEFAULTS['n_epochs']})" if name == "n_epochs"
                      and epochs != [DEFAULTS["n_epochs"]] else "")
            wrong.append(f"{name}={DEFAULTS[name]!r}{detail}")
    assert not wrong, (f"train() trains differently when a setting is left to its default than with the contract's "
                       f"default passed: {', '.join(wrong)}. Is the signature train(model, X, Y, X_test, Y_test, "
                       "n_epochs=20, batch_size=64, lr=0.01, momentum=0.9)?")
