"""Tests of reference/hyperparams.py: NoisyDataset and count_parameters properties, the fast path against
the Dataset path, the dry run, and the study's bands (quick budget by default, full budget with -m slow)."""
import json

import pytest
import torch
from hypothesis import given, strategies as st

from labcheck import bands, cli, data

pytestmark = pytest.mark.exercise("hyperparams")

ref = cli.load_reference("hyperparams")

SIGMAS = st.floats(min_value=0.05, max_value=0.5, allow_nan=False, allow_infinity=False)
WIDTHS = st.integers(min_value=2, max_value=600)
SEEDS = st.integers(min_value=0, max_value=2**31 - 1)
N_IMAGES = 8


def images(seed, n=N_IMAGES):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g)  # (n, 784), (n,)


def draws(seed, passes=1, **kw):
    x, y = images(seed)
    ds = ref.NoisyDataset(torch.utils.data.TensorDataset(x, y), **kw)
    torch.manual_seed(seed)
    got = [ds[i] for _ in range(passes) for i in range(len(ds))]
    return x.repeat(passes, 1), y.repeat(passes), torch.stack([g[0] for g in got]), torch.stack([torch.as_tensor(g[1]) for g in got])


def mirror(x):
    return x.reshape(-1, 28, 28).flip(dims=(2,)).reshape(len(x), 784)  # (n, 784)


def roll_offset(out, img):
    """(dy, dx) in -2..2 with roll(img) == out, else None."""
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            if torch.equal(torch.roll(img.reshape(28, 28), (dy, dx), (0, 1)).reshape(-1), out):
                return dy, dx
    return None


# -- NoisyDataset ------------------------------------------------------------------------------


@given(sigma=SIGMAS, seed=SEEDS)
def test_noise_has_the_requested_std_and_zero_mean(sigma, seed):
    x, _, out, _ = draws(seed, passes=10, noise_sigma=sigma)
    noise = out - x  # (80, 784)
    torch.testing.assert_close(noise.std().item(), sigma, **bands.tolerance("hyperparams.noise_std"))
    torch.testing.assert_close(noise.mean().item(), 0.0, **bands.tolerance("hyperparams.noise_mean"))


@given(seed=SEEDS)
def test_flip_is_a_horizontal_involution(seed):
    x, y = images(seed)
    inner = ref.NoisyDataset(torch.utils.data.TensorDataset(x, y), flip_horizontal=True)
    twice = ref.NoisyDataset(inner, flip_horizontal=True)  # flipping 0, 1 or 2 times
    torch.manual_seed(seed)
    outs = torch.stack([twice[i][0] for _ in range(4) for i in range(len(x))])  # (4n, 784)
    src = x.repeat(4, 1)
    same, mirrored = (outs == src).all(dim=1), (outs == mirror(src)).all(dim=1)
    assert bool((same | mirrored).all()), "a double flip left the set {image, horizontal mirror}"
    torch.testing.assert_close(mirror(mirror(x)), x, rtol=0, atol=0)


@given(seed=SEEDS)
def test_shift_is_a_roll_of_at_most_one_pixel(seed):
    x, _, out, _ = draws(seed, passes=3, shift=True)
    offsets = [roll_offset(o, i) for o, i in zip(out, x)]
    assert all(o is not None and max(map(abs, o)) <= 1 for o in offsets), offsets


@given(seed=SEEDS, sigma=SIGMAS, flip=st.booleans(), shift=st.booleans())
def test_labels_are_unchanged(seed, sigma, flip, shift):
    _, y, out, got = draws(seed, noise_sigma=sigma, flip_horizontal=flip, shift=shift)
    assert torch.equal(got, y) and out.shape == (N_IMAGES, 784)


@given(seed=SEEDS)
def test_no_augmentation_is_the_identity(seed):
    x, _, out, _ = draws(seed)
    assert torch.equal(out, x)


# -- count_parameters ----------------------------------------------------------------------------


@given(width=WIDTHS)
def test_count_parameters_counts_weights_and_biases(width):
    h = width // 2
    plain = 784 * width + width + width * h + h + h * 10 + 10
    assert ref.count_parameters(ref.build_net(width)) == plain
    assert ref.count_parameters(ref.build_net_bn(width)) == plain + 2 * (width + h)  # gamma and beta


def test_count_parameters_of_width_128_is_the_seeds():
    assert ref.count_parameters(ref.build_net(128)) == 109386  # seed In [84]


# -- the fast path -------------------------------------------------------------------------------


def offsets_and_flips(out, x):
    """Per sample: (flipped, dy, dx) that maps x to out (no noise)."""
    result = []
    for o, img in zip(out, x):
        for flipped, base in ((False, img), (True, mirror(img[None])[0])):
            off = roll_offset(o, base)
            if off is not None:
                result.append((flipped, *off))
                break
        else:
            result.append(None)
    return result


