"""Buggy: my_nn's ReLU goes through numpy (np.maximum on .detach().numpy()), as in the numpy lab before, which
cuts the autograd graph: W0, b0, W1 and b1 never receive a gradient, so only the output layer trains (and the
network learns little). The forward values are right.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

EXPECTED_FAILURES = ('test_my_nn_gradients', 'test_train_sgd_trajectory', 'test_train_sgd_momentum_trajectory',
                     'test_train_sgd_learns')


def initialize_nn(param_dict):
    with torch.no_grad():
        for name, param in param_dict.items():
            param.requires_grad_(True)
            if name.startswith("W"):
                param.normal_(0, 1 / math.sqrt(param.size(0)))
            else:
                param.zero_()
    return param_dict


def relu(x):
    return torch.from_numpy(np.maximum(x.detach().numpy(), 0))


def my_nn(input, param_dict):
    x = input.reshape(-1, 28 * 28)
    x = relu(x @ param_dict["W0"] + param_dict["b0"])
    x = relu(x @ param_dict["W1"] + param_dict["b1"])
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


def train_sgd(param_dict, loader, lr=0.01, epochs=20, momentum=0.0):
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
