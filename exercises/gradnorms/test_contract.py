"""Graded contract tests for exercise `gradnorms` (CONTRACTS.md section `gradnorms`, seed ps2_gradient_norms_matrix_sensing).

Points follow the seed where it gives them: Problem 1 Part 1 (the MLP, 5) = architecture 2 + forward 3; Part 2
(gradient norms, 5); Part 3 (training and the per-epoch curves, 15) = train_one_epoch 4 + test_one_epoch 3 +
training curves 8. Problem 2 has no points in the notebook; weighted by importance: measurements 3, loss 2,
gradient 5, gradient descent with R = r 5, over-parametrized R = d from small and large init 5.
Every comparison is against the reference run through the same probe (`lab.expect`), with tolerances from
exercises/gradnorms/bands.json; the messages name the seed's and other classic mistakes.

Every input is drawn from the run's secret (`lab.seed`, `lab.rng`, `draws`: labcheck.secret): weights, images,
hidden sizes, batch sizes, learning rates and sensing problems, so answers recorded on one run answer nothing on
the next. The architecture is judged by what the model computes with the grader's weights, never by the layer
sizes or flags the worker could report.
"""
import math

import pytest
import torch

from labcheck import bands, data
from labcheck.exercises import get
_probes = get("gradnorms").probes_module()
sensing_problem = _probes.sensing_problem

pytestmark = pytest.mark.exercise("gradnorms")

HIDDEN = [128, 128, 128]  # the exercise's network
TRAIN_N, TEST_N = 1024, 500


def unequal_sizes(lab) -> list[int]:
    """Three decreasing hidden sizes drawn for this run: exposes a last layer sized from hidden_sizes[0]."""
    rng = lab.rng("unequal hidden sizes")
    return [rng.randint(48, 96), rng.randint(24, 47), rng.randint(8, 23)]


def tol(name: str) -> dict:
    return bands.tolerance(f"gradnorms.{name}")


def close(got, want, name: str) -> bool:
    return bands.close(got, want, f"gradnorms.{name}", float64=True)


def fmt(values, digits: int = 4) -> str:
    return "[" + ", ".join(f"{float(v):.{digits}g}" for v in values) + "]"


@pytest.fixture(scope="module")
def mnist(draws):
    """Real MNIST, normalised by the train split's scalar mean/std (as the seed): small subsets drawn for this run."""
    ds = data.load(data.MNIST)
    x_train = ds.train.images.float().div(255.0)  # (N, 28, 28)
    mean, std = x_train.mean(), x_train.std()
    gen = torch.Generator().manual_seed(draws.seed("images"))
    train_idx = torch.randperm(len(ds.train), generator=gen)[:TRAIN_N]
    test_idx = torch.randperm(len(ds.test), generator=gen)[:TEST_N]
    norm = lambda split, idx: ((split.images[idx].float().div(255.0) - mean) / std).unsqueeze(1)  # noqa: E731
    return {"train": (norm(ds.train, train_idx), ds.train.labels[train_idx]),
            "test": (norm(ds.test, test_idx), ds.test.labels[test_idx]), "source": ds.source}


# ---------------------------------------------------------------------------------------------
# Problem 1, Part 1: the MLP (5 points)


@pytest.mark.public
@pytest.mark.graded(points=2)
def test_mlp_architecture(lab):
    sizes = unequal_sizes(lab)
    got = lab.call("mlp_architecture", seed=lab.seed("mlp architecture"), hidden_sizes=sizes)
    problems = []
    if got["error"]:
        last = got["registered"][-1] if got["registered"] else None
        hint = (f" The last Linear is {last[0]} -> {last[1]}: sized from hidden_sizes[0] instead of hidden_sizes[-1]?"
                if last and last[0] == sizes[0] and last[0] != sizes[-1] else "")
        problems.append(f"with hidden_sizes={sizes}, Linear layers {[784, *sizes, 10]} (bias-free, in that order) "
                        f"cannot take the weights: {got['error']}.{hint}")
    elif got["centered"] is None:
        problems.append(f"output shape {tuple(torch.as_tensor(got['out']).shape)} for {len(got['expected_centered'])} "
                        "inputs, expected (n, 10)")
    elif not close(got["centered"], got["expected_centered"], "mlp_forward"):
        extra = [tuple(p.shape) for p in got["parameters"] if p.dim() == 1]
        hint = (f"the model has parameters {extra} besides the weights: biases; the network is bias-free "
                "(nn.Linear(..., bias=False))" if extra else
                "check Flatten, a ReLU after every hidden layer and none after the last")
        diff = (got["centered"] - got["expected_centered"]).abs().max().item()
        problems.append(f"with the grader's weights in its Linear layers, the model computes another function of its "
                        f"input than Linear-ReLU per hidden layer, then Linear (max difference {diff:.3g} up to the "
                        f"output's normalisation): {hint}")
    if got["depth"] != len(sizes) + 1:
        problems.append(f"model.depth is {got['depth']}, expected len(hidden_sizes) + 1 = {len(sizes) + 1}")
    assert not problems, "; ".join(problems)


