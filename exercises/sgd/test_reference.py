"""Tests of exercises/sgd/reference.py (lab 3: SGD from scratch): properties, the --dry-run, and band regressions.

Exact vs rounding, and why:
  - `sgd_step`, `sgd_momentum_step` and `sgd_update` apply torch's `_single_tensor_sgd` operations in
    the same order (`p.add_(d, alpha=-lr)` is one fused multiply-add, `buf.mul_(mu).add_(g)`), so
    they equal torch.optim.SGD bit for bit: checked with torch.equal over several steps.
  - A textbook `p -= lr * g` rounds twice (lr*g, then the subtraction) where torch rounds once, so it
    matches only to float rounding: checked against an explicit bound of 2 float32 epsilons of the
    magnitudes involved per step. That is why graded tests compare students with tolerance "sgd.step".
Init statistics use exact bounds (chi-square interval, normal bound on the mean, DKW) at the
false-failure probability "sgd.init_stats" of exercises/sgd/bands.json, per check.
"""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as nps
from torch.utils.data import DataLoader, TensorDataset

from labcheck import bands
from labcheck.exercises import get
probes = get("sgd").probes_module()
from strategies import LEARNING_RATES, MOMENTA, SEEDS

ALPHA = bands.TOLERANCES["sgd.init_stats"]["false_failure"]
EPS32 = float(torch.finfo(torch.float32).eps)

# Strategies (module constants, bounded elements).
# (No "width" key: from_dtype takes it from the float32 dtype and rejects it; tests/strategies.py's
# FINITE_F32 and HUGE_LOGITS still carry it, so they are defined here.)
ELEMENTS = {"min_value": -10.0, "max_value": 10.0, "allow_nan": False, "allow_infinity": False}
HUGE_LOGITS = nps.arrays(np.float32, st.tuples(st.integers(1, 8), st.integers(2, 10)),
                         elements={"min_value": -1e4, "max_value": 1e4, "allow_nan": False}).map(torch.from_numpy)
SHAPES = st.lists(nps.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=7), min_size=1, max_size=3)
STEPS = st.integers(min_value=1, max_value=4)
FANS = st.integers(min_value=1, max_value=60)
DAMPENINGS = st.floats(min_value=0.0, max_value=0.9, allow_nan=False)
WEIGHT_DECAYS = st.sampled_from([0.0, 1e-4, 0.01, 0.5])
BATCHES = st.integers(min_value=1, max_value=16)


@pytest.fixture(scope="module")
def ref():
    return get("sgd").load_reference()


def problem(data, shapes, steps):
    """Parameters and `steps` gradients per parameter, as float32 tensors with bounded elements."""
    params = [data.draw(nps.arrays(np.float32, s, elements=ELEMENTS)) for s in shapes]
    grads = [[data.draw(nps.arrays(np.float32, s, elements=ELEMENTS)) for s in shapes] for _ in range(steps)]
    return [torch.from_numpy(p) for p in params], [[torch.from_numpy(g) for g in gs] for gs in grads]


def leaves(params):
    return [p.clone().requires_grad_() for p in params]


def run_torch(params, grads, lrs, **hyper):
    ps = leaves(params)
    opt = torch.optim.SGD(ps, lr=lrs[0], **hyper)
    out = []
    for gs, lr in zip(grads, lrs):
        opt.param_groups[0]["lr"] = lr
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step()
        out.append([p.detach().clone() for p in ps])
    return out


# ---------------------------------------------------------------------------------------------
# Updates vs torch.optim.SGD


@given(data=st.data(), shapes=SHAPES, steps=STEPS, lr=LEARNING_RATES)
def test_sgd_step_equals_torch_exactly(ref, data, shapes, steps, lr):
    params, grads = problem(data, shapes, steps)
    want = run_torch(params, grads, [lr] * steps)
    ps = leaves(params)
    for t, gs in enumerate(grads):
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        ref.sgd_step(ps, lr)
        assert all(torch.equal(p.detach(), w) for p, w in zip(ps, want[t]))
        assert all(p.grad is None or not p.grad.any() for p in ps)


