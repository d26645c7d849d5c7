"""Buggy: gradient_descent makes steps - 1 updates (range(steps - 1)); the distances still have one entry per step.
"""
import torch
import torchvision  # as in every seed notebook: its compiled operators must load in the worker
import torch.nn as nn
import torch.nn.functional as F
from torchvision import datasets, transforms  # noqa: F401  (the seeds load their data so)

EXPECTED_FAILURES = ('test_gradient_descent_step_count',)


class MNISTClassifierMLP(nn.Module):
    def __init__(self, input_size, hidden_sizes, output_size):
        super().__init__()
        self.depth = len(hidden_sizes) + 1
        layers = [nn.Flatten()]
        prev = input_size
        for h in hidden_sizes:
            layers += [nn.Linear(prev, h, bias=False), nn.ReLU()]
            prev = h
        layers += [nn.Linear(prev, output_size, bias=False), nn.LogSoftmax(dim=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def get_gradient_norms(model):
    norms = []
    for module in model.modules():
        if isinstance(module, nn.Linear):
            norms.append(module.weight.grad.norm(p="fro").item())
    return norms


def train_one_epoch(train_loader, model, device, optimizer):
    model.train()
    total, all_norms = 0.0, []
    for img, label in train_loader:
        img, label = img.to(device), label.to(device)
        optimizer.zero_grad()
        loss = F.nll_loss(model(img), label)
        loss.backward()
        optimizer.step()
        total += loss.item()
        all_norms.append(get_gradient_norms(model))
    n_batches = len(all_norms)
    mean_norms = [sum(col) / n_batches for col in zip(*all_norms)]
    return total / n_batches, mean_norms


def test_one_epoch(test_loader, model, device):
    model.eval()
    total, correct, batches = 0.0, 0, 0
    with torch.no_grad():
        for img, label in test_loader:
            img, label = img.to(device), label.to(device)
            out = model(img)
            total += F.nll_loss(out, label).item()
            correct += (out.argmax(dim=1) == label).sum().item()
            batches += 1
    return total / batches, correct


def sensing_measurements(A, X):
    return torch.einsum("kij,ij->k", A, X)


def sensing_loss(U, A, y):
    res = sensing_measurements(A, U @ U.t()) - y
    return (res ** 2).sum() / A.shape[0]


def sensing_grad(U, A, y):
    m = A.shape[0]
    res = sensing_measurements(A, U @ U.t()) - y
    S = torch.einsum("k,kij->ij", res, A + A.transpose(1, 2))
    return 2.0 / m * S @ U


def gradient_descent(U0, A, y, X_star, lr, steps):
    U = U0.clone()
    distances = [torch.norm(U @ U.t() - X_star).item()]
    for _ in range(steps - 1):
        U = U - lr * sensing_grad(U, A, y)
        distances.append(torch.norm(U @ U.t() - X_star).item())
    return U, distances
