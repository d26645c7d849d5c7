"""Realistic submission: the PS2 seed notebook's own student code (../shared/seeds/ps2_gradient_norms_matrix_sensing.txt)
for `gradnorms`: the setup cell verbatim (seaborn, `from scipy import random, linalg` that modern scipy no longer
has, torchvision, tqdm, torchsummary that the grading environment lacks, `%matplotlib inline`), the data and
loader cells, the MNISTClassifierMLP cell, the cell with train_one_epoch (the course's signature, with `epoch`)
and test_one_epoch, get_gradient_norms with the training loop, the plotting cells and the matrix-sensing cells of
2b as they stand, with the seed's execution counts. The seed wrote no sensing function: it ran 2b and 2d as
top-level numpy loops (with np.inner, which is not the trace inner product), so every sensing test is lost as a
missing function. As a .py, each cell's data loading, training and plotting run under
`if __name__ == "__main__":`.

The seed's mistake: MNISTClassifierMLP's last layer is Linear(hidden_sizes[0], output_size), right only while
every hidden size is equal. get_gradient_norms takes every parameter's gradient norm: on the contract's bias-free
network those are exactly the Linear weights, input to output, so it earns its points; `LogSoftmax()` without
dim picks dim=1 for 2-D input (a deprecation warning, the right values).
"""

EXPECTED = {
    "test_mlp_architecture": 0,
    "test_mlp_forward": 3,
    "test_gradient_norms": 5,
    "test_train_one_epoch": 4,
    "test_test_one_epoch": 3,
    "test_training_curves": 8,
    "test_sensing_measurements": 0,
    "test_sensing_loss": 0,
    "test_sensing_grad": 0,
    "test_gradient_descent_step_count": 0,
    "test_gradient_descent_rank_r": 0,
    "test_overparametrized_implicit_regularization": 0,
}
DIAGNOSES = {
    "test_mlp_architecture": "sized from hidden_sizes[0] instead of hidden_sizes[-1]",
    "test_sensing_measurements": "does not define `sensing_measurements`",
    "test_sensing_loss": "does not define `sensing_loss`",
    "test_sensing_grad": "does not define `sensing_grad`",
    "test_gradient_descent_step_count": "does not define `gradient_descent`",
    "test_gradient_descent_rank_r": "does not define `gradient_descent`",
    "test_overparametrized_implicit_regularization": "does not define `gradient_descent`",
}

# 1.0.1 Problem 1b

# !pip install jupyter ipywidgets torch torchvision matplotlib tqdm
# !pip install torchsummary
# !pip install torchviz

# Setup
import torch
import numpy as np
import pandas as pd
import seaborn as sns
import matplotlib.pyplot as plt
# %matplotlib inline
import math
from scipy import random, linalg
from torchvision import datasets, transforms
from tqdm import trange
from torchsummary import summary

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'

# Set random seed for reproducibility
seed = 1234

# Initial transform (convert to PyTorch Tensor only)
transform = transforms.Compose([
        transforms.ToTensor(),
    ])

batch_size = 128

# 1.1 Part 1: Implement a multi-layer neural network (5 points)

class MNISTClassifierMLP(torch.nn.Module):

    def __init__(self, input_size, hidden_sizes, output_size):
        """
        Hidden_sizes is a list of hidden sizes, e.g. [32, 32, 32]
        """
        super().__init__()
        self.flatten = torch.nn.Flatten(start_dim=1)

        self.depth = len(hidden_sizes) + 1

        # -----
        # Write your implementation here.

        self.len = len(hidden_sizes)

        # Linear layer obtaining input to the hidden layer from the input layer
        self.linears = [torch.nn.Linear(input_size, hidden_sizes[0], bias=False)]

        #
        self.linears.extend([torch.nn.Linear(hidden_sizes[i], hidden_sizes[i+1], bias=False) for i in range(self.len - 1)])
        self.linears.append(torch.nn.Linear(hidden_sizes[0], output_size, bias=False))
