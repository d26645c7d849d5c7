"""Graded contract tests for `sgd` (lab 3: SGD from scratch on MNIST; CONTRACTS.md `sgd`).

Every test runs a probe of exercises/sgd/probes.py on the submission (`lab.call`) and, where there is an
expected value, on the reference (`lab.expect`) with small budgets, and judges here, naming the
likely mistake when it can. The reference's updates equal torch.optim.SGD bit for bit
(tests/test_sgd.py); a student's `p -= lr * g` matches to float rounding (tolerance "sgd.step").
Init checks are exact statistical tests at a stated false-failure probability ("sgd.init_stats").
Band checks use the grading data (the mnist-5k digits) and its bands. The seed gives no points;
they are weighted by importance (26 in all).

Every input is drawn from the run's secret (`lab.seed`, `lab.rng`, `draws`: labcheck.secret): seeds, data
subsets, batch sizes, learning rates, momentum, and the class labels' names for the learning test (a
relabelling changes nothing of the problem's difficulty), so answers recorded on one run answer nothing
on the next. Every verdict comes from values the grader checks against a replay: whether a tensor requires
grad shows in whether a training step moves it, whether sgd_step zeroes the gradients in what the next
backward does, never in a flag the worker reports.
"""
import math

import pytest
import torch

from labcheck import bands, data
from labcheck.exercises import get
probes = get("sgd").probes_module()

pytestmark = pytest.mark.exercise("sgd")

ALPHA = bands.TOLERANCES["sgd.init_stats"]["false_failure"]


def learning_rates(lab, label: str, n: int = 5) -> list[float]:
    """n different learning rates in [0.01, 0.1] drawn for this run (a changing lr: momentum's lr placement
    only matters then)."""
    rng, lrs = lab.rng(label, "learning rates"), []
    while len(lrs) < n:
        lr = round(rng.uniform(0.01, 0.1), 4)
        if lr not in lrs:
            lrs.append(lr)
    return lrs


def momentum(lab, label: str) -> float:
    return round(lab.rng(label, "momentum").uniform(0.8, 0.95), 3)


close = bands.close  # (got, want, "sgd.<tolerance>")


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
def trained(grading, draws):
    """Parameters after 3 epochs of the reference recipe from a drawn seed (so evaluate sees a useful network)."""
    from labcheck import core

    module = get("sgd").load_reference()
    inputs, seed = grading["learn"], draws.seed("trained parameters")
    params = module.initialize_nn({}, generator=torch.Generator().manual_seed(seed))
    loader = core.ResidentLoader(inputs["x_train"], inputs["y_train"], batch_size=128, seed=seed)
    module.train_sgd(params, loader, lr=0.01, epochs=3, momentum=0.9)
    return {k: v.detach().clone() for k, v in params.items()}


