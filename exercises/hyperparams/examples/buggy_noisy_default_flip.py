"""Buggy: NoisyDataset's default is flip_horizontal=True (left on from the augmentation experiment), not False: the
plain NoisyDataset(dataset) mirrors half the images.
"""
import collections
import time

import torch
import torchvision  # as in every seed notebook: its compiled operators must load in the worker
from torchvision import datasets, transforms  # noqa: F401  (the seeds load their data so)

EXPECTED_FAILURES = ('test_noisy_dataset_defaults',)


def build_net(width=128):
    sizes = [784, width, width // 2]
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(sizes[-1], 10))
    return torch.nn.Sequential(*layers)


def build_net_bn(width=128):
    return torch.nn.Sequential(
        torch.nn.Linear(784, width), torch.nn.BatchNorm1d(width), torch.nn.ReLU(),
        torch.nn.Linear(width, width // 2), torch.nn.BatchNorm1d(width // 2), torch.nn.ReLU(),
        torch.nn.Linear(width // 2, 10),
    )


class NoisyDataset(torch.utils.data.Dataset):
    def __init__(self, dataset, noise_sigma=0, flip_horizontal=True, shift=False):
        self.dataset, self.noise_sigma = dataset, noise_sigma
        self.flip_horizontal, self.shift = flip_horizontal, shift

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, idx):
        x, y = self.dataset[idx]
        img = x.view(28, 28) + self.noise_sigma * torch.randn(28, 28)
        if self.flip_horizontal and torch.rand(()) < 0.5:
            img = img[:, torch.arange(27, -1, -1)]
        if self.shift:
            dy, dx = (int(v) for v in torch.randint(-1, 2, (2,)))
            img = img.roll(dy, 0).roll(dx, 1)
        return img.reshape(784), y


def count_parameters(net):
    total = 0
    for _, p in net.named_parameters():
        total += p.numel()
    return total


def fit(net, train, validation, optimizer, epochs=25, batch_size=10, device='cpu'):
    net = net.to(device)
    loaders = {'train': torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True),
               'validation': torch.utils.data.DataLoader(validation, batch_size=batch_size)}
    history = collections.defaultdict(list)
    start, steps = time.time(), 0
    for epoch in range(epochs):
        for phase in ('train', 'validation'):
            is_train = phase == 'train'
            net.train(is_train)
            total_loss, total_correct, n = 0.0, 0, 0
            for x, y in loaders[phase]:
                x, y = x.to(device), y.to(device)
                with torch.set_grad_enabled(is_train):
                    out = net(x)
                    loss = torch.nn.functional.cross_entropy(out, y)
                if is_train:
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    steps += 1
                total_loss += loss.item() * len(y)
                total_correct += (out.argmax(1) == y).sum().item()
                n += len(y)
            history[phase + ' loss'].append(total_loss / n)
            history[phase + ' accuracy'].append(total_correct / n)
        history['train steps'].append(steps)
        history['epochs'].append(epoch)
        history['time'].append(time.time() - start)
    return history