#         self.linears = torch.nn.ModuleList(self.linears.append(torch.nn.Linear(hidden_sizes[0], output_size, bias=False)))

        # Applying ReLU activation to each hidden layer before feeding into final layer
        self.acts = [torch.nn.ReLU() for i in range(self.len)]

        # self.acts = torch.nn.ModuleList(self.acts = [torch.nn.ReLU() for i in range(self.len)])

        # Prevent overfitting
        self.dropout = torch.nn.Dropout(0.2)

        # Appending log softmax activation that maps feature representations to log probabilities
        self.acts.append(torch.nn.LogSoftmax())

        # Adding iterable layers to the final Linear module
        self.linears = torch.nn.ModuleList(self.linears)

        # Adding iterable activation functions to the final module
        self.acts = torch.nn.ModuleList(self.acts)

        # -----

    def forward(self, x):
        x = self.flatten(x)

        # -----
        # Write your implementation here.

        # Iterate over self.linears and self.acts

        for i in range(self.depth):
            x = self.acts[i](self.linears[i](x))

        return x
        # -----

#         layer1 = self.relu(self.fc1(x))
#         layer2 = self.relu(self.fc2(layer1))
#         layer3 = self.relu(self.fc3(layer2))
#         layer4 = torch.nn.functional.log_softmax(self.fc4(layer3))
#         layer4 = self.relu(self.fc4(layer3))
#         out = torch.nn.functional.log_softmax(layer4)
#         return out

# Hyperparameters
lr = 0.01
max_epochs = 40

# Model arguments
input_size = 28 * 28
hidden_sizes = [128] * 3
output_size = 10

def train_one_epoch(train_loader, model, device, optimizer, epoch):
    model.train()
    train_loss = 0
    gradient_norms = []
    for i, (img, label) in enumerate(train_loader):
        img, label = img.to(device), label.to(device)

        # Compute loss and backprop
        optimizer.zero_grad()
        output = model(img)
        loss = torch.nn.functional.nll_loss(output, label)
        loss.backward()
        optimizer.step()

        train_loss += loss.item()
        gradient_norms.append(get_gradient_norms(model))

    # Compute average loss over batches
    train_loss /= len(train_loader)

    # Compute average of norms of gradients over batches
    # Convert to numpy array and compute mean
    gradient_norms = np.array(gradient_norms)
    gradient_norms = gradient_norms.mean(0)

    return train_loss, gradient_norms

def test_one_epoch(test_loader, model, device):
    model.eval()
    test_loss = 0
    num_correct = 0
    with torch.no_grad():
        for i, (img, label) in enumerate(test_loader):
            img, label = img.to(device), label.to(device)

            output = model(img)
            # Get index of largest log-probability and use that as prediction
            pred = output.argmax(dim=1, keepdim=True)
            num_correct += (pred == label.view_as(pred)).sum().item()

            test_loss += torch.nn.functional.nll_loss(output, label).item()

    # Compute average loss over batches
    test_loss /= len(test_loader)

    return test_loss, num_correct

# summary(model, (1, 28, 28))

# 1.2 Part 2: Measure the gradient norm of each layer during training (5 points)

def get_gradient_norms(model):
    # Only get gradients for linear layers
    # Calculate the Frobenius norm
    # Return as list of floats, not torch.Tensors
    # Size should be equal to depth

    norms = []

    # -----
    # Write your implementation here.

    # Reference: https://discuss.pytorch.org/t/check-the-norm-of-gradients/27961

    # for a 2-norm
    for i in model.parameters():
        parameter_norms = i.grad.data.norm(2).item()
        norms.append(parameter_norms)

    # -----

    return norms

train_losses = []
gradient_norms = []
test_losses = []
test_correct = []

# 1.3 Part 3: Plot the norm of the gradients of each layer during training (15 points)

# 1.3.3 2b) Gradient descent for matrix sensing, R = r

# Initializing given parameters
d = 100
r = 5
# m = 10*d*r
m = 5000

# The label of Ai, denoted by yi, is equal to yi = <Ai,Xi>
y_i = []
a_i = []

U_append = []
distance = []
count = []
c = 0