def test_batch_augment_has_the_distribution_of_noisy_dataset():
    x, y = images(0, n=40)
    reps = 100  # 4000 draws each
    ds = ref.NoisyDataset(torch.utils.data.TensorDataset(x, y), flip_horizontal=True, shift=True)
    torch.manual_seed(0)
    slow = offsets_and_flips(torch.stack([ds[i][0] for _ in range(reps) for i in range(len(x))]), x.repeat(reps, 1))
    aug = ref.BatchAugment(flip_horizontal=True, shift=True, seed=0)
    fast = offsets_and_flips(torch.cat([aug(x) for _ in range(reps)]), x.repeat(reps, 1))
    assert None not in slow and None not in fast
    tol = bands.tolerance("hyperparams.augment_distribution")
    for value in [(f, dy, dx) for f in (False, True) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]:
        torch.testing.assert_close(fast.count(value) / len(fast), slow.count(value) / len(slow), **tol,
                                   msg=lambda m, value=value: f"frequency of {value}: {m}")
    sigma = 0.2
    noise = ref.BatchAugment(noise_sigma=sigma, seed=1)(x.repeat(10, 1)) - x.repeat(10, 1)
    torch.testing.assert_close(noise.std().item(), sigma, **bands.tolerance("hyperparams.noise_std"))


@pytest.fixture(scope="module")
def small_split():
    ds = data.load(data.FASHION)
    train, val = data.random_split(ds.train, [200, 100], seed=3)
    return (train.flat_float() / 255, train.labels), (val.flat_float() / 255, val.labels)


@pytest.mark.parametrize("bn", [False, True])
def test_fast_path_equals_dataset_path(small_split, bn):
    """Same init, same batch order (the DataLoader's and ResidentLoader's randperm): same history."""
    (xt, yt), (xv, yv) = small_split
    runs = []
    for path in ("dataset", "resident"):
        torch.manual_seed(5)
        net = (ref.build_net_bn if bn else ref.build_net)(32)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        if path == "dataset":
            h = ref.fit(net, torch.utils.data.TensorDataset(xt, yt), torch.utils.data.TensorDataset(xv, yv), opt,
                        epochs=3, batch_size=32, generator=torch.Generator().manual_seed(9), progress=False)
        else:
            h = ref.fit_resident(net, (xt, yt), (xv, yv), opt, epochs=3, batch_size=32, seed=9, progress=False)
        runs.append(h)
    slow, fast = runs
    assert set(slow) == set(fast)
    tol = bands.tolerance("hyperparams.fast_path")
    for key in slow:
        if key != "time":
            torch.testing.assert_close(torch.tensor(fast[key], dtype=torch.float64), torch.tensor(slow[key], dtype=torch.float64),
                                       **tol, msg=lambda m, key=key: f"{key}: {m}")


def test_metrics_are_weighted_by_batch_size(small_split):
    """200 = 6*32 + 8: the reference's accuracy is correct/N; the seed's unweighted mean differs."""
    (xt, yt), (xv, yv) = small_split
    torch.manual_seed(0)
    net = ref.build_net(32)
    h = ref.fit_resident(net, (xt, yt), (xv, yv), torch.optim.SGD(net.parameters(), lr=0.0), epochs=1,
                         batch_size=32, seed=0, progress=False)
    with torch.no_grad():
        net.eval()
        out = net(xt)  # (200, 10); lr = 0: the weights never moved
    correct = (out.argmax(1) == yt).float().mean().item()
    torch.testing.assert_close(h["train accuracy"][0], correct, **bands.tolerance("hyperparams.fast_path"))
    torch.testing.assert_close(h["train loss"][0], torch.nn.functional.cross_entropy(out, yt).item(),
                               **bands.tolerance("hyperparams.fast_path"))
    torch.testing.assert_close(h["train 0: Linear output mean"][0], net[0](xt).mean().item(),
                               **bands.tolerance("hyperparams.fast_path"))
    assert h["train loss unweighted"][0] != h["train loss"][0]


# -- the study -----------------------------------------------------------------------------------


def test_dry_run_writes_every_output(tmp_path):
    result = ref.main(ref.get_args_parser().parse_args(["--dry-run", "--out", str(tmp_path), "--no-progress"]))
    for name in ("history.csv", "results.csv", "results.md", "comparison.md", "answers.json", "optimizers.png",
                 "batch_size.png", "batchnorm.png", "augmentation.png", "width.png", "samples.png",
                 "layer_stats_with_batchnorm.png", "layer_stats_without_batchnorm.png"):
        assert (tmp_path / name).is_file(), name
    answers = json.loads((tmp_path / "answers.json").read_text())
    assert answers["2.8e parameters of width 128"]["count"] == 109386
    assert result["source"] == data.FASHION


def _require_bands(budget):
    if not any(k.startswith(f"hyperparams.{budget}.") for k in bands.BANDS):
        pytest.skip(f"no {budget}-budget bands stored yet: run `labcheck reproduce hyperparams"
                    f"{' --quick' if budget == 'quick' else ''} --bands-seeds 0 1 2`")


def _check_study_bands(result, budget):
    source = result["source"]
    failures = []
    for name, value in ref.band_metrics(result).items():
        key = f"hyperparams.{budget}.{name}"
        if key in bands.BANDS:
            try:
                bands.check_band(key, value, source)
            except bands.BandError as e:
                failures.append(str(e))
    assert not failures, "\n".join(failures)


def test_quick_study_is_within_its_bands(tmp_path):
    _require_bands("quick")
    result = ref.main(ref.get_args_parser().parse_args(["--quick", "--out", str(tmp_path), "--no-progress"]))
    _check_study_bands(result, "quick")


@pytest.mark.slow
def test_full_study_is_within_its_bands(tmp_path):
    _require_bands("full")
    result = ref.main(ref.get_args_parser().parse_args(["--out", str(tmp_path), "--no-progress"]))
    _check_study_bands(result, "full")
