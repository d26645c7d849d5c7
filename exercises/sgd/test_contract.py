"""Graded contract tests for `sgd` (lab 3: SGD from scratch on MNIST; CONTRACTS.md `sgd`).

Every test runs a probe of exercises/sgd/probes.py on the submission (`lab.call`) and, where there is an
expected value, on the reference (`lab.expect`) with small budgets, and judges here, naming the
likely mistake when it can. The reference's updates equal torch.optim.SGD bit for bit
(tests/test_sgd.py); a student's `p -= lr * g` matches to float rounding (tolerance "sgd.step").
Init checks are exact statistical tests at a stated false-failure probability ("sgd.init_stats").
Band checks use the grading data (the mnist-5k digits) and its bands. The seed gives no points;
they are weighted by importance (27 in all).
"""
import math

import pytest
import torch

from labcheck import bands, data
from labcheck.exercises import get
from labcheck.sandbox import SubmissionFailure
probes = get("sgd").probes_module()

pytestmark = pytest.mark.exercise("sgd")

LRS = [0.05, 0.05, 0.02, 0.1, 0.01]  # a changing lr: momentum's lr placement only matters then
MU = 0.9
TRAIN_DEFAULTS = {"lr": 0.01, "epochs": 20, "momentum": 0.0}  # the contract's train_sgd(param_dict, loader, ...)
ALPHA = bands.TOLERANCES["sgd.init_stats"]["false_failure"]


def close(got, want, key: str) -> bool:
    try:
        torch.testing.assert_close(torch.as_tensor(got), torch.as_tensor(want), **bands.tolerance(key),
                                   check_dtype=False)
    except (AssertionError, RuntimeError, TypeError, ValueError):
        return False
    return True


def max_diff(got, want) -> float:
    return (torch.as_tensor(got).double() - torch.as_tensor(want).double()).abs().max().item()


@pytest.fixture(scope="module")
def grading():
    """The grading digits (mnist-5k) as (N, 784) floats in [0, 1], and parameters trained by the reference."""
    ds = probes.grading_data()
    x_test, y_test = probes.as_inputs(ds.test)
    inputs = probes.learn_inputs(ds)
    return {"ds": ds, "x_test": x_test, "y_test": y_test, "learn": inputs}


@pytest.fixture(scope="module")
def trained(grading):
    """Parameters after 3 epochs of the reference recipe (so evaluate sees a useful network)."""
    from labcheck import core
    from labcheck.cli import load_reference

    module = load_reference("sgd")
    inputs = grading["learn"]
    params = module.initialize_nn({}, generator=torch.Generator().manual_seed(11))
    loader = core.ResidentLoader(inputs["x_train"], inputs["y_train"], batch_size=128, seed=11)
    module.train_sgd(params, loader, lr=0.01, epochs=3, momentum=0.9)
    return {k: v.detach().clone() for k, v in params.items()}


# ---------------------------------------------------------------------------------------------
# initialize_nn


def init_diagnosis(key: str, std: float) -> str:
    fan_in, fan_out = probes.SHAPES[key]
    hints = [(1 / math.sqrt(3), "uniform(-1, 1) init (torch.rand * 2 - 1)?"),
             (1.0, "randn without the 1/sqrt(fan_in) scale?"),
             (1 / fan_in, "1/fan_in used as the std (it is the variance)?"),
             (1 / math.sqrt(fan_out), "fan_out (W.size(1)) instead of fan_in (W.size(0))?")]
    for value, hint in hints:
        if abs(std / value - 1) < 0.05 and abs(value * math.sqrt(fan_in) - 1) > 0.05:
            return " " + hint
    return ""