@given(data=st.data(), shapes=SHAPES, steps=STEPS, lr=LEARNING_RATES, mu=MOMENTA)
def test_momentum_step_equals_torch_exactly(ref, data, shapes, steps, lr, mu):
    params, grads = problem(data, shapes, steps)
    lrs = [lr * (0.5 ** (t % 2)) for t in range(steps)]  # a changing lr too
    want = run_torch(params, grads, lrs, momentum=mu)
    ps = leaves(params)
    velocities = [torch.zeros_like(p) for p in params]
    for t, (gs, step_lr) in enumerate(zip(grads, lrs)):
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        ref.sgd_momentum_step(ps, velocities, step_lr, mu)
        assert all(torch.equal(p.detach(), w) for p, w in zip(ps, want[t]))


@given(data=st.data(), shapes=SHAPES, steps=STEPS, lr=LEARNING_RATES, mu=MOMENTA, dampening=DAMPENINGS,
       weight_decay=WEIGHT_DECAYS, nesterov=st.booleans())
def test_sgd_update_equals_torch_exactly(ref, data, shapes, steps, lr, mu, dampening, weight_decay, nesterov):
    if nesterov:  # torch: "Nesterov momentum requires a momentum and zero dampening"
        mu, dampening = max(mu, 0.1), 0.0
    hyper = dict(momentum=mu, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
    params, grads = problem(data, shapes, steps)
    want = run_torch(params, grads, [lr] * steps, **hyper)
    ps, state = leaves(params), {}
    for t, gs in enumerate(grads):
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        ref.sgd_update(ps, state, lr, **hyper)
        assert all(torch.equal(p.detach(), w) for p, w in zip(ps, want[t]))


@given(data=st.data(), shapes=SHAPES, steps=STEPS, lr=LEARNING_RATES)
def test_textbook_update_matches_torch_to_rounding(data, shapes, steps, lr):
    params, grads = problem(data, shapes, steps)
    want = run_torch(params, grads, [lr] * steps)
    ps = [p.clone() for p in params]
    bound = [torch.zeros_like(p) for p in params]
    for t, gs in enumerate(grads):
        for p, g, b in zip(ps, gs, bound):
            b += 2 * EPS32 * (p.abs() + lr * g.abs())  # two roundings of this step's magnitudes
            p -= lr * g
        for p, w, b in zip(ps, want[t], bound):
            assert ((p - w).abs() <= b + 1e-30).all()


@given(data=st.data(), shapes=SHAPES, lr=LEARNING_RATES, mu=MOMENTA)
def test_lr_inside_velocity_agrees_at_constant_lr(data, shapes, lr, mu):
    """v = mu v + lr g, p -= v equals v = mu v + g, p -= lr v (to rounding) when lr never changes."""
    steps = 4
    params, grads = problem(data, shapes, steps)
    want = run_torch(params, grads, [lr] * steps, momentum=mu)
    ps, vs = [p.clone() for p in params], [torch.zeros_like(p) for p in params]
    scale = max(p.abs().max().item() for p in params) + steps * lr * 10.0 / (1 - mu)
    for gs in grads:
        for p, v, g in zip(ps, vs, gs):
            v.mul_(mu).add_(lr * g)
            p -= v
    for p, w in zip(ps, want[-1]):
        assert (p - w).abs().max().item() <= 16 * steps * EPS32 * scale


def test_lr_inside_velocity_differs_when_lr_changes():
    p0, g = torch.ones(3), torch.tensor([1.0, -2.0, 0.5])
    lrs, mu = [0.1, 0.01], 0.9
    want = run_torch([p0], [[g], [g]], lrs, momentum=mu)[-1][0]
    p, v = p0.clone(), torch.zeros(3)
    for lr in lrs:
        v = mu * v + lr * g
        p = p - v
    # torch: p2 = p1 - lr2 (mu g + g); lr inside: p2 = p1 - (mu lr1 g + lr2 g): they differ by mu g (lr1 - lr2).
    torch.testing.assert_close(p - want, -mu * g * (lrs[0] - lrs[1]))


# ---------------------------------------------------------------------------------------------
# initialize_nn and the exact statistical bounds


def test_chi2_quantile_known_values():
    # Tabulated chi-square quantiles (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.4).
    assert probes.chi2_quantile(0.95, 1) == pytest.approx(3.841459, rel=1e-6)
    assert probes.chi2_quantile(0.05, 10) == pytest.approx(3.940299, rel=1e-6)
    assert probes.chi2_quantile(0.99, 100) == pytest.approx(135.807, rel=1e-5)


@given(seed=SEEDS, fans=st.lists(FANS, min_size=2, max_size=4))
def test_initialize_nn_statistics(ref, seed, fans):
    sizes = tuple(fans)
    param_dict = {}
    out = ref.initialize_nn(param_dict, sizes=sizes, generator=torch.Generator().manual_seed(seed))
    assert out is param_dict
    assert sorted(param_dict) == sorted([f"W{j}" for j in range(len(sizes) - 1)] + [f"b{j}" for j in range(len(sizes) - 1)])
    for j, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w, b = param_dict[f"W{j}"], param_dict[f"b{j}"]
        assert w.shape == (d_in, d_out) and b.shape == (d_out,)
        assert w.requires_grad and b.requires_grad and w.is_leaf and b.is_leaf
        assert not b.any()
        n, sigma = w.numel(), 1 / math.sqrt(d_in)
        lo, hi = probes.std_interval(n, sigma, ALPHA)
        assert lo <= w.double().pow(2).mean().sqrt().item() <= hi
        assert abs(w.double().mean().item()) <= probes.mean_bound(n, sigma, ALPHA)
        assert probes.ks_distance_to_normal(w.double() / sigma) <= probes.dkw_epsilon(n, ALPHA)


def test_initialize_nn_reinitializes_existing_tensors(ref):
    param_dict = {k: torch.rand(s) * 2 - 1 for k, s in probes.SHAPES.items()}  # the seed's uniform start
    ref.initialize_nn(param_dict)
    assert {k: tuple(v.shape) for k, v in param_dict.items()} == probes.SHAPES
    assert all(v.requires_grad and v.is_leaf for v in param_dict.values())


def test_init_checks_reject_the_classic_wrong_inits():
    """The bounds have power: each wrong init of W0 (784 x 100) is rejected."""
    g = torch.Generator().manual_seed(0)
    n, sigma = 784 * 100, 1 / math.sqrt(784)
    lo, hi = probes.std_interval(n, sigma, ALPHA)
    for wrong in (torch.rand(784, 100, generator=g) * 2 - 1,  # the seed's uniform(-1, 1)
                  torch.randn(784, 100, generator=g) / math.sqrt(100),  # fan_out
                  torch.randn(784, 100, generator=g) / 784):  # 1/fan_in as the std
        assert not lo <= wrong.pow(2).mean().sqrt().item() <= hi
    matched_uniform = (torch.rand(784, 100, generator=g) * 2 - 1) * math.sqrt(3) * sigma  # right variance
    assert lo <= matched_uniform.pow(2).mean().sqrt().item() <= hi
    assert probes.ks_distance_to_normal(matched_uniform / sigma) > probes.dkw_epsilon(n, ALPHA)


# ---------------------------------------------------------------------------------------------
# my_nn, cross-entropy, evaluate


@given(seed=SEEDS, batch=BATCHES)
def test_my_nn_accepts_three_input_shapes(ref, seed, batch):
    params = probes.trusted_params(seed % 1000)
    x, _ = probes.random_batch(seed, batch)
    with torch.no_grad():
        outs = [ref.my_nn(x.reshape(shape), params) for shape in ((batch, 784), (batch, 28, 28), (batch, 1, 28, 28))]
        want = F.linear(F.relu(F.linear(F.relu(F.linear(x, params["W0"].T, params["b0"])), params["W1"].T,
                                        params["b1"])), params["W2"].T, params["b2"])  # (B, 10)
    assert outs[0].shape == (batch, 10)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    torch.testing.assert_close(outs[0], want, **bands.tolerance("sgd.my_nn"))


@given(logits=HUGE_LOGITS, data=st.data())
def test_cross_entropy_on_logits_is_finite_and_is_log_softmax_nll(logits, data):
    n, k = logits.shape
    y = torch.tensor(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    loss = F.cross_entropy(logits, y)
    assert torch.isfinite(loss)
    assert torch.equal(loss, F.nll_loss(F.log_softmax(logits, dim=1), y))
    z = logits.double()
    exact = (torch.logsumexp(z, dim=1) - z[torch.arange(n), y]).mean()
    torch.testing.assert_close(loss.double(), exact, rtol=1e-6, atol=1e-3)


@given(seed=SEEDS, n=st.integers(min_value=1, max_value=300), batch_size=st.integers(min_value=1, max_value=300))
def test_evaluate_covers_every_sample(ref, seed, n, batch_size):
    params = probes.trusted_params(seed % 1000)
    x, y = probes.random_batch(seed, n)
    loss, acc = ref.evaluate(params, DataLoader(TensorDataset(x, y), batch_size=batch_size))
    with torch.no_grad():
        logits = probes.trusted_forward(x, params)  # (n, 10)
    assert acc == (logits.argmax(dim=1) == y).sum().item() / n
    assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)


def test_evaluate_is_finite_for_huge_logits(ref):
    params = probes.trusted_params(0)
    params["W2"] = (params["W2"] * 1e5).detach().requires_grad_()
    x, y = probes.random_batch(0, 100)
    loss, _ = ref.evaluate(params, [(x[:60], y[:60]), (x[60:], y[60:])])
    assert math.isfinite(loss) and loss > 100


# ---------------------------------------------------------------------------------------------
# Training


def test_train_sgd_equals_torch_optim_exactly(ref):
    from labcheck import core

    x, y = probes.random_batch(1, 300)
    for momentum in (0.0, 0.9):
        results = []
        for trainer in (ref.train_sgd, ref.train_torch_sgd):
            params = {k: v.detach().clone().requires_grad_() for k, v in probes.trusted_params(2).items()}
            loader = core.ResidentLoader(x, y, batch_size=64, seed=3)
            losses, accs = trainer(params, loader, lr=0.05, epochs=2, momentum=momentum)
            results.append((losses, accs, params))
        (l1, a1, p1), (l2, a2, p2) = results
        assert len(l1) == 2 * 5 and l1 == l2 and a1 == a2
        assert all(torch.equal(p1[k], p2[k]) for k in p1)


def parse(ref, *flags):
    return ref.get_args_parser().parse_args(list(flags))


def test_cli_flags_map_to_config(ref):
    args = parse(ref)
    fields = {f.name for f in dataclasses.fields(ref.Config)}
    assert fields == set(vars(args))
    for action in ref.get_args_parser()._actions:
        if action.dest != "help":
            assert action.help.endswith(")") and "(default: " in action.help


def test_dry_run(ref, tmp_path):
    report = ref.main(parse(ref, "--dry-run", "--device", "cpu", "--out", str(tmp_path)))
    for name in ("sgd_curves.png", "momentum_curves.png", "log.csv", "answers.json"):
        assert (tmp_path / name).stat().st_size > 0
    answers = json.loads((tmp_path / "answers.json").read_text())
    assert set(answers["final_test_acc"]) == set(ref.RUNS) and answers["epochs"] == ref.DRY_RUN["epochs"]
    assert answers["custom_vs_torch"]["sgd"]["max_abs_param_difference"] == 0.0
    assert report["data_source"] == answers["source"] and report["config"]["dry_run"] is True
    metrics = ref.band_metrics(report)
    assert metrics["custom_vs_torch.momentum.max_abs_param_difference"] == 0.0 and "init.test_loss" in metrics


def run_budget(ref, tmp_path, flags):
    torch.set_num_threads(1)
    report = ref.main(parse(ref, *flags, "--device", "cpu", "--out", str(tmp_path)))
    assert report["custom_vs_torch"]["sgd"]["max_abs_loss_difference"] == 0.0
    assert report["custom_vs_torch"]["momentum"]["max_abs_loss_difference"] == 0.0
    return report


def test_quick_budget_bands(ref, tmp_path, check_bands, mnist_source):
    check_bands("sgd", "quick", mnist_source, lambda flags: run_budget(ref, tmp_path, flags))


@pytest.mark.slow
def test_full_budget_bands(ref, tmp_path, check_bands, mnist_source):
    check_bands("sgd", "full", mnist_source, lambda flags: run_budget(ref, tmp_path, flags))


@pytest.fixture(scope="module")
def mnist_source():
    from labcheck import data

    return data.load(data.MNIST).source
