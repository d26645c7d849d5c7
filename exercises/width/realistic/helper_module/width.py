"""Realistic submission (a folder of two files) for `width`: width.py imports mlp, compute_objective and
compute_accuracy from the student's own helpers.py beside it (the seed's code, moved there) and defines the rest
of the contract, all of it right. Graded as one submission, it deserves every point.
"""
EXPECTED = {
    "test_mlp": 2,
    "test_compute_objective": 2,
    "test_compute_accuracy": 1,
    "test_sgd_one_pass": 3,
    "test_train_model": 3,
    "test_train_model_defaults": 1,
    "test_find_divergent_lr": 2,
    "test_find_divergent_lr_default_start": 1,
    "test_interpolation_pass": 1,
}
KNOWN_GAP = "multi-file submissions (#28 item 3)"
TODAY = {
    "test_mlp": 0,
    "test_compute_objective": 0,
    "test_compute_accuracy": 0,
    "test_sgd_one_pass": 0,
    "test_train_model": 0,
    "test_train_model_defaults": 0,
    "test_find_divergent_lr": 2,
    "test_find_divergent_lr_default_start": 1,
    "test_interpolation_pass": 1,
}

import numpy as np
import torch
from torchvision.datasets import FashionMNIST

from helpers import mlp, compute_objective, compute_accuracy

n_class = 10


def sgd_one_pass(ws, bs, X, y, reg_param, learning_rate):
    for i in range(X.shape[0]):
        idx = np.random.choice(X.shape[0])
        objective = compute_objective(ws, bs, X[idx:idx+1], y[idx:idx+1], reg_param)
        gradients = torch.autograd.grad(outputs=objective, inputs=[*ws, *bs])
        with torch.no_grad():
            for var, g in zip([*ws, *bs], gradients):
                var -= learning_rate * g
    return ws, bs


def compute_logs(ws, bs, X_train, y_train, X_test, y_test, reg_param):
    with torch.no_grad():
        return [compute_objective(ws, bs, X_train, y_train, reg_param).item(), compute_accuracy(ws, bs, X_train, y_train),
                compute_objective(ws, bs, X_test, y_test, reg_param).item(), compute_accuracy(ws, bs, X_test, y_test)]


def train_model(X_train, y_train, X_test, y_test, hidden_size, learning_rate, passes=120, reg_param=0.0):
    ws = [1e-6 * torch.randn(784, hidden_size, requires_grad=True),
          1e-6 * torch.randn(hidden_size, n_class, requires_grad=True)]
    bs = [torch.zeros(hidden_size, requires_grad=True), torch.zeros(n_class, requires_grad=True)]
    logs = [compute_logs(ws, bs, X_train, y_train, X_test, y_test, reg_param)]
    for j in range(passes):
        ws, bs = sgd_one_pass(ws, bs, X_train, y_train, reg_param, learning_rate)
        logs.append(compute_logs(ws, bs, X_train, y_train, X_test, y_test, reg_param))
    logs = np.asarray(logs)
    return np.hstack((np.ones((logs.shape[0], 1)) * hidden_size, logs))


def find_divergent_lr(diverges, start=1e-2):
    lr = start
    if diverges(lr):
        while diverges(lr):
            lr /= 10
    else:
        while not diverges(10 * lr):
            lr *= 10
    while not diverges(2 * lr):
        lr *= 2
    return lr


def interpolation_pass(logs):
    hits = np.flatnonzero(np.asarray(logs)[:, 2] == 1.0)
    return int(hits[0]) if len(hits) else None


if __name__ == "__main__":
    train_dataset = FashionMNIST('.././data', train=True, download=False)
    print(train_model(train_dataset.data[:100].float().view(-1, 784), train_dataset.targets[:100],
                      train_dataset.data[100:200].float().view(-1, 784), train_dataset.targets[100:200], 16, 5e-3, passes=2))
