"""labcheck.core.ReluMLPStep, the hand-written training step, against autograd.

The reference computes the Lab-3 step with autograd (my_nn, F.cross_entropy, backward, then
p.add_(p.grad, alpha=-lr)); the core writes forward, backward and update out by hand and fuses the
gradient into the update. Both are the same arithmetic in a different order, so they agree to float32
rounding. Tolerance (stated, not tuned): a parameter p after a step is p - lr*g, where g is a dot
product over the batch; each way rounds p - lr*g once or twice and sums g in its own order, so the
two differ per step by a few ulp of |p| plus a few ulp of |lr*g| times the batch's summation length
(at most B terms of one sign; ~sqrt(B) typically). Over STEPS steps we allow
    STEPS * 8 * eps32 * (max|p| + B * lr * max|g|)
with eps32 = 2**-24 and g autograd's gradient of the first step (the largest; the network is far
from converged). The check fails for any mistake larger than rounding: a missing 1/B, a wrong ReLU
mask or a transposed weight all move parameters by ~lr*|g| >> the bound.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

from labcheck import core, native
from strategies import SEEDS

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
SIZES = (784, 100, 100, 10)  # the Lab-3 MLP
EPS32 = 2.0**-24
STEPS = 3
LR = 0.05


def _problem(device, batch=128, seed=0):
    """The Lab-3 init (N(0, 1/fan_in) weights, small nonzero biases), pixels in [0, 1] and labels."""
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(a, b, generator=gen) / math.sqrt(a) for a, b in zip(SIZES[:-1], SIZES[1:])]
    biases = [0.1 * torch.randn(b, generator=gen) for b in SIZES[1:]]
    x = torch.rand(STEPS, batch, SIZES[0], generator=gen)  # (STEPS, B, 784)
    y = torch.randint(0, SIZES[-1], (STEPS, batch), generator=gen)  # (STEPS, B)
    to = lambda ts: [t.to(device) for t in ts]  # noqa: E731
    return to(weights), to(biases), x.to(device), y.to(device)


def _autograd_run(weights, biases, x, y, momentum=0.0):
    """The seed's step: autograd through x @ W + b, ReLU, mean cross-entropy; v = mu v + g; p -= lr v."""
    params = [t.clone().requires_grad_() for pair in zip(weights, biases) for t in pair]
    velocities = [torch.zeros_like(p) for p in params]
    losses, first_grads = [], None
    for xb, yb in zip(x, y):
        h = xb
        for j in range(len(weights) - 1):
            h = torch.relu(h @ params[2 * j] + params[2 * j + 1])  # (B, d_j)
        loss = F.cross_entropy(h @ params[-2] + params[-1], yb)
        loss.backward()
        losses.append(loss.detach())
        with torch.no_grad():
            if first_grads is None:
                first_grads = [p.grad.clone() for p in params]
            for p, v in zip(params, velocities):
                v.mul_(momentum).add_(p.grad)
                p.add_(v, alpha=-LR)
                p.grad = None
    return [p.detach() for p in params], torch.stack(losses), first_grads


def _tolerance(params, grads, batch):
    scale = max(p.abs().max().item() for p in params) + batch * LR * max(g.abs().max().item() for g in grads)
    return STEPS * 8 * EPS32 * scale


MODES = ["fused-sgd", "momentum", "torch-optim", "sgd-in-backward"]
# The step as written in Python, and labcheck.native's compiled operator (the same calls from C++): g++
# and ninja come with `scripts/run test`, so "compiled" fails here rather than skip when it cannot be built.
IMPLEMENTATIONS = {"python": False, "compiled": True}


def _core_step(weights, biases, mode, compiled):
    """The step under test and, for torch-optim, the optimizer that applies its gradients."""
    ws, bs = [w.clone() for w in weights], [b.clone() for b in biases]
    if mode == "torch-optim":
        step = core.ReluMLPStep(ws, bs, lr=None, compiled=compiled)
        return step, torch.optim.SGD(step.params, lr=LR)
    if mode == "sgd-in-backward":  # compiled: the SGD kernel on each layer inside the backward
        step = core.ReluMLPStep(ws, bs, lr=None, compiled=compiled)
        return step, core.FusedOptimizerStep(torch.optim.SGD(step.params, lr=LR, fused=True))
    return core.ReluMLPStep(ws, bs, lr=LR, momentum=0.9 if mode == "momentum" else 0.0, compiled=compiled), None