@pytest.mark.public
@pytest.mark.graded(points=2)
def test_initialize_nn_structure(lab):
    got = lab.call("init_params", seed=0)
    problems = []
    if not (got["returned_same_dict"] or got["returned_none"]) and got["unchanged"]:
        problems.append(f"initialize_nn returned a new {got['returned_type']} and left param_dict's "
                        f"{', '.join(got['unchanged'])} as they were: the course's cells call initialize_nn(param_dict) "
                        "and ignore what it returns, so it must fill param_dict in place")
    meta, tensors = got["meta"], got["tensors"]
    missing = [k for k in probes.KEYS if k not in tensors]
    if missing:
        problems.append(f"param_dict lacks tensors {missing} after initialize_nn")
    for key in [k for k in probes.KEYS if k in tensors]:
        m = meta[key]
        if tuple(m["shape"]) != probes.SHAPES[key]:
            problems.append(f"{key} has shape {tuple(m['shape'])}, expected {probes.SHAPES[key]} (x @ W + b, "
                            "hidden size 100)")
        if m["dtype"] != "torch.float32":
            problems.append(f"{key} is {m['dtype']}, expected torch.float32")
        if not m["requires_grad"]:
            hint = (" torch.zeros_like(param) makes a new tensor that does not require grad: "
                    "set requires_grad for the biases too" if key.startswith("b") else "")
            problems.append(f"{key} does not require grad, so it would never be trained.{hint}")
        elif not m["is_leaf"]:
            problems.append(f"{key} is not a leaf tensor (computed from another tensor after requires_grad): "
                            "its .grad stays None. Create it, then call requires_grad_()")
        if key.startswith("b") and tuple(m["shape"]) == probes.SHAPES[key]:
            biggest = tensors[key].abs().max().item()
            if biggest != 0:
                problems.append(f"{key} is not zero (max |b| = {biggest:.3g}): biases start at 0")
    assert not problems, "; ".join(problems)


@pytest.mark.graded(points=2)
def test_initialize_nn_std(lab):
    got = lab.call("init_params", seed=1)
    problems = []
    for key, fan_in in probes.FAN_IN.items():
        w = got["tensors"].get(key)
        if w is None or tuple(w.shape) != probes.SHAPES[key]:
            problems.append(f"{key} missing or of the wrong shape")
            continue
        n, sigma = w.numel(), 1 / math.sqrt(fan_in)
        lo, hi = probes.std_interval(n, sigma, ALPHA)
        std = w.double().pow(2).mean().sqrt().item()
        mean, bound = w.double().mean().item(), probes.mean_bound(n, sigma, ALPHA)
        if not lo <= std <= hi:
            problems.append(f"{key} has std {std:.4g}, expected 1/sqrt({fan_in}) = {sigma:.4g} "
                            f"(interval [{lo:.4g}, {hi:.4g}] at false-failure probability {ALPHA:g})."
                            + init_diagnosis(key, std))
        elif abs(mean) > bound:
            problems.append(f"{key} has mean {mean:.3g}, outside +-{bound:.3g} for N(0, {sigma:.3g}^2) draws")
    assert not problems, "; ".join(problems)


@pytest.mark.graded(points=1)
def test_initialize_nn_gaussian(lab):
    got = lab.call("init_params", seed=2)
    z = []
    for key, fan_in in probes.FAN_IN.items():
        w = got["tensors"].get(key)
        assert w is not None and tuple(w.shape) == probes.SHAPES[key], f"{key} missing or of the wrong shape"
        z.append(w.flatten().double() * math.sqrt(fan_in))  # N(0, 1) if the init is right
    z = torch.cat(z)
    distance, eps = probes.ks_distance_to_normal(z), probes.dkw_epsilon(len(z), ALPHA)
    assert distance <= eps, (
        f"the weights times sqrt(fan_in) are not standard normal: sup|F_n - Phi| = {distance:.4f} > {eps:.4f} "
        f"(DKW bound at false-failure probability {ALPHA:g}). W should be drawn from N(0, 1/fan_in) "
        "(torch.randn or normal_), not from a uniform distribution")


@pytest.mark.graded(points=1)
def test_initial_loss_and_accuracy(lab, grading):
    loss, acc = lab.call("init_eval", seed=3, x=grading["x_test"], y=grading["y_test"])
    source = grading["ds"].source
    try:
        bands.check_band("sgd.contract.init_loss", loss, source)
    except bands.BandError as e:
        pytest.fail(f"the untrained network's test loss is {loss:.4g}; expected about ln 10 = 2.303 "
                    f"(tiny logits). Too-large initial weights give a large loss. {e}")
    bands.check_band("sgd.contract.init_acc", acc, source)


# ---------------------------------------------------------------------------------------------
# my_nn


