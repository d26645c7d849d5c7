"""Buggy: train_model's default is passes=100, not the contract's passes=120 (the seed's loop runs range(120)).
"""
import numpy as np
import torch
import torchvision  # as in every seed notebook: its compiled operators must load in the worker
import torch.nn.functional as F
from torchvision import datasets, transforms  # noqa: F401  (the seeds load their data so)

EXPECTED_FAILURES = ('test_train_model_defaults',)

n_class = 10


def mlp(X, ws, bs):
    out = X
    for j in range(len(ws)):
        out = torch.addmm(bs[j], out, ws[j])
        if j < len(ws) - 1:
            out = F.relu(out)
    return out


def compute_objective(ws, bs, X, y, reg_param):
    score = mlp(X, ws, bs)
    l2 = 0.0
    for w in ws:
        l2 = l2 + torch.norm(w) ** 2
    return F.cross_entropy(score, y) + 0.5 * reg_param * l2


@torch.no_grad()
def compute_accuracy(ws, bs, X, y):
    predictions = torch.argmax(mlp(X, ws, bs), dim=1)
    return float((predictions == y).float().mean())


def sgd_one_pass(ws, bs, X, y, reg_param, learning_rate):
    num_examples = X.shape[0]
    for _ in range(num_examples):
        idx = np.random.choice(num_examples)
        objective = compute_objective(ws, bs, X[idx:idx + 1], y[idx:idx + 1], reg_param)
        gradients = torch.autograd.grad(outputs=objective, inputs=[*ws, *bs])
        with torch.no_grad():
            for var, g in zip([*ws, *bs], gradients):
                var -= learning_rate * g
    return ws, bs


def compute_logs(ws, bs, X_train, y_train, X_test, y_test, reg_param):
    with torch.no_grad():
        return [compute_objective(ws, bs, X_train, y_train, reg_param).item(),
                compute_accuracy(ws, bs, X_train, y_train),
                compute_objective(ws, bs, X_test, y_test, reg_param).item(),
                compute_accuracy(ws, bs, X_test, y_test)]


def train_model(X_train, y_train, X_test, y_test, hidden_size, learning_rate, passes=100, reg_param=0.0):
    ws = [1e-6 * torch.randn(784, hidden_size, requires_grad=True),
          1e-6 * torch.randn(hidden_size, n_class, requires_grad=True)]
    ws = [w.detach().requires_grad_() for w in ws]
    bs = [torch.zeros(hidden_size, requires_grad=True), torch.zeros(n_class, requires_grad=True)]
    logs = [compute_logs(ws, bs, X_train, y_train, X_test, y_test, reg_param)]
    for _ in range(passes):
        ws, bs = sgd_one_pass(ws, bs, X_train, y_train, reg_param, learning_rate)
        logs.append(compute_logs(ws, bs, X_train, y_train, X_test, y_test, reg_param))
    logs = np.asarray(logs)
    return np.hstack((np.ones((logs.shape[0], 1)) * hidden_size, logs))


def find_divergent_lr(diverges, start=1e-2):
    # Hint 1: powers of 10 until we have a stable lr whose 10x diverges.
    lr = start
    if diverges(lr):
        while diverges(lr):
            lr = lr / 10
    else:
        while not diverges(lr * 10):
            lr = lr * 10
    # Hint 2: refine with powers of 2.
    while not diverges(2 * lr):
        lr = 2 * lr
    return lr


def interpolation_pass(logs):
    for j, row in enumerate(logs):
        if row[2] == 1.0:
            return j
    return None
