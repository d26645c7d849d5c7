"""Realistic submission: the HW2 seed notebook's own student code (../shared/seeds/hw2_width_fashion_mnist.txt) for
`width`: the imports cell verbatim (torchvision's FashionMNIST, pandas, `%matplotlib inline`; seaborn in a later
cell), the data cells (Fashion-MNIST read from .././data, no download), the utility cell with mlp,
compute_objective, compute_accuracy and compute_logs, sgd_one_pass, the divergent-learning-rate cells, the seed's
train_model and the cells that run it, the plots and the interpolation cell, as they stand. As a .py, each cell's
data loading, training and plotting run under `if __name__ == "__main__":`.

What the seed wrote is right (mlp, compute_objective, compute_accuracy, sgd_one_pass earn every point). Its
train_model is the notebook's own, train_model(learning_rate=..., hidden_size=16), reading the data from globals:
it cannot be called as the contract's train_model(X_train, y_train, X_test, y_test, hidden_size, learning_rate),
which the message says. The seed searched the divergent learning rate and the interpolation pass by hand and
with pandas, so find_divergent_lr and interpolation_pass are missing.
"""

EXPECTED = {
    "test_mlp": 2,
    "test_compute_objective": 2,
    "test_compute_accuracy": 1,
    "test_sgd_one_pass": 3,
    "test_train_model": 0,
    "test_train_model_defaults": 0,
    "test_find_divergent_lr": 0,
    "test_find_divergent_lr_default_start": 0,
    "test_interpolation_pass": 0,
}
DIAGNOSES = {
    "test_train_model": "the contract's signature is `train_model(X_train, y_train, X_test, y_test, hidden_size, learning_rate, passes=120, reg_param=0.0)`",
    "test_train_model_defaults": "the contract's signature is `train_model(",
    "test_find_divergent_lr": "does not define `find_divergent_lr`",
    "test_find_divergent_lr_default_start": "does not define `find_divergent_lr`",
    "test_interpolation_pass": "does not define `interpolation_pass`",
}

import numpy as np
import pandas as pd
import torch
from torchvision.datasets import FashionMNIST
from torch.nn.functional import cross_entropy
import time

import matplotlib.pyplot as plt

# 2.0.1 1.1 Loading the MNIST dataset

# 2.0.2 1.2 Setup Code for Multilayer Perceptron

# Some utility functions to compute the objective and the accuracy

def mlp(X, ws, bs):
    hidden = X # Shape: (n, d_0)
    for w, b in zip(ws[:-1], bs[:-1]):
        # hidden = relu(W_{r<j}x + b_{r<j})
        hidden = torch.matmul(hidden, w) + b[None, :] # Shape: (n, d_{j-1}) * (d_{j-1}, d_j) = (n, d_j)
        hidden = torch.nn.functional.relu(hidden)
    # return W_j(hidden) + b_j
    return torch.matmul(hidden, ws[-1]) + bs[-1][None, :]

def compute_objective(ws, bs, X, y, reg_param):
    """ Compute the multinomial logistic loss.
        ws is a list of tensors of consistent shapes,
        X of shape (n, d) and y of shape (n,)
    """
    score = mlp(X, ws, bs) # Shape: (n, K)
    # PyTorch's function cross_entropy computes the multinomial logistic loss
    # Adding L2 penalization
    return (
        cross_entropy(input=score, target=y, reduction='mean')
        + 0.5 * reg_param * sum([torch.norm(w)**2 for w in ws])
    )

@torch.no_grad()
def compute_accuracy(ws, bs, X, y):
    """ Compute the classification accuracy
        ws is a list of tensors of consistent shapes
        X of shape (n, d) and y of shape (n,)
    """
    score = mlp(X, ws, bs) # shape: (n, K)
    predictions = torch.argmax(score, axis=1) # class with highest score is predicted
    return (predictions == y).sum() * 1.0 / y.shape[0]