@pytest.mark.public
@pytest.mark.graded(points=2)
def test_my_nn_input_shapes(lab):
    got = lab.call("forward", seed=4, batch=17)
    want = lab.expect("forward", seed=4, batch=17)
    problems = []
    for shape, out, ref in zip(got["shapes"], got["outputs"], want["outputs"]):
        if isinstance(out, str):
            problems.append(f"my_nn failed on input of shape {tuple(shape)}: {out}")
        elif tuple(out.shape) != tuple(ref.shape):
            problems.append(f"my_nn returned shape {tuple(out.shape)} for input {tuple(shape)}, expected (B, 10)")
        elif not close(out, ref, "sgd.my_nn"):
            hint = " ReLU on the output layer?" if out.min() >= 0 > ref.min() else ""
            problems.append(f"my_nn's logits for input {tuple(shape)} differ from the reference by up to "
                            f"{max_diff(out, ref):.3g}.{hint} Expected W2 relu(W1 relu(W0 x + b0) + b1) + b2")
    assert not problems, "; ".join(problems)


@pytest.mark.graded(points=1)
def test_my_nn_gradients(lab):
    got = lab.call("forward", seed=5, batch=9)
    want = lab.expect("forward", seed=5, batch=9)
    assert got["grad_error"] is None, f"backward through my_nn failed: {got['grad_error']}"
    for key in probes.KEYS:
        g = got["grads"][key]
        assert g is not None, f"{key} received no gradient through my_nn (is it used, and not detached?)"
        assert close(g, want["grads"][key], "sgd.my_nn"), (
            f"the gradient of the loss w.r.t. {key} differs from the reference by {max_diff(g, want['grads'][key]):.3g}")


# ---------------------------------------------------------------------------------------------
# sgd_step and sgd_momentum_step


def first_mismatch(got_steps, want_steps, key: str):
    for t, (got, want) in enumerate(zip(got_steps, want_steps)):
        for j, (g, w) in enumerate(zip(got, want)):
            if not close(g, w, key):
                return t, j, max_diff(g, w)
    return None


@pytest.mark.public
@pytest.mark.graded(points=3)
def test_sgd_step_trajectory(lab):
    got = lab.call("sgd_steps", seed=6, lrs=LRS)
    want = lab.expect("sgd_steps", seed=6, lrs=LRS)
    miss = first_mismatch(got["params"], want["params"], "sgd.step")
    if miss is not None:
        t, j, diff = miss
        hint = ("the update rule itself: p -= lr * p.grad, in place on the caller's tensors" if t == 0 else
                "the first step is right but later ones are not: gradients accumulate because they are "
                "not zeroed after the step?")
        pytest.fail(f"after step {t + 1} of sgd_step (lrs {LRS}) {probes.KEYS[j]} differs from torch.optim.SGD "
                    f"by {diff:.3g}: check {hint}")


@pytest.mark.public
@pytest.mark.graded(points=1)
def test_sgd_step_zeroes_grads(lab):
    got = lab.call("sgd_steps", seed=7, lrs=LRS[:2])
    for t, sizes in enumerate(got["grads_after"]):
        for key, size in zip(probes.KEYS, sizes):
            assert size is None or size == 0, (
                f"after sgd_step {t + 1}, {key}.grad is not zero (max |grad| = {size:.3g}): zero it "
                "(p.grad.zero_() or p.grad = None), or the next backward adds to it")


@pytest.mark.graded(points=3)
def test_momentum_step_trajectory(lab):
    got = lab.call("momentum_steps", seed=8, lrs=LRS, mu=MU)
    want = lab.expect("momentum_steps", seed=8, lrs=LRS, mu=MU)
    miss = first_mismatch(got["params"], want["params"], "sgd.step")
    if miss is not None:
        t, j, diff = miss
        if any(s not in (None, 0) for s in got["grads_after"][0]):
            hint = "gradients are not zeroed after the step, so they accumulate"
        elif t <= 1:
            hint = "the rule v = mu * v + g, p -= lr * v (velocities updated in place, starting from zero)"
        else:
            hint = ("the parameters are right while lr is constant and wrong once it changes: lr inside the "
                    "velocity (v = mu v + lr g, p -= v)? The contract and torch use v = mu v + g, p -= lr v")
        pytest.fail(f"after step {t + 1} of sgd_momentum_step (lrs {LRS}, mu {MU}) {probes.KEYS[j]} differs from "
                    f"torch.optim.SGD(momentum={MU}) by {diff:.3g}: check {hint}")


