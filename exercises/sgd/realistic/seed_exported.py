"""Realistic submission: the lab 3 seed's code as seed.ipynb holds it, exported to a .py with every cell at the top
level as it stands (Jupyter's "Download as .py", magics as comments): loading the file downloads MNIST and trains.
The grader has no network, so today the file does not load and every test is lost on that; the functions deserve
what seed.ipynb earns (EXPECTED), and the gap is marked KNOWN_GAP for the lead to decide.
"""

EXPECTED = {
    "test_initialize_nn_structure": 0,
    "test_initialize_nn_std": 2,
    "test_initialize_nn_gaussian": 1,
    "test_initial_loss_and_accuracy": 1,
    "test_my_nn_input_shapes": 2,
    "test_my_nn_gradients": 1,
    "test_sgd_step_trajectory": 3,
    "test_sgd_step_zeroes_grads": 1,
    "test_momentum_step_trajectory": 3,
    "test_momentum_velocities": 1,
    "test_evaluate_every_sample": 0,
    "test_evaluate_huge_logits": 1,
    "test_train_sgd_trajectory": 0,
    "test_train_sgd_momentum_trajectory": 0,
    "test_train_sgd_defaults": 1,
    "test_train_sgd_learns": 0,
}
DIAGNOSES = {
    "test_initialize_nn_structure": "torch.zeros_like(param) makes a new tensor that does not require grad",
    "test_evaluate_every_sample": "divided by the nominal batch size",
    "test_train_sgd_trajectory": "a fraction of the batch's own size",
    "test_train_sgd_momentum_trajectory": "a fraction of the batch's own size",
    "test_train_sgd_learns": "without requires_grad",
}
KNOWN_GAP = ".py top-level data loading and training (#28 item 2 for .py: a .py runs as it is)"
TODAY = {
    "test_initialize_nn_structure": 0,
    "test_initialize_nn_std": 0,
    "test_initialize_nn_gaussian": 0,
    "test_initial_loss_and_accuracy": 0,
    "test_my_nn_input_shapes": 0,
    "test_my_nn_gradients": 0,
    "test_sgd_step_trajectory": 0,
    "test_sgd_step_zeroes_grads": 0,
    "test_momentum_step_trajectory": 0,
    "test_momentum_velocities": 0,
    "test_evaluate_every_sample": 0,
    "test_evaluate_huge_logits": 0,
    "test_train_sgd_trajectory": 0,
    "test_train_sgd_momentum_trajectory": 0,
    "test_train_sgd_defaults": 0,
    "test_train_sgd_learns": 0,
}

# ## 0.1 Exercise 1: Loading the dataset

# This cell does not require outputting anything but is setup for subsequent
# cells
import torch
from torch import nn
from torchvision import transforms, datasets
from torch.utils import data
from torch.nn import functional as F
from matplotlib import pyplot as plt
import math

transform=transforms.Compose([
    transforms.ToTensor()
])

train_batch_size = 256
test_batch_size = 256

# load MNIST train and test sets
mnist_train = datasets.MNIST(root='.',
                             train=True,
                             download=True,
                             transform=transform)
mnist_test = datasets.MNIST(root='.',
                             train=False,
                             download=True,
                             transform=transform)

# initialize dataloaders for MNIST train and test sets
train_dataloader = data.DataLoader(mnist_train, batch_size=train_batch_size, drop_last=True)
test_dataloader = data.DataLoader(mnist_test, batch_size=test_batch_size, drop_last=True)

# ## 0.2 Exercise 2: Setting up the neural network

import torch

# set your target device
device = 'cuda' if torch.cuda.is_available() else 'cpu'

## Initialize and track the parameters using a list or dictionary
h1_size = 50
h2_size = 50
param_dict = {
    "W0": torch.rand(784, h1_size)*2-1,
    "b0": torch.rand(h1_size)*2-1,
    "W1": torch.rand(h1_size, h2_size)*2-1,
    "b1": torch.rand(h2_size)*2-1,
    "W2": torch.rand(h2_size, 10)*2-1,
    "b2": torch.rand(10)*2-1,
}

## Make sure your parameters in param_dict are on the chosen device and that they require gradient for training the network later!
for name, param in param_dict.items():
    param_dict[name] = param.to(device)
    param.requires_grad=True

