"""Fixtures shared by the bench's test files (tests/test_bench_units.py, tests/test_bench_history.py)."""
import pytest
import torch

from labcheck import data


@pytest.fixture(scope="module")
def small_split():
    """512 real Fashion-MNIST images: the loops' arithmetic does not depend on which data set."""
    return data.load(data.FASHION).train.subset(torch.arange(512))


@pytest.fixture
def restore_threads():
    """command.main sets torch's and BLAS's thread counts for the process: put them back."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    torch_threads = torch.get_num_threads()
    with threadpoolctl.threadpool_limits(limits=None):  # restores the BLAS limits on exit
        yield
    torch.set_num_threads(torch_threads)
