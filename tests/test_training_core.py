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

from labcheck import core

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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["fused-sgd", "momentum", "torch-optim"])
@pytest.mark.parametrize("batch", [128, 37])
def test_hand_written_step_equals_autograd_to_float_rounding(device, mode, batch):
    weights, biases, x, y = _problem(device, batch)
    momentum = 0.9 if mode == "momentum" else 0.0
    expected, expected_losses, grads = _autograd_run(weights, biases, x, y, momentum)
    ws, bs = [w.clone() for w in weights], [b.clone() for b in biases]
    if mode == "torch-optim":
        step = core.ReluMLPStep(ws, bs, lr=None)
        optimizer = torch.optim.SGD(step.params, lr=LR)
    else:
        step = core.ReluMLPStep(ws, bs, lr=LR, momentum=momentum)
    losses = []
    for xb, yb in zip(x, y):
        losses.append(step.step(xb, yb, with_loss=True))
        if mode == "torch-optim":
            optimizer.step()
    atol = _tolerance([t for pair in zip(weights, biases) for t in pair], grads, batch)
    moved = max((p - q).abs().max().item() for p, q in zip(step.params, [t for pair in zip(weights, biases) for t in pair]))
    assert moved > 100 * atol, f"the steps barely moved the parameters ({moved:.2e}): the check would be vacuous"
    for name, got, want in zip(["W0", "b0", "W1", "b1", "W2", "b2"], step.params, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=atol, msg=lambda m: f"{mode} {name}: {m}")
    torch.testing.assert_close(torch.stack(losses), expected_losses, rtol=0, atol=atol)


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