def _train(step, optimizer, x, y) -> list[torch.Tensor]:
    """One step per batch of x (STEPS, B, d_0), y (STEPS, B), the optimizer's after each (a FusedOptimizerStep
    goes into the step); the batch losses."""
    losses = []
    for xb, yb in zip(x, y):
        if isinstance(optimizer, core.FusedOptimizerStep):
            losses.append(step.step(xb, yb, with_loss=True, optimizer=optimizer))
            continue
        losses.append(step.step(xb, yb, with_loss=True))
        if optimizer is not None:
            optimizer.step()
    return losses


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", [128, 37])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_hand_written_step_equals_autograd_to_float_rounding(device, mode, batch, implementation):
    weights, biases, x, y = _problem(device, batch)
    expected, expected_losses, grads = _autograd_run(weights, biases, x, y, 0.9 if mode == "momentum" else 0.0)
    step, optimizer = _core_step(weights, biases, mode, IMPLEMENTATIONS[implementation])
    losses = _train(step, optimizer, x, y)
    atol = _tolerance([t for pair in zip(weights, biases) for t in pair], grads, batch)
    moved = max((p - q).abs().max().item() for p, q in zip(step.params, [t for pair in zip(weights, biases) for t in pair]))
    assert moved > 100 * atol, f"the steps barely moved the parameters ({moved:.2e}): the check would be vacuous"
    for name, got, want in zip(["W0", "b0", "W1", "b1", "W2", "b2"], step.params, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=atol, msg=lambda m: f"{mode} {name}: {m}")
    torch.testing.assert_close(torch.stack(losses), expected_losses, rtol=0, atol=atol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", [128, 37])
def test_compiled_step_is_bit_identical_to_the_python_step(device, mode, batch):
    """csrc/relu_mlp_step.cpp makes _python_step's calls with the same arguments in the same order, so
    parameters, gradients and losses agree bit for bit: any slip in the C++ (a dropped ReLU mask, a
    wrong alpha or orientation) shows here, far below the autograd test's rounding bound."""
    weights, biases, x, y = _problem(device, batch)
    runs = []
    for compiled in (False, True):
        step, optimizer = _core_step(weights, biases, mode, compiled)
        losses = _train(step, optimizer, x, y)
        runs.append((step.params, step.grads or [], losses))
    (params, grads, losses), (params_c, grads_c, losses_c) = runs
    assert len(grads) == len(grads_c) and all(map(torch.equal, grads, grads_c))
    assert all(map(torch.equal, params, params_c))
    assert all(map(torch.equal, losses, losses_c))


@given(sizes=st.lists(st.integers(1, 40), min_size=2, max_size=5), batch=st.integers(1, 70),
       mode=st.sampled_from(MODES), linear_layout=st.booleans(), seed=SEEDS)
def test_compiled_step_is_bit_identical_for_any_mlp(sizes, batch, mode, linear_layout, seed):
    """The same property for any depth, width and batch, and for weights laid out as nn.Linear keeps them
    (transposed views): the C++ chooses each product's orientation as _products does."""
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(a, b, generator=gen) / math.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    if linear_layout:
        weights = [w.t().contiguous().t() for w in weights]  # (d_in, d_out) views of (d_out, d_in) storage
    biases = [0.1 * torch.randn(b, generator=gen) for b in sizes[1:]]
    x = torch.rand(2, batch, sizes[0], generator=gen)
    y = torch.randint(0, sizes[-1], (2, batch), generator=gen)
    runs = []
    for compiled in (False, True):
        step, optimizer = _core_step(weights, biases, mode, compiled)
        _train(step, optimizer, x, y)
        runs.append(step.params + (step.grads or []))
    assert all(map(torch.equal, *runs))


def test_the_step_says_when_the_compiled_operator_is_missing(monkeypatch):
    monkeypatch.setattr(native, "_load", lambda: (None, "unavailable: no compiler"))
    weights, biases, x, y = _problem("cpu", batch=8)
    with pytest.raises(RuntimeError, match="no compiler"):
        core.ReluMLPStep(weights, biases, compiled=True)
    step = core.ReluMLPStep(weights, biases)  # compiled=None: the Python step, as correct
    assert step._compiled is None
    step.step(x[0], y[0])


def test_buffers_are_allocated_once_per_batch_size():
    weights, biases, x, y = _problem("cpu", batch=64)
    step = core.ReluMLPStep(weights, biases, lr=LR)
    step.step(x[0], y[0])
    pointers = [b.data_ptr() for b in step._for_batch(64).hidden_t]
    step.step(x[1], y[1])
    step.step(x[2, :10], y[2, :10])  # a short last batch gets its own buffers
    assert [b.data_ptr() for b in step._for_batch(64).hidden_t] == pointers
    assert sorted(step._buffers) == [10, 64]


def test_torch_optimizer_mode_exposes_the_gradients_as_grad():
    weights, biases, x, y = _problem("cpu", batch=16)
    step = core.ReluMLPStep([w.clone() for w in weights], [b.clone() for b in biases], lr=None)
    before = [p.clone() for p in step.params]
    step.step(x[0], y[0])
    assert all(torch.equal(p, q) for p, q in zip(step.params, before)), "lr=None must leave the update to the optimizer"
    _, _, grads = _autograd_run(weights, biases, x[:1], y[:1])
    for p, g in zip(step.params, grads):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=_tolerance(before, grads, 16))