## Define the network
def my_nn(input, param_dict):
    """Performs a single forward pass of a Neural Network with the given
    parameters in param_dict.

    Args:
        input (torch.tensor): Batch of images of shape (B, H, W), where B is
            the number of input samples, and H and W are the image height and
            width respectively.
        param_dict (dict of torch.tensor): Dictionary containing the parameters
            of the neural network. Expects dictionary keys to be of format
            "W#" and "b#" where # is the layer number.

    Returns:
        torch.tensor: Neural network output of shape (B, )
    """
    x = input.view(-1 , 28*28)

    # layer 1
    x = torch.relu_(x @ param_dict['W0'] + param_dict['b0'])

    # layer 2
    x = torch.relu_(x @ param_dict['W1'] + param_dict['b1'])

    # output
    x = x @ param_dict['W2'] + param_dict['b2']

    return x

def initialize_nn(param_dict):
    """Takes a dictionary with existing torch tensors
    and re-initializes them using xavier initialization
    """

    # make sure that your parameters are on the chosen device and that they require gradients!
    for name, param in param_dict.items():
        param_dict[name] = torch.zeros_like(param)
        if "W" in name:
            param_dict[name] = param_dict[name].normal_(0,1/math.sqrt(param.size(0)))
            # turn on parameter gradients for parameters, and move them to device
            param_dict[name] = param_dict[name].to(device)
            param_dict[name].requires_grad = True

initialize_nn(param_dict)

cuda = torch.cuda.is_available()
def evaluate(param_dict, loader):
    loss = 0
    accuracy = 0
    for data, targets in loader:
        #move to GPU if available
        if cuda:
            data, targets = data.to('cuda'), targets.to('cuda')

        #compute model output
        output = my_nn(data,param_dict)
        #compute accuracy for minibatch
        prediction = output.argmax(1)
        accuracy += sum(prediction == targets).item()/test_batch_size
        #compute loss for minibatch
        loss += F.cross_entropy(output,targets).item()
    #aggregate loss and accuracy for all test data
    print(f'test loss: {loss/len(loader):4f}')
    print(f'test accuracy: {accuracy/len(loader)*100:.2f}%')
    return loss/len(loader), accuracy/len(loader)

evaluate(param_dict, test_dataloader)

# ### 0.3 Exercise 3: Training using mini-batch SGD from scratch

import torch
from torch.utils import data

initialize_nn(param_dict)

train_batch_size=128
lr = 0.01

train_dataloader = data.DataLoader(mnist_train,batch_size=train_batch_size,drop_last=True)

alpha=0.01

def sgd_step(params, lr):
    for param in params:
        with torch.no_grad():
            param -= lr * param.grad
            #Update the model parameters by w_t - alpha * grad
            if param.grad is not None:
                #The following code will clear the gradient buffers for the next iteration
                param.grad.detach_()
                param.grad.zero_()

def train_sgd(param_dict, loader, lr=0.01, epochs=20, momentum=0.0):
    train_losses = [] # use to append the avg loss for each minibatch
    train_accs = [] # use to append the avg acc of minibatch
    v = [torch.zeros_like(param) for param in param_dict.values()]
    for epoch in range(epochs):
        for data,target in loader: #Iterate over dataset
            #Compute the gradient for the minibatch
            data, target = data.to(device), target.to(device)
            #compute model output
            output = my_nn(data,param_dict)
            #compute the gradient for the minibatch
            loss = F.cross_entropy(output,target)
            loss.backward()
            # track training loss and accuracy
            train_losses.append(loss.item())
            prediction = output.argmax(1)
            train_accs.append(sum(prediction == target).item()/train_batch_size)

            if momentum:
                sgd_momentum_step(list(param_dict.values()), v, lr, momentum)
            else:
                sgd_step(list(param_dict.values()), lr)

        print(f' epoch {epoch}: train loss {sum(train_losses)/(len(loader)*(epoch+1)):.4f}- train accuracy {sum(train_accs)/(len(loader)*(epoch+1))*100:.2f}%')
    return train_losses, train_accs

