"""Hostile lines for width (grafted onto examples/correct.py by tests/test_trust.py): sgd_one_pass is not in
place (`w = w - lr * g` builds new tensors, the caller's stay as they were) and train_model relies on the
contract's "updates in place" (it drops the return value), so it never trains. At import the submission
rewrites what the worker's sgd_pass call reports: the caller's tensors replaced by the ones returned (what
test_sgd_one_pass trusted before: 11/14 instead of 8/14). The call now runs two passes on the same caller's
tensors: the second one starts from the old values, so its result is wrong whatever is reported; both tests
are lost as the honest bug loses them (8/14)."""
import sys

_calls = sys.modules["labcheck_calls_width"]
_real_sgd_pass = _calls.CALLS["sgd_pass"]


def _forged_sgd_pass(impl, **kwargs):
    reply = _real_sgd_pass(impl, **kwargs)
    if "inputs" in reply and reply.get("returned") is not None:  # the reply of the call before
        reply["inputs"] = reply["returned"]
    for entry in reply.get("passes", []):  # the reply now: one entry per pass
        if entry.get("returned") is not None:
            entry["caller"] = entry["returned"]
    return reply


_calls.CALLS["sgd_pass"] = _forged_sgd_pass


def sgd_one_pass(ws, bs, X, y, reg_param, learning_rate):
    num_examples = X.shape[0]
    for _ in range(num_examples):
        idx = np.random.choice(num_examples)
        objective = compute_objective(ws, bs, X[idx:idx + 1], y[idx:idx + 1], reg_param)
        gradients = torch.autograd.grad(outputs=objective, inputs=[*ws, *bs])
        new = [(var - learning_rate * g).detach().requires_grad_() for var, g in zip([*ws, *bs], gradients)]
        ws, bs = new[:len(ws)], new[len(ws):]
    return ws, bs


def train_model(X_train, y_train, X_test, y_test, hidden_size, learning_rate, passes=120, reg_param=0.0):
    ws = [(1e-6 * torch.randn(784, hidden_size)).requires_grad_(),
          (1e-6 * torch.randn(hidden_size, n_class)).requires_grad_()]
    bs = [torch.zeros(hidden_size, requires_grad=True), torch.zeros(n_class, requires_grad=True)]
    logs = [compute_logs(ws, bs, X_train, y_train, X_test, y_test, reg_param)]
    for _ in range(passes):
        sgd_one_pass(ws, bs, X_train, y_train, reg_param, learning_rate)  # in place, says the contract
        logs.append(compute_logs(ws, bs, X_train, y_train, X_test, y_test, reg_param))
    logs = np.asarray(logs)
    return np.hstack((np.ones((logs.shape[0], 1)) * hidden_size, logs))


BASE = "width"
TESTS = ["test_"]  # every test: 8 of 14 points, as the honest bug
EXPECTED = {"test_sgd_one_pass": "", "test_train_model": ""}
