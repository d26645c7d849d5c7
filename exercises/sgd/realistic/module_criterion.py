"""Realistic submission (Jupyter style, sgd): a correct solution whose loss is a module-level object,
`criterion = nn.CrossEntropyLoss()` beside `device`, in the imports cell, read by evaluate() and train_sgd().
The .py and the .ipynb are the same code (the notebook split into six cells, run top to bottom; the .py runs the
data and training cells under `if __name__ == "__main__":`), so they deserve the same grade: every point.
"""

EXPECTED = {
    "test_initialize_nn_structure": 2,
    "test_initialize_nn_std": 2,
    "test_initialize_nn_gaussian": 1,
    "test_initial_loss_and_accuracy": 1,
    "test_my_nn_input_shapes": 2,
    "test_my_nn_gradients": 1,
    "test_sgd_step_trajectory": 3,
    "test_sgd_step_zeroes_grads": 1,
    "test_momentum_step_trajectory": 3,
    "test_momentum_velocities": 1,
    "test_evaluate_every_sample": 2,
    "test_evaluate_huge_logits": 1,
    "test_train_sgd_trajectory": 2,
    "test_train_sgd_momentum_trajectory": 2,
    "test_train_sgd_defaults": 1,
    "test_train_sgd_learns": 2,
}

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision import datasets, transforms
from torch.utils.data import DataLoader
import matplotlib.pyplot as plt

device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
criterion = nn.CrossEntropyLoss()

transform = transforms.Compose([transforms.ToTensor()])

def initialize_nn(param_dict):
    """Re-initializes the tensors of param_dict in place: W ~ N(0, 1/fan_in), b = 0, all trainable."""
    for name, param in param_dict.items():
        if name.startswith('W'):
            w = torch.randn(param.shape[0], param.shape[1]) / math.sqrt(param.shape[0])
        else:
            w = torch.zeros(param.shape[0])
        param_dict[name] = w.to(device).requires_grad_()


def my_nn(input, param_dict):
    x = input.reshape(input.shape[0], -1)
    x = torch.relu(x @ param_dict['W0'] + param_dict['b0'])
    x = torch.relu(x @ param_dict['W1'] + param_dict['b1'])
    return x @ param_dict['W2'] + param_dict['b2']

def sgd_step(params, lr):
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p -= lr * p.grad
                p.grad.zero_()


def sgd_momentum_step(params, velocities, lr, mu):
    with torch.no_grad():
        for p, v in zip(params, velocities):
            if p.grad is not None:
                v.mul_(mu).add_(p.grad)
                p -= lr * v
                p.grad.zero_()

def evaluate(param_dict, loader):
    total_loss, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = my_nn(x, param_dict)
            total_loss += criterion(out, y).item() * len(y)
            correct += (out.argmax(dim=1) == y).sum().item()
            n += len(y)
    return total_loss / n, correct / n


def train_sgd(param_dict, loader, lr=0.01, epochs=20, momentum=0.0):
    params = list(param_dict.values())
    velocities = [torch.zeros_like(p) for p in params]
    losses, accs = [], []
    for epoch in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = my_nn(x, param_dict)
            loss = criterion(out, y)
            loss.backward()
            if momentum > 0:
                sgd_momentum_step(params, velocities, lr, momentum)
            else:
                sgd_step(params, lr)
            losses.append(loss.item())
            accs.append((out.argmax(dim=1) == y).float().mean().item())
    return losses, accs

if __name__ == "__main__":
    mnist_train = datasets.MNIST(root='./data', train=True, download=True, transform=transform)
    mnist_test = datasets.MNIST(root='./data', train=False, download=True, transform=transform)
    train_loader = DataLoader(mnist_train, batch_size=128, shuffle=True)
    test_loader = DataLoader(mnist_test, batch_size=256)

    param_dict = {'W0': torch.empty(784, 100), 'b0': torch.empty(100), 'W1': torch.empty(100, 100),
                  'b1': torch.empty(100), 'W2': torch.empty(100, 10), 'b2': torch.empty(10)}
    initialize_nn(param_dict)
    print('before training:', evaluate(param_dict, test_loader))
    losses, accs = train_sgd(param_dict, train_loader, lr=0.01, epochs=20, momentum=0.9)
    print('after training:', evaluate(param_dict, test_loader))
    plt.plot(losses)
    plt.show()
