"""Buggy: the seed's initialize_nn. It rebinds every entry to torch.zeros_like(param), a new tensor that
does not require grad, and turns requires_grad on only for the weights: the biases are never trained.
"""
import math

import torch
import torch.nn.functional as F

EXPECTED_FAILURES = ('test_initialize_nn_structure',)


def initialize_nn(param_dict):
    for name, param in param_dict.items():
        param_dict[name] = torch.zeros_like(param)
        if "W" in name:
            param_dict[name] = param_dict[name].normal_(0, 1 / math.sqrt(param.size(0)))
            param_dict[name].requires_grad = True
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
