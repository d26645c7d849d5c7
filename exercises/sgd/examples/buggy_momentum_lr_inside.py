"""Buggy: momentum with the learning rate inside the velocity, v = mu*v + lr*g, p -= v. It equals the
contract's v = mu*v + g, p -= lr*v only while lr is constant, and its velocities are lr times smaller.
"""
import math

import torch
import torch.nn.functional as F

EXPECTED_FAILURES = ('test_momentum_step_trajectory', 'test_momentum_velocities')


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
                velocities[i] = mu * velocities[i] + lr * p.grad
                p -= velocities[i]
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
