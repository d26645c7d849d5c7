"""labcheck.core: resident batches, weighted averages, evaluation, device choice."""
import pytest
import torch
from hypothesis import given, strategies as st

from labcheck import core

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@given(n=st.integers(1, 300), batch_size=st.integers(1, 64), drop_last=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_resident_loader_visits_every_sample_once_per_epoch(n, batch_size, drop_last, seed):
    x = torch.arange(n)
    loader = core.ResidentLoader(x, x * 2, batch_size=batch_size, drop_last=drop_last, seed=seed)
    batches = list(loader)
    assert len(batches) == len(loader)
    seen = torch.cat([b[0] for b in batches]) if batches else torch.empty(0, dtype=torch.long)
    assert all(torch.equal(b[1], b[0] * 2) for b in batches)
    expected = (n // batch_size) * batch_size if drop_last else n
    assert len(seen) == expected and len(set(seen.tolist())) == expected


def test_resident_loader_is_seeded_and_reshuffles_each_epoch():
    x = torch.arange(100)
    a = core.ResidentLoader(x, batch_size=10, seed=1)
    b = core.ResidentLoader(x, batch_size=10, seed=1)
    first_a, first_b = [t[0] for t in a], [t[0] for t in b]
    assert all(torch.equal(p, q) for p, q in zip(first_a, first_b))
    second_a = [t[0] for t in a]
    assert not all(torch.equal(p, q) for p, q in zip(first_a, second_a))


def test_resident_loader_without_shuffle_keeps_order():
    x = torch.arange(7)
    assert [t[0].tolist() for t in core.ResidentLoader(x, batch_size=3, shuffle=False)] == [[0, 1, 2], [3, 4, 5], [6]]


def test_resident_loader_rejects_mismatched_tensors():
    with pytest.raises(ValueError):
        core.ResidentLoader(torch.zeros(3), torch.zeros(4), batch_size=2)


def test_average_is_weighted_by_batch_size():
    avg = core.Average()
    avg.update(1.0, n=3)
    avg.update(0.0, n=1)
    assert avg.value == 0.75


@pytest.mark.parametrize("device", DEVICES)
def test_evaluate_logits_is_a_true_average_over_all_samples(device):
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3).to(device)
    x, y = torch.randn(103, 5, device=device), torch.randint(0, 3, (103,), device=device)
    loss, acc = core.evaluate_logits(model, x, y, batch_size=10)
    with torch.no_grad():
        out = model(x)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(out, y).item(), rel=1e-5)
    assert acc == pytest.approx((out.argmax(1) == y).float().mean().item())


def test_select_device():
    assert core.select_device("cpu") == torch.device("cpu")
    assert core.select_device("auto").type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            core.select_device("cuda")


@pytest.mark.gpu
def test_resident_loader_on_cuda_keeps_batches_on_the_device():
    x = torch.arange(50, device="cuda")
    for (batch,) in core.ResidentLoader(x, batch_size=8, seed=0):
        assert batch.device.type == "cuda"
    core.synchronize("cuda")