train_losses, train_accs = train_sgd(param_dict, train_dataloader, lr=alpha, epochs=20)
#Update loss and acc tracking
train_loss_sgd = train_losses
train_accs_sgd = train_accs
#Plot the train loss and acc
fig,axs = plt.subplots(1,2,figsize=(20,10))
axs[0].plot(train_losses)
axs[0].set_title('train loss')
axs[0].set_xlabel('iteration')
axs[0].set_ylabel('loss')
axs[1].plot(train_accs)
axs[1].set_title('train accuracy')
axs[1].set_xlabel('iteration')
axs[1].set_ylabel('accuracy')

#Evaluate on the test set
evaluate(param_dict, test_dataloader)

# ## 0.4 Exercise 4: Training using the pre-built torch.optim.SGD

#Answer for SGD
import torch
#Make sure to reinitialize your network to random before starting training
initialize_nn(param_dict)

#optim.SGD takes a list of parameters which you can get from your dictionary as follows
parameter_list = param_dict.values()

optimizer = torch.optim.SGD(parameter_list, lr=alpha)

def train_SGD(train_dataloader,optimizer):
    train_loss = []
    train_accuracy = []
    for epochs in range(20):
        for data,targets in train_dataloader:
            data,targets = data.to(device),targets.to(device)
            # set gradients to zero
            optimizer.zero_grad()
            output = my_nn(data,param_dict)
            loss = F.cross_entropy(output,targets)
            loss.backward()
            optimizer.step()
            train_loss.append(loss.item())
            prediction = output.argmax(1)
            train_accuracy.append(sum(prediction == targets).item()/train_batch_size)
        print(f' epoch {epochs}: train loss {sum(train_loss)/(len(train_dataloader)*(epochs+1)):.4f}- train accuracy {sum(train_accuracy)/(len(train_dataloader)*(epochs+1))*100:.2f}%')
    return train_loss,train_accuracy

train_loss,train_accuracy = train_SGD(train_dataloader,optimizer)

#Plot the train loss and acc
fig,axs = plt.subplots(1,2,figsize=(20,10))
axs[0].plot(train_loss_sgd,label='Custom SGD')
axs[0].plot(train_loss,label='torch SGD')
axs[0].set_title('train loss')
axs[0].legend()
axs[1].plot(train_accs_sgd,label='Custom SGD')
axs[1].plot(train_accuracy,label='torch SGD')
axs[1].set_title('train accuracy')
axs[1].legend()
#Evaluate on the test set
evaluate(param_dict, test_dataloader)

# ## 0.5 Optional: Training using mini-batch SGD with momentum

# Reinitialize your network to random!
initialize_nn(param_dict)

alpha=0.01
mu=0.9

def sgd_momentum_step(params, velocities, lr, mu):
    for i, param in enumerate(params):
        with torch.no_grad():
            velocities[i] = mu*velocities[i] + param.grad
            param -= lr * velocities[i]
            #Update the model parameters by w_t-alpha*grad
            if param.grad is not None:
                #The following code will clear the gradient buffers for the next iteration
                param.grad.detach_()
                param.grad.zero_()

losses, train_acc = train_sgd(param_dict, train_dataloader, lr=alpha, epochs=20, momentum=mu)

train_loss_mom = losses
train_accs_mom = train_acc
#Plot the train loss and acc
fig,axs = plt.subplots(1,2,figsize=(20,10))
axs[0].plot(train_losses)
axs[0].set_title('train loss')
axs[1].plot(train_accs)
axs[1].set_title('train accuracy')
#Evaluate on the test set
evaluate(param_dict, test_dataloader)

# Answer for SGD+momentum
#Make sure to reinitialize your network to random before starting training
initialize_nn(param_dict)

#optim.SGD takes a list of parameters which you can get from your dictionary as follows
parameter_list = param_dict.values()

optimizer = torch.optim.SGD(parameter_list, lr=alpha, momentum=mu)

train_losses , train_accs = train_SGD(train_dataloader,optimizer)

#Plot the train loss and acc
fig,axs = plt.subplots(1,2,figsize=(20,10))
axs[0].plot(train_loss_mom,label='Custom SGD+momentum')
axs[0].plot(train_losses,label='torch SGD+momentum')
axs[0].legend()
axs[1].plot(train_accs_mom,label='Custom SGD+momentum')
axs[1].plot(train_accs,label='torch SGD+momentum')
axs[1].legend()
#Evaluate on the test set
evaluate(param_dict, test_dataloader)