if __name__ == "__main__":
    # cuDNN uses nondeterministic algorithms, set some options for reproducibility
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.manual_seed(seed)

    train_data = datasets.MNIST('data',
                                 train=True,
                                 download=True,
                                 transform=transform)
    test_data = datasets.MNIST('data',
                                train=False,
                                download=True,
                                transform=transform)
    # Calculate training data mean and standard deviation to apply normalization to data
    # train_data.data are of type uint8 (range 0,255) so divide by 255.
    train_mean = train_data.data.double().mean() / 255.
    train_std = train_data.data.double().std() / 255.
    print(f'Train Data: Mean={train_mean}, Std={train_std}')

    # Add normalization of train and test data using calculated training mean and standard deviation
    # This will convert data to be in range[-1, 1]
    transform = transforms.Compose(
        [transforms.ToTensor(),
         transforms.Normalize((train_mean,), (train_std,))])
    train_data.transform = transform
    test_data.transform = transform

    torch.manual_seed(seed)
    train_loader = torch.utils.data.DataLoader(train_data,
                                                batch_size=batch_size,
                                                shuffle=True,
                                                num_workers=2)
    test_loader = torch.utils.data.DataLoader(test_data,
                                               batch_size=batch_size,
                                               shuffle=False,
                                               num_workers=2)

    model = MNISTClassifierMLP(input_size, hidden_sizes, output_size).to(DEVICE)
    print(model)

    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    for epoch in trange(max_epochs, desc='Epochs', leave=True):
        # -----
        # Write your implementation here.

        train_loss, gradient_norm = train_one_epoch(train_loader, model, DEVICE, optimizer, epoch)

        test_loss, test_corrects = test_one_epoch(test_loader, model, DEVICE)

        train_losses.append(train_loss)
        gradient_norms.append(gradient_norm)
        test_losses.append(test_loss)
        test_correct.append(test_corrects)

        # -----

    gradient_norms = np.array(gradient_norms)

    # Draw training loss curve
    fig = plt.figure(figsize=(12, 8))
    plt.plot(range(1, max_epochs + 1), train_losses, label='Train loss')
    plt.plot(range(1, max_epochs + 1), test_losses, label='Test loss', marker='o')
    plt.xlim(left=0)
    plt.ylim(bottom=0)
    plt.title('Loss curve', fontsize=24)
    plt.xlabel('Epochs', fontsize=16)
    plt.ylabel('NLL', fontsize=16)
    plt.legend(loc='upper right', fontsize=14)

    # Plot the gradient norms of each layer vs the number of epochs
    gradient_df = pd.DataFrame(gradient_norms, columns=['Layer 1', 'Layer 2', 'Layer 3', 'Layer 4'])
    gradient_df['epochs']=[i+1 for i in range(40)]
    gradient_df = gradient_df.melt('epochs', var_name='layers', value_name='gradient_norms')
    print(gradient_df)

    fig, ax = plt.subplots(figsize=(15, 8))
    gradient_df.groupby("layers").plot(x="epochs", y="gradient_norms", marker="o", ax=ax)
    ax.legend(["Layer 1", "Layer 2", "Layer 3", "Layer 4"])
    plt.title('Gradient Norm curve', fontsize=24)

    # Semidefnite Matrix
    # X* = U*U*~T
    A = np.random.rand(d,r)

    X = np.dot(U,U.transpose())

    U = np.random.rand(d,r)

    for i in range(m):
        a = np.random.normal(0,1,size=(d,d))
        y_i.append(np.inner(a,X))
        a_i.append(a)

    for i in range(2000):
        res = np.zeros((d,r))
        for j in range(m):
            # Gradient descent of F(U) from problem 2a
            norm = 2*(np.dot(np.dot(np.inner(a_i[j], np.dot(U, U.T)) - y_i[j], (a_i[j] + a_i[j].T)), U))
            res = np.add(res, norm)

        U = U - ((0.0001/m)*(res))
        # Calculating distance between two matrices
        distances = np.linalg.norm(X - np.dot(U, U.transpose()))
        count.append(c)
        distance.append(distances)

        if distances <= 0:
            break;
        c+=1
