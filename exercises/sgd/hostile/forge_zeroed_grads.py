"""Hostile lines for sgd (grafted onto examples/correct.py by tests/test_trust.py): the steps never zero the
gradients (examples/buggy_no_zero_grad.py), and at import the submission rewrites what the worker's step calls
report: every gradient said to be zero after each step (the 'grads_after' sizes that test_sgd_step_zeroes_grads
trusted before: 13/26 instead of 12/26). No call reports gradient sizes now: the zeroing test replays the next
round's step from the parameters sgd_step left, and the accumulated gradient moves them elsewhere. It loses
exactly what the honest bug loses (12/26)."""
import sys

_calls = sys.modules["labcheck_calls_sgd"]


def _forging(real):
    def forged(impl, **kwargs):
        reply = real(impl, **kwargs)
        if isinstance(reply, dict) and "grads_after" in reply:
            reply["grads_after"] = [[0.0 if size is not None else None for size in sizes]
                                    for sizes in reply["grads_after"]]
        return reply
    return forged


for _name in ("sgd_steps", "momentum_steps", "sgd_then_step"):
    if _name in _calls.CALLS:
        _calls.CALLS[_name] = _forging(_calls.CALLS[_name])


def sgd_step(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p -= lr * p.grad


def sgd_momentum_step(params, velocities, lr, mu):
    with torch.no_grad():
        for i, p in enumerate(params):
            if p.grad is not None:
                velocities[i] = mu * velocities[i] + p.grad
                p -= lr * velocities[i]


BASE = "sgd"
TESTS = ["test_"]  # every test: 12 of 26 points, as the honest bug
EXPECTED = {"test_sgd_step_trajectory": "", "test_sgd_step_zeroes_grads": "old gradients",
            "test_momentum_step_trajectory": "", "test_momentum_velocities": "", "test_train_sgd_trajectory": "",
            "test_train_sgd_momentum_trajectory": "", "test_train_sgd_learns": "reach test accuracy"}