@pytest.mark.public
@pytest.mark.graded(points=3)
def test_mlp_forward(lab):
    for seed in (lab.seed("mlp forward", 1), lab.seed("mlp forward", 2)):
        got = lab.call("mlp_forward", seed=seed, hidden_sizes=HIDDEN)
        want = lab.expect("mlp_forward", seed=seed, hidden_sizes=HIDDEN)
        assert got.shape == want.shape, f"output shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        if close(got, want, "mlp_forward"):
            continue
        row_sums = torch.logsumexp(got.double(), dim=1)
        col_sums = torch.logsumexp(got.double(), dim=0)
        if torch.allclose(col_sums, torch.zeros_like(col_sums), atol=1e-4):
            hint = "each column is normalised: LogSoftmax over dim 0 (the batch) instead of dim=1"
        elif not torch.allclose(row_sums, torch.zeros_like(row_sums), atol=1e-4):
            hint = "rows are not log-probabilities (logsumexp != 0): missing LogSoftmax(dim=1) at the output?"
        else:
            hint = "same weights, different function: check the ReLU after every hidden layer and none after the last"
        torch.testing.assert_close(got, want, **tol("mlp_forward"), msg=lambda m: f"log-probabilities differ from "
                                   f"the reference with identical weights (seed {seed}): {hint}. {m}")


# ---------------------------------------------------------------------------------------------
# Problem 1, Part 2: per-layer gradient norms (5 points)


@pytest.mark.graded(points=5)
def test_gradient_norms(lab):
    case = dict(seed=lab.seed("gradient norms"), hidden_sizes=HIDDEN, n=lab.rng("gradient norms").randint(16, 48))
    got = lab.call("gradient_norms", **case)
    want = lab.expect("gradient_norms", **case)
    norms, expected = got["norms"], want["norms"]
    if len(norms) == len(expected) and close(norms, expected, "gradient_norms"):
        return
    # get_gradient_norms itself, on gradients the grader put in the model's Linear layers: checked, not reported
    own, true = got["norms_of_set_grads"], got["set_grad_norms"]
    if len(norms) != len(expected):
        if len(norms) == got["parameters_with_grads"] != len(expected):
            hint = "one norm per parameter (weights and biases): take only each Linear layer's weight gradient"
        elif len(norms) == 1:
            hint = "a single norm over all parameters; the exercise asks for one Frobenius norm per layer"
        else:
            hint = f"expected depth = {len(expected)} norms, one per Linear layer"
        pytest.fail(f"get_gradient_norms returned {len(norms)} values {fmt(norms)}: {hint}")
    if len(own) == len(true) and close(own, true, "gradient_norms"):
        lab.partial(0.8, "get_gradient_norms computes the right norms of the gradients in your model's layers")
        pytest.fail(f"your norms {fmt(norms)} are right for your model, but its gradients differ from the "
                    f"reference's {fmt(expected)} with identical weights: see test_mlp_forward")
    if len(own) == len(true) and close(sorted(own), sorted(true), "gradient_norms"):
        hint = "the right norms in the wrong order: list them from the input layer to the output layer"
    elif len(own) == len(true) and close([v * v for v in true], own, "gradient_norms"):
        hint = "squared norms: take the square root (torch.linalg.norm)"
    else:
        hint = "expected the Frobenius norm of each Linear weight's .grad"
    pytest.fail(f"get_gradient_norms returned {fmt(norms)}, expected {fmt(expected)}: {hint}")