@pytest.mark.graded(points=1)
def test_momentum_velocities(lab):
    got = lab.call("momentum_steps", seed=9, lrs=LRS[:3], mu=MU)
    want = lab.expect("momentum_steps", seed=9, lrs=LRS[:3], mu=MU)
    for t, (vs, ws) in enumerate(zip(got["velocities"], want["velocities"])):
        for key, v, w in zip(probes.KEYS, vs, ws):
            if close(v, w, "sgd.velocity"):
                continue
            ratio = (v.double().norm() / w.double().norm()).item()
            hint = ""
            if abs(ratio - LRS[0]) < 0.01 * LRS[0]:
                hint = f" The velocity is lr = {LRS[0]} times too small: v = mu * v + lr * g?"
            elif abs(ratio) < 1e-12:
                hint = " The velocities list was not updated in place (still zeros)."
            elif any(size not in (None, 0) for size in got["grads_after"][0]):
                hint = " Gradients are not zeroed after the step, so v adds up accumulated gradients."
            pytest.fail(f"after step {t + 1}, the velocity of {key} differs from v = mu * v + g by "
                        f"{max_diff(v, w):.3g} (norm ratio {ratio:.3g}).{hint}")


# ---------------------------------------------------------------------------------------------
# evaluate and train_sgd


@pytest.mark.graded(points=2)
def test_evaluate_every_sample(lab, grading, trained):
    # 60 digits per class, grouped by class: the last batch (88 of 600) holds only 8s and 9s.
    subset = data.first_per_class(grading["ds"].test, 60)
    x, y = probes.as_inputs(subset)
    case = dict(params=trained, x=x, y=y, batch_size=256)
    loss, acc = lab.call("evaluate_loader", **case)
    want_loss, want_acc = lab.expect("evaluate_loader", **case)
    problems = []
    if not 0.0 <= acc <= 1.0:
        problems.append(f"accuracy {acc:.4g} is not a fraction in [0, 1] (percent?)")
    elif not close(acc, want_acc, "sgd.evaluate"):
        hint = ""
        if abs(acc - want_acc * 600 / 768) < 1e-3:
            hint = ": correct counts divided by the nominal batch size (256), so the last batch of 88 counts as 256"
        problems.append(f"accuracy {acc:.4f}, expected {want_acc:.4f} over all 600 samples{hint}")
    if not close(loss, want_loss, "sgd.evaluate"):
        problems.append(f"mean loss {loss:.4f}, expected {want_loss:.4f}: average over samples (sum of "
                        "per-sample losses / N), not the mean of per-batch means (the last batch is smaller)")
    assert not problems, "; ".join(problems)


@pytest.mark.graded(points=1)
def test_evaluate_huge_logits(lab, grading, trained):
    huge = dict(trained)
    huge["W2"], huge["b2"] = trained["W2"] * 1e4, trained["b2"] * 1e4  # logits ~1e4: exp overflows float32
    # two answers, so no constant passes; whole batches only (uneven batches are test_evaluate_every_sample's)
    for rows, batch_size in ((slice(0, 500), 250), (slice(500, 800), 150)):
        case = dict(params=huge, x=grading["x_test"][rows], y=grading["y_test"][rows], batch_size=batch_size)
        loss, acc = lab.call("evaluate_loader", **case)
        want_loss, _ = lab.expect("evaluate_loader", **case)
        assert math.isfinite(loss), (
            f"evaluate's loss is {loss} for logits of size ~1e4: softmax then log overflows; use "
            "F.cross_entropy on the logits (log-softmax is computed stably)")
        assert close(loss, want_loss, "sgd.evaluate"), f"loss {loss:.6g} for huge logits, expected {want_loss:.6g}"