def banded_seed(lab, label: str, probe: str, keys: tuple[str, str], source: str, **kwargs) -> int:
    """A seed drawn for this run at which the reference's own (loss, accuracy) lie inside the bands `keys`: a
    submission that draws as the reference does then passes for sure, one that draws otherwise with the bands'
    own false-failure probability (as with any fixed seed). The reference's answer is computed anyway (the
    call's deadline comes from it)."""
    for attempt in range(5):
        seed = lab.seed(label, attempt)
        values = lab.expect(probe, seed=seed, **kwargs)
        if all(bands.get_band(key, source).contains(value) for key, value in zip(keys, values)):
            break
    return seed


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
    lr = round(lab.rng("initialize_nn structure").uniform(0.05, 0.2), 3)
    got = lab.call("init_params", seed=lab.seed("initialize_nn structure"), lr=lr)
    tensors, problems = got["tensors"], []
    if all(k in tensors and torch.equal(tensors[k], got["prefilled"][k]) for k in probes.KEYS):
        pytest.fail("initialize_nn left the param_dict it was given as it was: fill that very dict (param_dict[key] "
                    "= ... or in place); returning a new one is not enough, the course's cells ignore the return value")
    missing = [k for k in probes.KEYS if k not in tensors]
    if missing:
        problems.append(f"param_dict lacks tensors {missing} after initialize_nn")
    for key in [k for k in probes.KEYS if k in tensors]:
        value = tensors[key]
        if tuple(value.shape) != probes.SHAPES[key]:
            problems.append(f"{key} has shape {tuple(value.shape)}, expected {probes.SHAPES[key]} (x @ W + b, "
                            "hidden size 100)")
        if value.dtype != torch.float32:
            problems.append(f"{key} is {value.dtype}, expected torch.float32")
        if key.startswith("b") and tuple(value.shape) == probes.SHAPES[key]:
            biggest = value.abs().max().item()
            if biggest != 0:
                problems.append(f"{key} is not zero (max |b| = {biggest:.3g}): biases start at 0")
    # Requiring grad, as a leaf, shows in what a training step does: backward, then p -= lr * p.grad.
    if got["step_error"] is not None and not problems:
        problems.append(f"one training step on param_dict (backward of the loss, p -= lr * p.grad) failed: "
                        f"{got['step_error']}. Every tensor must be a float32 leaf tensor that requires grad")
    elif got["after_step"] is not None and got["expected_after_step"] is not None:
        frozen = []
        for key in probes.KEYS:
            after, want = got["after_step"][key], got["expected_after_step"][key]
            if close(after, want, "sgd.step"):
                continue
            if torch.equal(after, tensors[key]):
                frozen.append(key)
            else:
                problems.append(f"{key} moves by up to {max_diff(after, want):.3g} away from where one training "
                                "step takes a leaf tensor that requires grad")
        if frozen:
            hint = (" torch.zeros_like(param) makes a new tensor that does not require grad: set requires_grad for "
                    "the biases too." if any(key.startswith("b") for key in frozen) else "")
            problems.append(f"{', '.join(frozen)} do not change in a training step (backward, then p -= lr * p.grad), "
                            "so they would never be trained: they do not require grad, or they are not leaf tensors "
                            "(computed from another tensor after requires_grad, so .grad stays None; create the "
                            f"tensor, then call requires_grad_()).{hint}")
    assert not problems, "; ".join(problems)


@pytest.mark.graded(points=2)
def test_initialize_nn_std(lab):
    got = lab.call("init_params", seed=lab.seed("initialize_nn std"), lr=0.1)
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
    got = lab.call("init_params", seed=lab.seed("initialize_nn gaussian"), lr=0.1)
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
    source = grading["ds"].source
    case = dict(x=grading["x_test"], y=grading["y_test"])
    seed = banded_seed(lab, "initial loss", "init_eval", ("sgd.contract.init_loss", "sgd.contract.init_acc"), source,
                       **case)
    loss, acc = lab.call("init_eval", seed=seed, **case)
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
    case = dict(seed=lab.seed("my_nn shapes"), batch=lab.rng("my_nn shapes").randint(9, 40))
    got = lab.call("forward", **case)
    want = lab.expect("forward", **case)
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
    case = dict(seed=lab.seed("my_nn gradients"), batch=lab.rng("my_nn gradients").randint(5, 20))
    got = lab.call("forward", **case)
    want = lab.expect("forward", **case)
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
    lrs = learning_rates(lab, "sgd_step trajectory")
    case = dict(seed=lab.seed("sgd_step trajectory"), lrs=lrs)
    got = lab.call("sgd_steps", **case)
    want = lab.expect("sgd_steps", **case)
    miss = first_mismatch(got["params"], want["params"], "sgd.step")
    if miss is not None:
        t, j, diff = miss
        hint = ("the update rule itself: p -= lr * p.grad, in place on the caller's tensors" if t == 0 else
                "the first step is right but later ones are not: gradients accumulate because they are "
                "not zeroed after the step?")
        pytest.fail(f"after step {t + 1} of sgd_step (lrs {lrs}) {probes.KEYS[j]} differs from torch.optim.SGD "
                    f"by {diff:.3g}: check {hint}")