def test_rejects_momentum_without_a_learning_rate():
    weights, biases, _, _ = _problem("cpu", batch=4)
    with pytest.raises(ValueError, match="momentum"):
        core.ReluMLPStep(weights, biases, lr=None, momentum=0.9)


@pytest.mark.parametrize("transposed", [False, True], ids=["contract-weights", "nn-linear"])
def test_gradients_have_their_parameters_strides_for_fused_optimizers(transposed):
    """torch's fused SGD/Adam kernels assume .grad has the parameter's strides: a gradient buffer laid
    out transposed to its parameter gave wrong updates (5e-4 off after two steps), silently."""
    weights, biases, x, y = _problem("cpu", batch=32)
    if transposed:  # nn.Linear's (d_out, d_in) storage seen as (d_in, d_out)
        weights = [w.t().contiguous().t() for w in weights]
    step = core.ReluMLPStep([w.clone() for w in weights], [b.clone() for b in biases], lr=None)
    assert all(g.stride() == p.stride() for g, p in zip(step.grads, step.params))
    fused = torch.optim.SGD(step.params, lr=LR, fused=True)
    for xb, yb in zip(x, y):
        step.step(xb, yb)
        fused.step()
    expected, _, grads = _autograd_run(weights, biases, x, y)
    for got, want in zip(step.params, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=_tolerance(expected, grads, 32))


OPTIMIZERS = {
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True),
    "adam-amsgrad": lambda ps: torch.optim.Adam(ps, lr=1e-3, amsgrad=True, weight_decay=1e-4, fused=True),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, fused=True),
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, fused=True),
    "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, fused=True),
}


def _linears(seed: int) -> list[torch.nn.Linear]:
    torch.manual_seed(seed)
    return [torch.nn.Linear(a, b) for a, b in zip(SIZES[:-1], SIZES[1:])]


def _parameters(linears) -> list[torch.Tensor]:
    return [p for lin in linears for p in lin.parameters()]


def _twin_optimizers(name: str, seed: int, monkeypatch):
    """Two copies of one nn.Linear stack, each with OPTIMIZERS[name]: (reference, direct, via_torch, optimizer,
    fused, calls), where `fused` is a FusedOptimizerStep of `optimizer` and `calls` counts its optimizer.step()."""
    reference, direct = _linears(seed), _linears(seed)
    via_torch, optimizer = OPTIMIZERS[name](_parameters(reference)), OPTIMIZERS[name](_parameters(direct))
    calls = []
    step_of_torch = optimizer.step
    monkeypatch.setattr(optimizer, "step", lambda: calls.append(1) or step_of_torch())
    return reference, direct, via_torch, optimizer, core.FusedOptimizerStep(optimizer), calls