@torch.no_grad()
def compute_logs(ws, bs, reg_param, verbose=False):
    train_loss = compute_objective(ws, bs, X_train, y_train, reg_param)
    test_loss = compute_objective(ws, bs, X_test, y_test, reg_param)
    train_accuracy = compute_accuracy(ws, bs, X_train, y_train)
    test_accuracy = compute_accuracy(ws, bs, X_test, y_test)
    if verbose:
        print(('Train Loss = {:.3f}, Train Accuracy = {:.3f}, ' +
              'Test Loss = {:.3f}, Test Accuracy = {:.3f}').format(
                train_loss.item(), train_accuracy.item(),
                test_loss.item(), test_accuracy.item())
        )
    return (train_loss, train_accuracy, test_loss, test_accuracy)

def sgd_one_pass(ws, bs, X, y, reg_param, learning_rate, verbose=False):
    num_examples = X.shape[0]
    average_loss = 0.0
    for i in range(num_examples):
        idx = np.random.choice(X.shape[0])
        # compute the objective.
        # Note: This function requires X to be of shape (n,d). In this case, n=1
        objective = compute_objective(ws, bs, X[idx:idx+1], y[idx:idx+1], reg_param)

        average_loss = 0.99 * average_loss + 0.01 * objective.item()
        if verbose and (i+1) % 100 == 0:
            print(average_loss)

        # compute the gradient using automatic differentiation
        all_parameters = [*ws, *bs]
        gradients = torch.autograd.grad(outputs=objective, inputs=all_parameters)

        # perform SGD update. IMPORTANT: Make the update inplace!
        with torch.no_grad():
            for (var, g) in zip(all_parameters, gradients):
                var -= learning_rate * g
    return ws, bs

# 2.0.3 1.3 Finding divergent learning rate

reg_param = 0.0

learning_rate = 1e-2

hidden_size = 16 # Specifying hidden layer size as required by the assignment

# 2.0.4 1.4 Train the model for 120 passes over the training data for h=16

divergent_learning_rate = 5e-3

def train_model(learning_rate=divergent_learning_rate, hidden_size=16):

    logs = []

    ws = [1e-6 * torch.randn(784, hidden_size, requires_grad=True),
          1e-6 * torch.randn(hidden_size, n_class, requires_grad=True)]
    bs = [torch.zeros(hidden_size, requires_grad=True),
          torch.zeros(n_class, requires_grad=True)]
    logs.append(compute_logs(ws, bs, reg_param, verbose=True))

    for j in range(120):
        ws, bs = sgd_one_pass(ws, bs, X_train, y_train, reg_param, learning_rate, verbose=False)
        logs.append(compute_logs(ws, bs, reg_param, verbose=False))

    logs = np.asarray(logs)
    logs = np.hstack((np.ones((logs.shape[0], 1))*hidden_size, logs))

    return logs

df_cols = ['hidden_size', 'train_loss', 'train_accuracy', 'test_loss', 'test_accuracy']

# 1.6.1 Make 4 plots

import seaborn as sns
import matplotlib.pyplot as plt