# ---------------------------------------------------------------------------------------------
# Problem 1, Part 3: training and the per-epoch curves (15 points)


def _train(lab, mnist, label: str, epochs: int, n: int, batch_size: int):
    x, y = mnist["train"]
    kwargs = dict(images=x[:n], labels=y[:n], hidden_sizes=HIDDEN, seed=lab.seed(label), batch_size=batch_size,
                  lr=round(lab.rng(label).uniform(0.005, 0.02), 4), epochs=epochs)
    return lab.call("train_epochs", **kwargs), lab.expect("train_epochs", **kwargs)


def _diagnose_training(got, want) -> str:
    loss_ok = close(got["losses"], want["losses"], "train_epochs")
    weights_ok = all(close(g, w, "train_epochs") for g, w in zip(got["weights"], want["weights"]))
    norms_ok = close(got["norms"], want["norms"], "train_epochs")
    if loss_ok and weights_ok and not norms_ok:
        rev = [row[::-1] for row in got["norms"]]
        if close(rev, want["norms"], "train_epochs"):
            return "the mean gradient norms are listed output-to-input"
        return (f"training matches but the mean gradient norms {[fmt(r) for r in got['norms']]} differ from "
                f"{[fmt(r) for r in want['norms']]}: average get_gradient_norms over the epoch's steps")
    if got["num_parameter_tensors"] != want["num_parameter_tensors"]:
        return (f"the model has {got['num_parameter_tensors']} parameter tensors, the bias-free network "
                f"{want['num_parameter_tensors']}: SGD also trains the extra ones (biases?), see test_mlp_architecture")
    if not weights_ok and loss_ok:
        return "the loss matches but the weights do not: is optimizer.step() called once per batch (after zero_grad)?"
    if not loss_ok and weights_ok:
        return (f"the weights match but the mean loss {fmt(got['losses'])} differs from {fmt(want['losses'])}: "
                "the mean of nll_loss over the epoch's batches")
    return (f"losses {fmt(got['losses'])} vs reference {fmt(want['losses'])}: SGD with nll_loss on the model's "
            "log-probabilities, zero_grad -> backward -> step per batch (see test_mlp_forward for the model)")


@pytest.mark.graded(points=4)
def test_train_one_epoch(lab, mnist):
    got, want = _train(lab, mnist, "train_one_epoch", epochs=1, n=512, batch_size=64)
    ok = (close(got["losses"], want["losses"], "train_epochs") and close(got["norms"], want["norms"], "train_epochs")
          and all(close(g, w, "train_epochs") for g, w in zip(got["weights"], want["weights"])))
    assert ok, f"one epoch of train_one_epoch differs from the reference: {_diagnose_training(got, want)}"


@pytest.mark.graded(points=3)
def test_test_one_epoch(lab, mnist):
    x, y = mnist["test"]
    problems = []
    batch_sizes = lab.rng("test_one_epoch").sample([50, 100, 125, 250], 2)  # equal batches: TEST_N = 500
    cases = ((lab.seed("test_one_epoch", 1), 3.0, batch_sizes[0]), (lab.seed("test_one_epoch", 2), 1.0, batch_sizes[1]))
    for seed, scale, batch_size in cases:  # two answers, so no constant passes
        kwargs = dict(images=x, labels=y, hidden_sizes=HIDDEN, seed=seed, batch_size=batch_size, weight_scale=scale)
        got, want = lab.call("test_epoch", **kwargs), lab.expect("test_epoch", **kwargs)
        if got["correct"] != want["correct"]:
            if 0.0 <= got["correct"] <= 1.0 and abs(got["correct"] - want["correct"] / len(y)) < 1e-6:
                problems.append(f"num_correct is {got['correct']:.4g}, a fraction: return the count {want['correct']:.0f}")
            else:
                problems.append(f"num_correct is {got['correct']:.6g}, expected {want['correct']:.0f} of {len(y)} "
                                "(argmax over the class dimension, dim=1)")
        if not close(got["loss"], want["loss"], "test_epoch"):
            ratio = got["loss"] / want["loss"] if want["loss"] else float("nan")
            hint = " (summed, not averaged?)" if ratio > 1.5 else ""
            problems.append(f"mean test loss {got['loss']:.6g}, expected {want['loss']:.6g}{hint}")
        if problems:
            break
    assert not problems, "; ".join(problems)


