"""labcheck.repro: seeding, determinism flags and RNG-state isolation."""
import random

import numpy as np
import pytest
import torch

from labcheck import repro


def draw():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_seed_everything_reproduces_all_three_generators():
    repro.seed_everything(7)
    first = draw()
    repro.seed_everything(7)
    assert draw() == first
    repro.seed_everything(8)
    assert draw() != first


def test_freeze_rng_state_restores_every_stream():
    repro.seed_everything(3)
    with repro.freeze_rng_state():
        inside = draw()
    assert draw() == inside


def test_deterministic_sets_and_restores_flags():
    before = torch.are_deterministic_algorithms_enabled()
    with repro.deterministic():
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert torch.are_deterministic_algorithms_enabled() == before


def test_deterministic_can_be_switched_off_explicitly():
    before = torch.are_deterministic_algorithms_enabled()
    with repro.deterministic(enabled=False):
        assert torch.are_deterministic_algorithms_enabled() == before


def test_private_generator_does_not_touch_the_global_stream():
    repro.seed_everything(0)
    expected = torch.rand(1)
    repro.seed_everything(0)
    torch.randperm(10, generator=repro.generator(123))
    assert torch.equal(torch.rand(1), expected)


@pytest.mark.gpu
def test_freeze_rng_state_restores_cuda():
    with repro.freeze_rng_state():
        inside = torch.rand(3, device="cuda")
    assert torch.equal(torch.rand(3, device="cuda"), inside)
