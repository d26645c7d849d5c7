"""Buggy: train()'s default is momentum=0.0, not the contract's momentum=0.9: called with its defaults it runs plain SGD.
"""
import time

import torch
import torchvision  # as in every seed notebook: its compiled operators must load in the worker
import torch.nn as nn
import torch.optim as optim
from torch.utils.data import DataLoader, TensorDataset
from torchvision import datasets, transforms  # noqa: F401  (the seeds load their data so)

EXPECTED_FAILURES = ('test_train_defaults',)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(784, 512), nn.ReLU(),
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
            nn.Linear(512, 10),
        )

    def forward(self, x):
        return self.net(x.view(-1, 28 * 28))


class MLP4(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(784, 512), nn.ReLU(),
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
            nn.Linear(512, 10),
        )

    def forward(self, x):
        return self.net(x.view(-1, 28 * 28))


def accuracy_and_loss(model, X, Y, loss_fn):
    model.eval()
    with torch.no_grad():
        y_pred = model(X)
        acc = (y_pred.argmax(dim=1) == Y).float().mean().item()
        loss = loss_fn(y_pred, Y).item()
    return acc, loss


def train(model, X, Y, X_test, Y_test, n_epochs=20, batch_size=64, lr=0.01, momentum=0.0):
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loader = DataLoader(TensorDataset(X, Y), batch_size=batch_size, shuffle=True)
    results = {"train_accuracy": [], "test_accuracy": [], "train_loss": [], "test_loss": [], "epoch_time": []}
    for epoch in range(n_epochs):
        model.train()
        start = time.time()
        for x_batch, y_batch in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x_batch), y_batch)
            loss.backward()
            optimizer.step()
        results["epoch_time"].append(time.time() - start)

        for name, x, y in (("train", X, Y), ("test", X_test, Y_test)):
            acc, loss = accuracy_and_loss(model, x, y, loss_fn)
            results[f"{name}_accuracy"].append(acc)
            results[f"{name}_loss"].append(loss)
        print(f"Epoch [{epoch + 1}/{n_epochs}], test accuracy {results['test_accuracy'][-1]:.4f}")
    return results