def _assert_trained_alike(ref_params, params, via_torch, optimizer, grads=False) -> None:
    """The parameters (and their gradients), and every optimizer state tensor, equal bit for bit."""
    for p, q in zip(ref_params, params, strict=True):
        assert torch.equal(p, q)
        assert not grads or torch.equal(p.grad, q.grad)
        assert via_torch.state[p].keys() == optimizer.state[q].keys()
        for key, value in via_torch.state[p].items():
            assert torch.equal(value, optimizer.state[q][key]), key


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fused_optimizer_step_is_bit_identical_to_optimizer_step(name, monkeypatch):
    """core.FusedOptimizerStep calls torch's fused kernel on the optimizer's own state: the parameters and
    the optimizer state equal optimizer.step()'s bit for bit, and after the first step torch.optim's
    Python path is not taken (that is the time it saves)."""
    reference, direct, via_torch, optimizer, fused, calls = _twin_optimizers(name, 0, monkeypatch)
    _, _, x, y = _problem("cpu", batch=32)
    steps = (core.ReluMLPStep.from_linears(reference, lr=None), core.ReluMLPStep.from_linears(direct, lr=None))
    for k in range(3 * STEPS):
        for core_step in steps:
            core_step.step(x[k % STEPS], y[k % STEPS])
        via_torch.step()
        fused()
        optimizer.param_groups[0]["lr"] *= 0.9  # a schedule: read at every call
        via_torch.param_groups[0]["lr"] *= 0.9
    assert len(calls) == 1, "only the first step (which creates the state) may go through optimizer.step()"
    _assert_trained_alike(_parameters(reference), _parameters(direct), via_torch, optimizer)


def _forward(linears, xb):
    h = xb
    for lin in linears[:-1]:
        h = torch.relu(lin(h))
    return linears[-1](h)


@pytest.mark.parametrize("name", ["adam", "sgd-momentum"])
def test_fused_optimizer_step_follows_new_gradient_tensors(name, monkeypatch):
    """Autograd after zero_grad(set_to_none=True) makes new .grad tensors each step: the call re-reads them and
    runs the same kernel (optimizer.step() only for the first step), with optimizer.step()'s results."""
    reference, direct, via_torch, optimizer, fused, calls = _twin_optimizers(name, 1, monkeypatch)
    _, _, x, y = _problem("cpu", batch=16)
    for k in range(2 * STEPS):
        for linears, apply in ((reference, via_torch.step), (direct, fused)):
            for lin in linears:
                lin.zero_grad(set_to_none=True)
            F.cross_entropy(_forward(linears, x[k % STEPS]), y[k % STEPS]).backward()
            apply()
    assert len(calls) == 1, "new gradient tensors are re-read, not a reason for optimizer.step()"
    _assert_trained_alike(_parameters(reference), _parameters(direct), via_torch, optimizer)


def test_fused_optimizer_step_leaves_a_parameter_without_gradient_to_optimizer_step(monkeypatch):
    """A parameter with no gradient this step (an unused layer) is skipped by optimizer.step(), and may have no
    optimizer state yet: the call is optimizer.step() then, and the direct kernel again once every
    parameter has a gradient; the results are optimizer.step()'s throughout."""
    reference, direct, via_torch, optimizer, fused, _ = _twin_optimizers("adam", 2, monkeypatch)
    _, _, x, y = _problem("cpu", batch=16)
    for k in range(2 * STEPS):
        for linears, apply in ((reference, via_torch.step), (direct, fused)):
            for lin in linears:
                lin.zero_grad(set_to_none=True)
            h = x[k % STEPS]
            if k < 2:  # the middle layer unused (its parameters get no gradient) for the first two steps
                h = linears[2](torch.relu(linears[0](h))[:, : SIZES[2]])
            else:
                h = _forward(linears, h)
            F.cross_entropy(h, y[k % STEPS]).backward()
            apply()
        assert (fused._tensors is None) == (k < 2)
    _assert_trained_alike(_parameters(reference), _parameters(direct), via_torch, optimizer)


def test_fused_optimizer_step_needs_a_fused_optimizer():
    direct = _linears(1)
    with pytest.raises(ValueError, match="fused=True"):
        core.FusedOptimizerStep(torch.optim.Adam(direct[0].parameters()))


SGD_IN_BACKWARD = {
    "sgd": dict(lr=0.05),
    "momentum-dampening": dict(lr=0.05, momentum=0.9, dampening=0.1),
    "nesterov-decay": dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "maximize": dict(lr=0.05, maximize=True),
}