if __name__ == "__main__":
    # %matplotlib inline

    # Fix the random seeds for reproducibility
    torch.manual_seed(0)
    np.random.seed(1)

    # download dataset (~117M in size)
    train_dataset = FashionMNIST('.././data', train=True, download=False)
    X_train = train_dataset.data # torch tensor of type uint8 of shape (n, 28, 28)
    y_train = train_dataset.targets.long() # torch tensor of type Long of shape (n,)
    test_dataset = FashionMNIST('.././data', train=False, download=False)
    X_test = test_dataset.data
    y_test = test_dataset.targets.long()

    # choose a subsample of 10% of the data:
    idxs_train = torch.from_numpy(
        np.random.choice(X_train.shape[0], replace=False, size=int(X_train.shape[0]*0.12)))
    X_train, y_train = X_train[idxs_train], y_train[idxs_train]
    idxs_test = torch.from_numpy(
        np.random.choice(X_test.shape[0], replace=False, size=X_test.shape[0]))
    X_test, y_test = X_test[idxs_test], y_test[idxs_test]

    print(f'X_train.shape = {X_train.shape}')
    print(f'n_train: {X_train.shape[0]}, n_test: {X_test.shape[0]}')
    print(f'Image size: {X_train.shape[1:]}')

    f, ax = plt.subplots(1, 5, figsize=(20, 4))
    for i, idx in enumerate(np.random.choice(X_train.shape[0], 5)):
        ax[i].imshow(X_train[idx], cmap='gray', vmin=0, vmax=255)
        ax[i].set_title(f'Label = {y_train[idx]}', fontsize=20)
    # Each number represents the grayscale intensity [0, 255]
    print("One Row of Pixels:", X_train[0][0])

    print("Original Shape:", X_train.shape)
    X_train = X_train.float() # convert to float32. Shape: (n, 28, 28)
    X_train = X_train.view(-1, 784) # Shape: (n, 784)
    print("Flatten Shape:", X_train.shape)
    mean, std = X_train.mean(axis=0), X_train.std(axis=0) # Shape: (784,)

    # Normalize dataset: pixel values lie between 0 and 255
    # Normalize them so the pixelwise mean is zero and standard deviation is 1
    # Normalize: add a small number to avoid divide by zero
    X_train = (X_train - mean[None, :]) / (std[None, :] + 1e-6) # Shape: (n, 784)

    X_test = X_test.float() # Shape: (n', 28, 28)
    X_test = X_test.view(-1, 784) # Shape: (n', 784)
    X_test = (X_test - mean[None, :]) / (std[None, :] + 1e-6) # Shape: (n', 784)

    n_class = np.unique(y_train).shape[0] # We have K=10 classes numbered (0, 1, ..., 9)
    print("Number of Classes: ", n_class)

    torch.manual_seed(0)
    np.random.seed(1)
    ws = [1e-6 * torch.randn(784, hidden_size, requires_grad=True),
          1e-6 * torch.randn(hidden_size, n_class, requires_grad=True)]
    bs = [torch.zeros(hidden_size, requires_grad=True),
          torch.zeros(n_class, requires_grad=True)]

    _ = compute_logs(ws, bs, reg_param, verbose=True)

    ws, bs = sgd_one_pass(ws, bs, X_train, y_train, reg_param, learning_rate, verbose=True)
    _ = compute_logs(ws, bs, reg_param, verbose=True)

    results_16 = pd.DataFrame(columns=df_cols, data=train_model())
    results_8 = pd.DataFrame(columns=df_cols, data=train_model(hidden_size=8))
    results_32 = pd.DataFrame(columns=df_cols, data=train_model(hidden_size=32))
    results_128 = pd.DataFrame(columns=df_cols, data=train_model(hidden_size=128))
    results_512 = pd.DataFrame(columns=df_cols, data=train_model(hidden_size=512))
    # Appending results to a single dataframe
    results = pd.concat([results_16, results_8, results_32, results_128, results_512], axis=0)
    # Find first occurrence of train_accuracy = 1.0 for each hidden size
    results['iter'] = results.index+1
    results.to_csv('results.csv', index=False)

    fig, ax = plt.subplots(2,2)
    fig.set_size_inches(12, 8)

    fig.suptitle('Training and Testing Accuracy and Loss for Different Hidden Layer Sizes')
    sns.lineplot(x='iter', y='train_accuracy', hue='hidden_size', data=results, ax=ax[0,0], palette='tab10')
    sns.lineplot(x='iter', y='test_accuracy', hue='hidden_size', data=results, ax=ax[0,1], palette='tab10')
    sns.lineplot(x='iter', y='train_loss', hue='hidden_size', data=results, ax=ax[1,0], palette='tab10')
    sns.lineplot(x='iter', y='test_loss', hue='hidden_size', data=results, ax=ax[1,1], palette='tab10')
    # shift legend to the right
    ax[1,1].legend(title='hidden_size', loc='upper left', bbox_to_anchor=(0.05,1))
    fig.tight_layout()

    interpolation_data = results.where(results['train_accuracy'] == 1.0).dropna().sort_values(by=['hidden_size', 'iter']).groupby('hidden_size').first().reset_index()
    print(f'Smallest width of the hidden layer for which the training accuracy reaches 100%: {interpolation_data["hidden_size"].min()}')
