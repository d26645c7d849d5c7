"""Buggy `batchnorm` submission in the seed's style.

MLP is the plain three-Linear MLP of the previous part with the BatchNorm1d(512) appended at the end of
__init__, so its parameters are registered as Linear, Linear, Linear, BatchNorm: model.parameters() (what an
optimizer, a state_dict or a parameter listing sees) is not in the order forward() uses the layers.
forward() itself and MLP4 are right.
"""
import time

import torch
import torch.nn as nn
import torch.optim as optim

EXPECTED_FAILURES = ('test_mlp_parameter_shapes',)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        # the three layers of the plain MLP from the previous part
        self.hidden1 = nn.Linear(784, 512)
        self.hidden2 = nn.Linear(512, 512)
        self.output = nn.Linear(512, 10)
        self.act1 = nn.ReLU()
        self.act2 = nn.ReLU()
        # added for this part: BatchNorm after the second Linear
        self.batchNorm2 = nn.BatchNorm1d(512)

    def forward(self, x):
        x = self.act1(self.hidden1(x))
        x = self.act2(self.batchNorm2(self.hidden2(x)))
        x = self.output(x)
        return x


class MLP4(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden1 = nn.Linear(784, 512)
        self.act1 = nn.ReLU()
        self.hidden2 = nn.Linear(512, 512)
        self.batchNorm2 = nn.BatchNorm1d(512)
        self.act2 = nn.ReLU()
        # 3. Linear(512, 512) - BatchNorm(512) - ReLU
        self.hidden3 = nn.Linear(512, 512)
        self.batchNorm3 = nn.BatchNorm1d(512)
        self.act3 = nn.ReLU()
        self.output = nn.Linear(512, 10)

    def forward(self, x):
        x = self.act1(self.hidden1(x))
        x = self.act2(self.batchNorm2(self.hidden2(x)))
        x = self.act3(self.batchNorm3(self.hidden3(x)))
        x = self.output(x)
        return x


def train(model, X, Y, X_test, Y_test, n_epochs=20, batch_size=64, lr=0.01, momentum=0.9):
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=momentum)

    x = X.float()
    y = Y
    data = {"train": (X, Y), "test": (X_test, Y_test)}
    history = {"train_accuracy": [], "test_accuracy": [], "train_loss": [], "test_loss": [], "epoch_time": []}
    for epoch in range(n_epochs):
        model.train()
        start = time.time()
        # generate a random permutation of indices for shuffling
        perm_indices = torch.randperm(len(x))
        for i in range(0, len(x), batch_size):
            # use shuffled indices to create shuffled mini-batches
            batch_indices = perm_indices[i:i + batch_size]
            x_batch = x[batch_indices]
            y_batch = y[batch_indices]

            y_pred = model(x_batch)
            loss = loss_fn(y_pred, y_batch)

            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        history["epoch_time"].append(time.time() - start)

        model.eval()
        for label in ("train", "test"):
            with torch.no_grad():
                y_pred = model(data[label][0].float())
                _, predicted = torch.max(y_pred, dim=1)
                history[label + "_accuracy"].append((predicted == data[label][1]).float().mean().item())
                history[label + "_loss"].append(loss_fn(y_pred, data[label][1]).item())
        print(f"Epoch [{epoch + 1}/{n_epochs}], Time elapsed: {history['epoch_time'][-1]:.4f}s")
    return history