def _step_and_sgd(layout: str, compiled: bool, **sgd):
    """A ReluMLPStep (lr=None) in the contract's or nn.Linear's weight layout, and a fused SGD over it."""
    if layout == "nn-linear":
        linears = _linears(0)
        step = core.ReluMLPStep.from_linears(linears, lr=None, compiled=compiled)
        params = _parameters(linears)
    else:
        weights, biases, _, _ = _problem("cpu")
        step = core.ReluMLPStep([w.clone() for w in weights], [b.clone() for b in biases], lr=None, compiled=compiled)
        params = step.params
    return step, torch.optim.SGD(params, fused=True, **sgd), params


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("layout", ["contract-weights", "nn-linear"])
@pytest.mark.parametrize("name", SGD_IN_BACKWARD)
def test_sgd_inside_the_backward_is_bit_identical_to_step_then_optimizer_step(name, layout, implementation,
                                                                               monkeypatch):
    """step(x, y, optimizer=FusedOptimizerStep(SGD)) runs the SGD kernel on each layer as soon as its gradients
    are written (compiled), or after the step (Python): parameters, gradients and momentum buffers equal
    step() then optimizer.step() bit for bit, under a learning-rate schedule. Compiled, every step after
    the first (which creates the optimizer's state) takes the in-backward path."""
    compiled = IMPLEMENTATIONS[implementation]
    _, _, x, y = _problem("cpu", batch=32)
    ref_step, ref_optimizer, ref_params = _step_and_sgd(layout, compiled, **SGD_IN_BACKWARD[name])
    step, optimizer, params = _step_and_sgd(layout, compiled, **SGD_IN_BACKWARD[name])
    fused = core.FusedOptimizerStep(optimizer)
    split = []
    split_of_torch = fused.sgd_in_backward
    monkeypatch.setattr(fused, "sgd_in_backward", lambda layers: split.append(split_of_torch(layers)) or split[-1])
    for k in range(3 * STEPS):
        ref_step.step(x[k % STEPS], y[k % STEPS])
        ref_optimizer.step()
        step.step(x[k % STEPS], y[k % STEPS], optimizer=fused)
        if k % 2:  # a schedule, read at every call (and the unchanged steps reuse the split)
            for opt in (ref_optimizer, optimizer):
                opt.param_groups[0]["lr"] *= 0.9
    if compiled:
        assert split[0] is None and len(split) == 3 * STEPS and all(s is not None for s in split[1:])
    else:
        assert not split, "the Python step has no backward to run the update in"
    _assert_trained_alike(ref_params, params, ref_optimizer, optimizer, grads=True)


def test_an_optimizer_the_backward_cannot_split_runs_after_the_step():
    """Adam, and an SGD that also holds a parameter the step does not train, are not split by layer:
    step(optimizer=...) is then step() followed by the optimizer, with optimizer.step()'s results."""
    _, _, x, y = _problem("cpu", batch=16)
    ref_step, _, ref_params = _step_and_sgd("nn-linear", True)
    step, _, params = _step_and_sgd("nn-linear", True)
    ref_adam, adam = OPTIMIZERS["adam"](ref_params), core.FusedOptimizerStep(OPTIMIZERS["adam"](params))
    extra = torch.zeros(3, requires_grad=True)
    extra.grad = torch.ones(3)
    weights, biases, _, _ = _problem("cpu")
    plain = core.ReluMLPStep([w.clone() for w in weights], [b.clone() for b in biases], lr=None, compiled=True)
    with_extra = core.FusedOptimizerStep(torch.optim.SGD(plain.params + [extra], lr=0.5, fused=True))
    for k in range(STEPS):
        ref_step.step(x[k], y[k])
        ref_adam.step()
        step.step(x[k], y[k], optimizer=adam)
        plain.step(x[k], y[k], optimizer=with_extra)
        assert adam.sgd_in_backward(step._layers) is None and with_extra.sgd_in_backward(plain._layers) is None
    assert all(torch.equal(p, q) for p, q in zip(ref_params, params))
    assert torch.equal(extra, torch.full((3,), -0.5 * STEPS)), "the parameter outside the step was not updated"
    with pytest.raises(ValueError, match="lr=None"):
        core.ReluMLPStep([w.clone() for w in weights], [b.clone() for b in biases], lr=LR).step(
            x[0], y[0], optimizer=with_extra)