@pytest.mark.graded(points=8)
def test_training_curves(lab, mnist):
    """The numbers Part 3 plots: per-epoch mean loss and per-layer mean gradient norms, 5 epochs at batch 128."""
    got, want = _train(lab, mnist, "training curves", epochs=5, n=TRAIN_N, batch_size=128)
    epochs_ok = [close(gl, wl, "train_epochs") and close(gn, wn, "train_epochs")
                 for gl, wl, gn, wn in zip(got["losses"], want["losses"], got["norms"], want["norms"])]
    if all(epochs_ok) and len(epochs_ok) == len(want["losses"]):
        return
    if close(got["losses"], want["losses"], "train_epochs"):
        lab.partial(0.5, "the per-epoch losses match the reference; the gradient-norm curves do not")
    pytest.fail(f"per-epoch curves differ from the reference (epochs matching: {epochs_ok}): "
                f"{_diagnose_training(got, want)}")


# ---------------------------------------------------------------------------------------------
# Problem 2: matrix sensing (20 points)


@pytest.mark.public
@pytest.mark.graded(points=3)
def test_sensing_measurements(lab):
    rng, seed = lab.rng("sensing_measurements"), lab.seed("sensing_measurements")
    m, d = rng.randint(30, 60), rng.randint(5, 9)
    got = lab.call("sensing_measurements", seed=seed, m=m, d=d)
    want = lab.expect("sensing_measurements", seed=seed, m=m, d=d)
    assert tuple(got.shape) == (m,), f"sensing_measurements returned shape {tuple(got.shape)}, expected ({m},)"
    if close(got, want, "sensing_measurements"):
        return
    gen = torch.Generator().manual_seed(seed)  # the probe's A and X, rebuilt here to name the mistake
    A, X = torch.randn(m, d, d, generator=gen).double(), torch.randn(d, d, generator=gen).double()
    if close(got, torch.einsum("mij,ji->m", A, X), "sensing_measurements"):
        hint = "you computed trace(A_i X) = <A_i, X^T>; the inner product is trace(A_i^T X) = sum(A_i * X)"
    elif close(got, torch.einsum("mij,kj->m", A, X), "sensing_measurements"):
        hint = ("np.inner-style row products summed (sum_jk <row j of A_i, row k of X>); the trace inner product "
                "is sum(A_i * X)")
    else:
        hint = "y_i = <A_i, X> = sum(A_i * X) over all d x d entries"
    pytest.fail(f"measurements {fmt(got[:4])}... differ from {fmt(want[:4])}...: {hint}")


@pytest.mark.public
@pytest.mark.graded(points=2)
def test_sensing_loss(lab):
    rng = lab.rng("sensing_loss")
    cases = (dict(seed=lab.seed("sensing_loss", 1), m=rng.randint(50, 70), d=rng.randint(7, 9), r=2, R=3),
             dict(seed=lab.seed("sensing_loss", 2), m=rng.randint(30, 40), d=rng.randint(5, 7), r=1, R=2))
    for kwargs in cases:  # two answers, so no constant passes
        got, want = lab.call("sensing_loss", **kwargs), lab.expect("sensing_loss", **kwargs)
        assert got.numel() == 1, f"sensing_loss returned shape {tuple(got.shape)}, expected a 0-dim tensor"
        if close(got.reshape(()), want, "sensing_loss"):
            continue
        ratio = float(got) / float(want)
        hint = ""
        if abs(ratio - kwargs["m"]) < 1e-2:
            hint = f" (ratio {ratio:.3g} = m: a sum instead of the mean (1/m))"
        elif abs(ratio - 0.5) < 1e-3:
            hint = " (half: the loss is (1/m) sum r_i^2, without a factor 1/2)"
        pytest.fail(f"sensing_loss = {float(got):.6g}, expected {float(want):.6g}{hint}")


