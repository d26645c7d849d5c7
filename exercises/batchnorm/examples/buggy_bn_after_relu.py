"""Buggy `batchnorm` submission in the seed's style.

BatchNorm applied after the ReLU (Linear-ReLU-BatchNorm) in MLP and MLP4; the exercise asks for
Linear-BatchNorm-ReLU. Same parameters as the right model, different function: only the
forward checks (eval and train mode) can see it.
"""
import time

import torch
import torch.nn as nn
import torch.optim as optim

EXPECTED_FAILURES = ('test_mlp_forward_eval_mode', 'test_mlp_batchnorm_train_mode', 'test_mlp4_forward_eval_mode')


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        # 1. Linear(784, 512) - ReLU
        self.hidden1 = nn.Linear(784, 512)
        self.act1 = nn.ReLU()

        # 2. Linear(512, 512) - BatchNorm(512) - ReLU
        self.hidden2 = nn.Linear(512, 512)
        self.batchNorm2 = nn.BatchNorm1d(512)
        self.act2 = nn.ReLU()

        # 3. Linear(512, 10)
        self.output = nn.Linear(512, 10)

    def forward(self, x):
        x = self.act1(self.hidden1(x))
        x = self.batchNorm2(self.act2(self.hidden2(x)))  # BUG: BatchNorm after ReLU
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
        x = self.batchNorm2(self.act2(self.hidden2(x)))  # BUG: BatchNorm after ReLU
        x = self.batchNorm3(self.act3(self.hidden3(x)))  # BUG
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