def check_training(lab, grading, momentum):
    x, y = grading["learn"]["x_train"][:600], grading["learn"]["y_train"][:600]  # batches of 128 and a last of 88
    params = {k: v.detach() for k, v in probes.trusted_params(12).items()}
    case = dict(params=params, x=x, y=y, batch_size=128, lr=0.05, epochs=3, momentum=momentum)
    got = lab.call("train", **case)
    want = lab.expect("train", **case)
    n = len(want["losses"])
    assert len(got["losses"]) == n and len(got["accuracies"]) == n, (
        f"train_sgd returned {len(got['losses'])} losses and {len(got['accuracies'])} accuracies for "
        f"3 epochs of 5 batches; expected one per mini-batch ({n})")
    for t, (g, w) in enumerate(zip(got["losses"], want["losses"])):
        assert close(g, w, "sgd.train_losses"), (
            f"batch loss {t + 1} is {g:.5f}, expected {w:.5f} (same init and batches, lr 0.05, momentum {momentum})"
            + (": the first batch's loss is right, so the updates differ (zeroing grads? the step rule?)"
               if t > 0 and close(got["losses"][0], want["losses"][0], "sgd.train_losses") else ""))
    for t, (g, w) in enumerate(zip(got["accuracies"], want["accuracies"])):
        assert close(g, w, "sgd.train_accuracy"), (
            f"batch accuracy {t + 1} is {g:.4f}, expected {w:.4f}: a fraction of the batch's own size "
            "(the last batch has 88 samples)")
    for key in probes.KEYS:
        assert close(got["params"][key], want["params"][key], "sgd.train_params"), (
            f"after training, param_dict[{key!r}] differs from the reference by "
            f"{max_diff(got['params'][key], want['params'][key]):.3g} (trained in place?)")


@pytest.mark.public
@pytest.mark.graded(points=2)
def test_train_sgd_trajectory(lab, grading):
    check_training(lab, grading, momentum=0.0)


@pytest.mark.graded(points=2)
def test_train_sgd_momentum_trajectory(lab, grading):
    check_training(lab, grading, momentum=MU)


def same_training(a: dict, b: dict) -> bool:
    return (len(a["losses"]) == len(b["losses"]) and close(a["losses"], b["losses"], "sgd.train_losses")
            and all(close(a["params"][k], b["params"][k], "sgd.train_params") for k in probes.KEYS))


@pytest.mark.graded(points=1)
def test_train_sgd_defaults(lab, grading):
    """Each default of train_sgd is the contract's: with one setting left out it trains exactly as with the
    contract's value passed (lr=0.01, epochs=20, momentum=0.0; 3 batches of 32, so 60 steps a run)."""
    x, y = grading["learn"]["x_train"][:96], grading["learn"]["y_train"][:96]
    params = {k: v.detach() for k, v in probes.trusted_params(14).items()}
    got = lab.call("train_defaults", params=params, x=x, y=y, batch_size=32, settings=TRAIN_DEFAULTS)
    explicit = got["explicit"]
    wrong = []
    for name, run in got["omitted"].items():
        if not same_training(run, explicit):
            n, want = len(run["losses"]), len(explicit["losses"])
            wrong.append(f"{name}={TRAIN_DEFAULTS[name]!r}" + (f" ({n} batch losses, not {want})" if n != want else ""))
    assert not wrong, (f"train_sgd trains differently when a setting is left to its default than with the contract's "
                       f"default passed: {', '.join(wrong)}. Is the signature train_sgd(param_dict, loader, lr=0.01, "
                       "epochs=20, momentum=0.0)?")


@pytest.mark.graded(points=2)
def test_train_sgd_learns(lab, grading):
    try:
        loss, acc = lab.call("learns", seed=13, **grading["learn"])
    except SubmissionFailure as e:
        if "NoneType" not in str(e):
            raise
        pytest.fail(f"initialize_nn + train_sgd stopped: a parameter had no gradient (.grad is None) when it was "
                    f"updated. Does initialize_nn leave some tensors (the biases?) without requires_grad? "
                    f"See test_initialize_nn_structure.\n{e}")
    budget = {k: probes.LEARN[k] for k in ("epochs", "lr", "momentum", "batch_size")}
    try:
        bands.check_band("sgd.contract.learn_acc", acc, grading["ds"].source)
        bands.check_band("sgd.contract.learn_loss", loss, grading["ds"].source)
    except bands.BandError as e:
        hint = (" A test loss this high with a fair accuracy means huge, overconfident logits: check the init "
                "scale (std 1/sqrt(fan_in), zero biases)." if loss > 1.5 and acc > 0.5 else "")
        pytest.fail(f"initialize_nn + train_sgd on 2,000 digits ({budget}) reach test accuracy {acc:.4f} "
                    f"and test loss {loss:.4g}.{hint} {e}")
