"""Realistic submission: the A4 exercise-3 seed notebook's own student code (../shared/seeds/a4_batchnorm_mlp_mnist.txt)
for `batchnorm`: the imports cell verbatim (torchvision, sklearn), the data cell (a download of MNIST, 600 images
per class), Question 1's cell (class MLP and its training loop at the top level), the plot cells, and Question 4's
cell, which defines `class MLP` a second time with four layers and trains it, as they stand (the seed's execution
counts). As a .py, each cell's data loading, training and plotting run under `if __name__ == "__main__":`.

The seed never wrote MLP4 or train(): it redefined MLP and trained at the top level. When the file runs, the later
four-layer MLP replaces the first, so MLP has MLP4's architecture (the message says so), MLP4 is missing and so is
train. The seed earns nothing here, and each test says which of the three it is.
"""

EXPECTED = {
    "test_mlp_parameter_shapes": 0,
    "test_mlp_forward_eval_mode": 0,
    "test_mlp_batchnorm_train_mode": 0,
    "test_mlp4_parameter_shapes": 0,
    "test_mlp4_forward_eval_mode": 0,
    "test_train_history_format": 0,
    "test_train_metrics_in_eval_mode": 0,
    "test_train_reshuffles_each_epoch": 0,
    "test_train_sgd_momentum": 0,
    "test_train_defaults": 0,
}
DIAGNOSES = {
    "test_mlp_parameter_shapes": "MLP() has MLP4's architecture",
    "test_mlp_forward_eval_mode": "MLP() has MLP4's architecture",
    "test_mlp_batchnorm_train_mode": "MLP() has MLP4's architecture",
    "test_mlp4_parameter_shapes": "does not define `MLP4`",
    "test_mlp4_forward_eval_mode": "does not define `MLP4`",
    "test_train_history_format": "does not define `train`",
    "test_train_metrics_in_eval_mode": "does not define `train`",
    "test_train_reshuffles_each_epoch": "does not define `train`",
    "test_train_sgd_momentum": "does not define `train`",
    "test_train_defaults": "does not define `train`",
}

import time
import numpy as np
import matplotlib.pyplot as plt
from sklearn.preprocessing import StandardScaler

import torch
import torch.nn as nn
import torch.optim as optim
import torchvision
import torchvision.transforms as transforms
from torchvision.datasets import MNIST

# 0.0.1 Importing data

root = 'data'
classes = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)

# create dicts for storing sampled data
labels = ['train', 'test']
X = {'train': [], 'test': []}
Y = {'train': [], 'test': []}

# 0.0.2 Question 1: MLP implementation

# MLP model
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
        x = self.act2(self.batchNorm2(self.hidden2(x)))
        x = self.output(x)
        return x
loss_fn = nn.CrossEntropyLoss()

n_epochs = 20
batch_size = 64
y = Y['train']

accuracies = {'train': [], 'test': []}
losses = {'train': [], 'test': []}

# 0.0.3 Question 2: Inspecting the training process

# accuracy vs number of epochs
import matplotlib.pyplot as plt

# 0.0.5 Question 4: Adding another layer

# MLP model
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

        # 3. Linear(512, 512) - BatchNorm(512) - ReLU
        self.hidden3 = nn.Linear(512, 512)
        self.batchNorm3 = nn.BatchNorm1d(512)
        self.act3 = nn.ReLU()

        # 4. Linear(512, 10)
        self.output = nn.Linear(512, 10)

    def forward(self, x):
        x = self.act1(self.hidden1(x))
        x = self.act2(self.batchNorm2(self.hidden2(x)))
        x = self.act3(self.batchNorm3(self.hidden3(x)))
        x = self.output(x)
        return x
loss_fn = nn.CrossEntropyLoss()

n_epochs = 20
batch_size = 64
y = Y['train']

accuracies = {'train': [], 'test': []}
losses = {'train': [], 'test': []}

# accuracy vs number of epochs
import matplotlib.pyplot as plt

if __name__ == "__main__":
    # load data
    dataset = {'train': MNIST(root=root, train=True, download=True),
              'test': MNIST(root=root, train=False, download=True)}

    # for the training and test datasets
    for label in labels:
        # sample 600 points for each class
        for c in classes:
            subset_idx = torch.isin(dataset[label].targets, torch.as_tensor(c))
            X[label].append(dataset[label].data[subset_idx][:600].view(-1, 28*28).float()) # flatten to 784x1
            Y[label].append(dataset[label].targets[subset_idx][:600].long())

        # concatenate along the first dimension
        X[label] = torch.cat(X[label], dim=0)
        Y[label] = torch.cat(Y[label], dim=0)
    # print(X['train'].shape)
    # print(X['test'].shape)
    # print(Y['train'].shape)
    # print(Y['test'].shape)

    # instantiate the model, loss function, and optimizer
    model = MLP()
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    # grabbing training data
    x = X['train'].float()

    # gradient descent to train
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

        model.eval()
        for label in labels:
            with torch.no_grad():
                y_pred = model(X[label].float())
                _, predicted = torch.max(y_pred, dim=1) # returns index of class with highest probability
                accuracies[label].append((predicted == Y[label]).float().mean())
                losses[label].append(loss_fn(y_pred, Y[label]).item())

        end = time.time()
        print(f'Epoch [{epoch + 1}/{n_epochs}], Time elapsed: {(end - start):.4f}s')

    epochs = [i for i in range(0, n_epochs)]

    plt.figure(figsize=(8, 6))
    plt.plot(epochs, accuracies['test'], marker='o', linestyle='-', label='Test Accuracy')
    plt.plot(epochs, accuracies['train'], marker='o', linestyle='-', label='Training Accuracy')
    plt.title('Training and Test Accuracy vs. Epoch')
    plt.xlabel('Epoch')
    plt.ylabel('Accuracy')
    plt.legend()
    plt.grid(True)
    plt.show()

    # loss vs number of epochs
    plt.figure(figsize=(8, 6))
    plt.plot(epochs, losses['test'], marker='o', linestyle='-', label='Test Loss')
    plt.plot(epochs, losses['train'], marker='o', linestyle='-', label='Training Loss')
    plt.title('Training and Test Loss vs. Epoch')
    plt.xlabel('Epoch')
    plt.ylabel('Loss')
    plt.legend()
    plt.grid(True)
    plt.show()

    # instantiate the model, loss function, and optimizer
    model = MLP()
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    # grabbing training data
    x = X['train'].float()

    # gradient descent to train
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

        model.eval()
        for label in labels:
            with torch.no_grad():
                y_pred = model(X[label].float())
                _, predicted = torch.max(y_pred, dim=1) # returns index of class with highest probability
                accuracies[label].append((predicted == Y[label]).float().mean())
                losses[label].append(loss_fn(y_pred, Y[label]).item())

        end = time.time()
        print(f'Epoch [{epoch + 1}/{n_epochs}], Time elapsed: {(end - start):.4f}s')

    epochs = [i for i in range(0, n_epochs)]

    plt.figure(figsize=(8, 6))
    plt.plot(epochs, accuracies['test'], marker='o', linestyle='-', label='Test Accuracy')
    plt.plot(epochs, accuracies['train'], marker='o', linestyle='-', label='Training Accuracy')
    plt.title('Training and Test Accuracy vs. Epoch')
    plt.xlabel('Epoch')
    plt.ylabel('Accuracy')
    plt.legend()
    plt.grid(True)
    plt.show()