@pytest.mark.public
@pytest.mark.graded(points=1)
def test_sgd_step_zeroes_grads(lab):
    rng = lab.rng("sgd_step zeroes grads")
    case = dict(seed=lab.seed("sgd_step zeroes grads"), lr=round(rng.uniform(0.01, 0.1), 4),
                next_lr=round(rng.uniform(0.01, 0.1), 4))
    got = lab.call("sgd_then_step", **case)
    after = got["params"][1]
    wrong = [j for j, (a, w) in enumerate(zip(after, got["zeroed"])) if not close(a, w, "sgd.step")]
    if not wrong:
        return
    stale = [probes.KEYS[j] for j in wrong if close(after[j], got["accumulated"][j], "sgd.step")]
    if stale:
        pytest.fail(f"after sgd_step, the next backward adds to the old gradients of {', '.join(stale)}: the next "
                    "step moved them by lr * (old + new gradient). Zero them in sgd_step (p.grad.zero_() or "
                    "p.grad = None)")
    names = ", ".join(probes.KEYS[j] for j in wrong)
    pytest.fail(f"the step after sgd_step (backward, p -= lr * p.grad) moves {names} away from where a fresh "
                f"gradient takes them (by up to {max(max_diff(after[j], got['zeroed'][j]) for j in wrong):.3g}): "
                "does sgd_step leave the caller's tensors updated in place, still leaves that require grad?")


def named_mistake(got_steps, mistakes: dict, key: str) -> str | None:
    """The classic mistake whose replay (probes.replay_momentum) the submission's steps follow, if one does."""
    for name, steps in mistakes.items():
        if first_mismatch(got_steps, steps, key) is None:
            return name
    return None


@pytest.mark.graded(points=3)
def test_momentum_step_trajectory(lab):
    lrs, mu = learning_rates(lab, "momentum trajectory"), momentum(lab, "momentum trajectory")
    case = dict(seed=lab.seed("momentum trajectory"), lrs=lrs, mu=mu)
    got = lab.call("momentum_steps", **case)
    want = lab.expect("momentum_steps", **case)
    miss = first_mismatch(got["params"], want["params"], "sgd.step")
    if miss is not None:
        t, j, diff = miss
        mistake = named_mistake(got["params"], {k: v[0] for k, v in got["mistakes"].items()}, "sgd.step")
        if mistake == "gradients never zeroed":
            hint = "gradients are not zeroed after the step, so they accumulate"
        elif mistake == "lr inside the velocity" or t > 1:
            hint = ("the parameters are right while lr is constant and wrong once it changes: lr inside the "
                    "velocity (v = mu v + lr g, p -= v)? The contract and torch use v = mu v + g, p -= lr v")
        else:
            hint = "the rule v = mu * v + g, p -= lr * v (velocities updated in place, starting from zero)"
        pytest.fail(f"after step {t + 1} of sgd_momentum_step (lrs {lrs}, mu {mu}) {probes.KEYS[j]} differs from "
                    f"torch.optim.SGD(momentum={mu}) by {diff:.3g}: check {hint}")


@pytest.mark.graded(points=1)
def test_momentum_velocities(lab):
    lrs, mu = learning_rates(lab, "momentum velocities", 3), momentum(lab, "momentum velocities")
    case = dict(seed=lab.seed("momentum velocities"), lrs=lrs, mu=mu)
    got = lab.call("momentum_steps", **case)
    want = lab.expect("momentum_steps", **case)
    for t, (vs, ws) in enumerate(zip(got["velocities"], want["velocities"])):
        for key, v, w in zip(probes.KEYS, vs, ws):
            if close(v, w, "sgd.velocity"):
                continue
            ratio = (v.double().norm() / w.double().norm()).item()
            hint = ""
            if abs(ratio - lrs[0]) < 0.01 * lrs[0]:
                hint = f" The velocity is lr = {lrs[0]} times too small: v = mu * v + lr * g?"
            elif abs(ratio) < 1e-12:
                hint = " The velocities list was not updated in place (still zeros)."
            elif named_mistake(got["velocities"], {k: m[1] for k, m in got["mistakes"].items()},
                               "sgd.velocity") == "gradients never zeroed":
                hint = " Gradients are not zeroed after the step, so v adds up accumulated gradients."
            pytest.fail(f"after step {t + 1}, the velocity of {key} differs from v = mu * v + g by "
                        f"{max_diff(v, w):.3g} (norm ratio {ratio:.3g}).{hint}")