@pytest.mark.graded(points=5)
def test_sensing_grad(lab):
    rng = lab.rng("sensing_grad")
    kwargs = dict(seed=lab.seed("sensing_grad"), m=rng.randint(50, 70), d=rng.randint(6, 10), r=2, R=3)
    got, want = lab.call("sensing_grad", **kwargs), lab.expect("sensing_grad", **kwargs)
    assert tuple(got.shape) == tuple(want.shape), f"sensing_grad shape {tuple(got.shape)}, expected like U {tuple(want.shape)}"
    if close(got, want, "sensing_grad"):
        return
    # Rebuild the probe's problem to name the mistake (same seeded generator).
    m, d = kwargs["m"], kwargs["d"]
    A, _, y, gen = sensing_problem(kwargs["seed"], m, d, kwargs["r"])
    U = torch.randn(d, kwargs["R"], generator=gen) / math.sqrt(d)
    A, U, y = A.double(), U.double(), y.double()
    r = torch.einsum("mij,ij->m", A, U @ U.T) - y
    G = torch.einsum("m,mij->ij", r, A)
    if close(got, (4 / m) * G @ U, "sensing_grad") or close(got, (4 / m) * G.T @ U, "sensing_grad"):
        hint = "missing the symmetrization: the gradient is (2/m) sum_i r_i (A_i + A_i^T) U, and A_i is not symmetric"
    elif close(got, 2 * want, "sensing_grad") or close(2 * got, want, "sensing_grad"):
        hint = "off by a factor of 2"
    else:
        hint = "expected (2/m) sum_i r_i (A_i + A_i^T) U with r_i = <A_i, U U^T> - y_i"
    torch.testing.assert_close(got, want.to(got.dtype), **tol("sensing_grad"), msg=lambda m: f"{hint}. {m}")


def _check_descent(lab, kwargs, label: str) -> list[str]:
    got, want = lab.call("gradient_descent", **kwargs), lab.expect("gradient_descent", **kwargs)
    problems = []
    steps = kwargs["steps"]
    dist, ref = got["distances"], want["distances"]  # the reference stores t = 0..steps
    if len(dist) == steps + 1:
        aligned = close(dist, ref, "gradient_descent")
    elif len(dist) == steps:  # one per step: accept before-step (t = 0..steps-1) or after-step (t = 1..steps)
        aligned = close(dist, ref[1:], "gradient_descent") or close(dist, ref[:-1], "gradient_descent")
    else:
        aligned = False
        problems.append(f"{label}: {len(dist)} distances for {steps} steps (expected {steps + 1}, t = 0..{steps})")
    U_ok = tuple(got["U"].shape) == tuple(want["U"].shape) and close(got["U"], want["U"], "gradient_descent")
    if not U_ok:
        hint = " (NaN/inf: diverged)" if not torch.isfinite(got["U"]).all() else ""
        problems.append(f"{label}: final U differs from the reference after {steps} steps{hint}; final distance "
                        f"{dist[-1] if dist else float('nan'):.4g} vs {ref[-1]:.4g} (U <- U - lr * sensing_grad(U): see "
                        "test_sensing_grad)")
    elif not aligned and len(dist) in (steps, steps + 1):
        problems.append(f"{label}: U is right but distances {fmt(dist[:3])}... are not ||U_t U_t^T - X*||_F "
                        f"({fmt(ref[:3])}...)")
    return problems


@pytest.mark.graded(points=5)
def test_gradient_descent_rank_r(lab):
    """Problem 2b: R = r from a U_0 of U*'s scale converges to X*."""
    kwargs = dict(seed=lab.seed("gradient descent rank r"), m=lab.rng("gradient descent rank r").randint(180, 220),
                  d=10, r=2, R=2, alpha=1 / math.sqrt(10), lr_scale=0.1, steps=150)
    problems = _check_descent(lab, kwargs, "R = r")
    assert not problems, "; ".join(problems)


@pytest.mark.graded(points=5)
def test_overparametrized_implicit_regularization(lab):
    """Problem 2d/2e: R = d from alpha W; small alpha ends near X* with low effective rank, large alpha not."""
    problems, passed = [], 0
    seed = lab.seed("overparametrized")
    for alpha in (1e-4, 1e-1):
        kwargs = dict(seed=seed, m=160, d=16, r=1, R=16, alpha=alpha, lr_scale=0.1, steps=250)
        found = _check_descent(lab, kwargs, f"R = d, alpha = {alpha:g}")
        problems += found
        passed += not found
    if passed:
        lab.partial(passed / 2, f"{passed} of 2 initialisations match the reference")
    assert not problems, "; ".join(problems)
