"""labcheck.repro: seeding, determinism flags and RNG-state isolation."""
import random

import numpy as np
import pytest
import torch

from labcheck import repro, reproducibility


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


# ---------------------------------------------------------------------------------------------
# The promise of labcheck.reproducibility: a recorded seed comes back bit-identical on the same set-up


def test_a_quick_run_of_one_seed_gives_its_recorded_values():
    """sgd's quick run of seed 3 (3 s, one thread, as `labcheck bands` ran it) against the values the band
    file records for seed 3: bit-identical where this machine has the recorded fingerprint, else inside
    every band (promise 2)."""
    import json

    from labcheck import runner, study
    from labcheck.exercises import get

    content = json.loads(get("sgd").bands_path.read_text())
    threads = torch.get_num_threads()
    try:
        runner.limit_threads()
        run = study.run_reference("sgd", ["--quick", "--seed", "3"])
    finally:
        torch.set_num_threads(threads)
    same, problems = reproducibility.rerun_problems(content, "quick", 3, run["metrics"], run["data_source"])
    assert not problems, ("same set-up: " if same else "another set-up: ") + "\n".join(problems)


def test_rerun_problems_is_exact_on_the_same_set_up_and_judges_by_the_band_elsewhere():
    here = reproducibility.fingerprint()
    content = {"sweeps": {"quick": {"x": {"seeds": [0, 1], "fingerprint": here, "torch_threads_per_run": 1}}},
               "bands": {"quick.acc": {"x": {"lo": 0.7, "hi": 0.9, "measured": [0.80, 0.81], "sweep": ["quick", "x"]}}}}
    assert reproducibility.rerun_problems(content, "quick", 1, {"acc": 0.81}, "x") == (True, [])
    same, problems = reproducibility.rerun_problems(content, "quick", 1, {"acc": 0.8100001}, "x")
    assert same and "0.8100001 here, 0.81 recorded for seed 1 on the same set-up" in problems[0]
    content["sweeps"]["quick"]["x"]["fingerprint"] = {**here, "cpu": "another CPU"}
    assert reproducibility.rerun_problems(content, "quick", 1, {"acc": 0.8100001}, "x") == (False, [])
    assert "outside its band" in reproducibility.rerun_problems(content, "quick", 1, {"acc": 0.95}, "x")[1][0]
    assert "does not report it" in reproducibility.rerun_problems(content, "quick", 1, {}, "x")[1][0]