# ---------------------------------------------------------------------------------------------
# evaluate and train_sgd


@pytest.mark.graded(points=2)
def test_evaluate_every_sample(lab, grading, trained):
    # k digits per class, grouped by class, in batches that leave a smaller last batch of the last classes only
    rng = lab.rng("evaluate every sample")
    per_class = rng.randint(40, 80)
    n = 10 * per_class
    batch_size = rng.randint(n // 3, n // 2)
    while not 0.2 * batch_size <= n % batch_size <= 0.6 * batch_size:
        batch_size -= 1
    subset = data.random_per_class(grading["ds"].test, per_class, lab.seed("evaluate every sample"))
    x, y = probes.as_inputs(subset)
    case = dict(params=trained, x=x, y=y, batch_size=batch_size)
    loss, acc = lab.call("evaluate_loader", **case)
    want_loss, want_acc = lab.expect("evaluate_loader", **case)
    problems = []
    if not 0.0 <= acc <= 1.0:
        problems.append(f"accuracy {acc:.4g} is not a fraction in [0, 1] (percent?)")
    elif not close(acc, want_acc, "sgd.evaluate"):
        hint = ""
        batches = math.ceil(n / batch_size)
        if abs(acc - want_acc * n / (batches * batch_size)) < 1e-3:
            hint = (f": correct counts divided by the nominal batch size ({batch_size}), so the last batch of "
                    f"{n % batch_size} counts as {batch_size}")
        problems.append(f"accuracy {acc:.4f}, expected {want_acc:.4f} over all {n} samples{hint}")
    if not close(loss, want_loss, "sgd.evaluate"):
        problems.append(f"mean loss {loss:.4f}, expected {want_loss:.4f}: average over samples (sum of "
                        "per-sample losses / N), not the mean of per-batch means (the last batch is smaller)")
    assert not problems, "; ".join(problems)


@pytest.mark.graded(points=1)
def test_evaluate_huge_logits(lab, grading, trained):
    huge = dict(trained)
    huge["W2"], huge["b2"] = trained["W2"] * 1e4, trained["b2"] * 1e4  # logits ~1e4: exp overflows float32
    # two answers, so no constant passes; whole batches only (uneven batches are test_evaluate_every_sample's)
    rng = lab.rng("evaluate huge logits")
    order = torch.randperm(len(grading["y_test"]), generator=torch.Generator().manual_seed(lab.seed("huge logits")))
    sizes = [rng.randint(100, 250), rng.randint(100, 200)]
    start = 0
    for batch_size in sizes:
        rows = order[start : start + 2 * batch_size]  # two whole batches
        start += 2 * batch_size
        case = dict(params=huge, x=grading["x_test"][rows], y=grading["y_test"][rows], batch_size=batch_size)
        loss, acc = lab.call("evaluate_loader", **case)
        want_loss, _ = lab.expect("evaluate_loader", **case)
        assert math.isfinite(loss), (
            f"evaluate's loss is {loss} for logits of size ~1e4: softmax then log overflows; use "
            "F.cross_entropy on the logits (log-softmax is computed stably)")
        assert close(loss, want_loss, "sgd.evaluate"), f"loss {loss:.6g} for huge logits, expected {want_loss:.6g}"


def check_training(lab, grading, label: str, with_momentum: bool):
    # 5 batches of 128 and a last one of 88..127 digits (one flipped prediction stays inside its tolerance)
    rng = lab.rng(label)
    n = 4 * 128 + rng.randint(88, 127)
    train = grading["ds"].train
    rows = torch.randperm(len(train), generator=torch.Generator().manual_seed(lab.seed(label, "rows")))[:n]
    x, y = probes.as_inputs(train.subset(rows))
    params = {k: v.detach() for k, v in probes.trusted_params(lab.seed(label, "parameters")).items()}
    lr, mu = round(rng.uniform(0.02, 0.08), 4), momentum(lab, label) if with_momentum else 0.0
    case = dict(params=params, x=x, y=y, batch_size=128, lr=lr, epochs=3, momentum=mu)
    got = lab.call("train", **case)
    want = lab.expect("train", **case)
    n_batches = len(want["losses"])
    assert len(got["losses"]) == n_batches and len(got["accuracies"]) == n_batches, (
        f"train_sgd returned {len(got['losses'])} losses and {len(got['accuracies'])} accuracies for "
        f"3 epochs of {n_batches // 3} batches; expected one per mini-batch ({n_batches})")
    for t, (g, w) in enumerate(zip(got["losses"], want["losses"])):
        assert close(g, w, "sgd.train_losses"), (
            f"batch loss {t + 1} is {g:.5f}, expected {w:.5f} (same init and batches, lr {lr}, momentum {mu})"
            + (": the first batch's loss is right, so the updates differ (zeroing grads? the step rule?)"
               if t > 0 and close(got["losses"][0], want["losses"][0], "sgd.train_losses") else ""))
    for t, (g, w) in enumerate(zip(got["accuracies"], want["accuracies"])):
        assert close(g, w, "sgd.train_accuracy"), (
            f"batch accuracy {t + 1} is {g:.4f}, expected {w:.4f}: a fraction of the batch's own size "
            f"(the last batch has {n - 4 * 128} samples)")
    for key in probes.KEYS:
        assert close(got["params"][key], want["params"][key], "sgd.train_params"), (
            f"after training, param_dict[{key!r}] differs from the reference by "
            f"{max_diff(got['params'][key], want['params'][key]):.3g} (trained in place?)")


@pytest.mark.public
@pytest.mark.graded(points=2)
def test_train_sgd_trajectory(lab, grading):
    check_training(lab, grading, "train_sgd trajectory", with_momentum=False)


@pytest.mark.graded(points=2)
def test_train_sgd_momentum_trajectory(lab, grading):
    check_training(lab, grading, "train_sgd momentum trajectory", with_momentum=True)


@pytest.mark.graded(points=2)
def test_train_sgd_learns(lab, grading):
    # The classes get other names in every run (a relabelling of the digits): the same problem, as hard, with
    # the same bands; but parameters trained on other labels, or on another run's, score like chance.
    names = torch.randperm(10, generator=torch.Generator().manual_seed(lab.seed("learns", "class names")))
    learn = {**grading["learn"], "y_train": names[grading["learn"]["y_train"]],
             "y_test": names[grading["learn"]["y_test"]]}
    seed = banded_seed(lab, "learns", "learns", ("sgd.contract.learn_loss", "sgd.contract.learn_acc"),
                       grading["ds"].source, **learn)
    loss, acc = lab.call("learns", seed=seed, **learn)
    budget = {k: probes.LEARN[k] for k in ("epochs", "lr", "momentum", "batch_size")}
    try:
        bands.check_band("sgd.contract.learn_acc", acc, grading["ds"].source)
        bands.check_band("sgd.contract.learn_loss", loss, grading["ds"].source)
    except bands.BandError as e:
        hint = (" A test loss this high with a fair accuracy means huge, overconfident logits: check the init "
                "scale (std 1/sqrt(fan_in), zero biases)." if loss > 1.5 and acc > 0.5 else "")
        pytest.fail(f"initialize_nn + train_sgd on 2,000 digits ({budget}) reach test accuracy {acc:.4f} "
                    f"and test loss {loss:.4g}.{hint} {e}")
