"""Buggy: train_sgd's default is epochs=10 (left from a quick try), not the contract's epochs=20; every call that passes
epochs is right.
"""
import math

import torch
import torchvision  # as in every seed notebook: its compiled operators must load in the worker
import torch.nn.functional as F
from torchvision import datasets, transforms  # noqa: F401  (the seeds load their data so)

EXPECTED_FAILURES = ('test_train_sgd_defaults',)


def initialize_nn(param_dict):
    with torch.no_grad():
        for name, param in param_dict.items():
            param.requires_grad_(True)
            if name.startswith("W"):
                param.normal_(0, 1 / math.sqrt(param.size(0)))
            else:
                param.zero_()
    return param_dict


def my_nn(input, param_dict):
    x = input.reshape(-1, 28 * 28)
    x = torch.relu_(x @ param_dict["W0"] + param_dict["b0"])
    x = torch.relu_(x @ param_dict["W1"] + param_dict["b1"])
    return x @ param_dict["W2"] + param_dict["b2"]


def sgd_step(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p -= lr * p.grad
                p.grad = None


def sgd_momentum_step(params, velocities, lr, mu):
    with torch.no_grad():
        for i, p in enumerate(params):
            if p.grad is not None:
                velocities[i] = mu * velocities[i] + p.grad
                p -= lr * velocities[i]
                p.grad = None


def evaluate(param_dict, loader):
    loss_sum, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for data, targets in loader:
            output = my_nn(data, param_dict)
            loss_sum += F.cross_entropy(output, targets, reduction="sum").item()
            correct += (output.argmax(1) == targets).sum().item()
            n += targets.shape[0]
    return loss_sum / n, correct / n


def train_sgd(param_dict, loader, lr=0.01, epochs=10, momentum=0.0):
    params = list(param_dict.values())
    v = [torch.zeros_like(p) for p in params]
    train_losses, train_accs = [], []
    for epoch in range(epochs):
        for data, target in loader:
            output = my_nn(data, param_dict)
            loss = F.cross_entropy(output, target)
            loss.backward()
            if momentum > 0:
                sgd_momentum_step(params, v, lr, momentum)
            else:
                sgd_step(params, lr)
            train_losses.append(loss.item())
            train_accs.append((output.argmax(1) == target).sum().item() / len(target))
    return train_losses, train_accs
