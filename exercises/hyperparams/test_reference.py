"""Tests of exercises/hyperparams/reference.py: NoisyDataset and count_parameters properties, the fast path against
the Dataset path, the dry run, that the study's numbers do not depend on its number of processes, and the
study itself on the held-out seed (quick budget by default, full budget with -m slow): its headline answers
and its bands."""
import json
import math
import statistics

import pytest
import torch
from hypothesis import given, strategies as st
from scipy import stats

from labcheck import bands, data
from labcheck.exercises import get
from strategies import SEEDS, rare_counterexamples

pytestmark = pytest.mark.exercise("hyperparams")

ref = get("hyperparams").load_reference()

SIGMAS = st.floats(min_value=0.05, max_value=0.5, allow_nan=False, allow_infinity=False)
WIDTHS = st.integers(min_value=2, max_value=600)
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


NOISE_ALPHA = bands.TOLERANCES["hyperparams.noise_moments"]["false_failure"]  # per check, see the bands file


@rare_counterexamples
@given(sigma=SIGMAS, seed=SEEDS)
def test_noise_has_the_requested_std_and_zero_mean(sigma, seed):
    """n = 80 * 784 draws of N(0, sigma): |mean| <= z(1 - a/2) sigma / sqrt(n), and (n - 1) s^2 / sigma^2 inside
    the chi-square(n - 1) interval at level a each (a = NOISE_ALPHA): a correct NoisyDataset fails either check
    of one example with probability a, and the draws are seeded."""
    x, _, out, _ = draws(seed, passes=10, noise_sigma=sigma)
    noise = (out - x).double().flatten()  # (80 * 784,); float32 rounding of x + noise is ~1e-7, far below sigma / sqrt(n)
    n = noise.numel()
    z = statistics.NormalDist().inv_cdf(1 - NOISE_ALPHA / 2)
    assert abs(noise.mean().item()) <= z * sigma / math.sqrt(n), f"mean {noise.mean().item():.3g} for sigma {sigma}"
    scaled_variance = (n - 1) * noise.var().item() / sigma**2
    lo, hi = stats.chi2.ppf(NOISE_ALPHA / 2, n - 1), stats.chi2.ppf(1 - NOISE_ALPHA / 2, n - 1)
    assert lo <= scaled_variance <= hi, f"std {noise.std().item():.4g} for sigma {sigma}"


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
                 "batch_size.png", "batchnorm.png", "augmentation.png", "width.png", "samples.png", "variance.png",
                 "layer_stats_with_batchnorm.png", "layer_stats_without_batchnorm.png",
                 "intro_adam_lr0.01_batch16.png", "test_vs_validation.png"):
        assert (tmp_path / name).is_file(), name
    answers = json.loads((tmp_path / "answers.json").read_text())
    assert answers["2.8e parameters of width 128"]["count"] == 109386
    assert answers["2.9b independent test set"]["selected on validation"] in answers["2.9b independent test set"]["runs"]
    assert result["data_source"] == data.FASHION
    json.dumps(result)  # the result is plain data


def test_flags_map_to_the_config_and_quick_overrides_them():
    parser = ref.get_args_parser()
    full = ref.Config.from_args(parser.parse_args([]))
    assert (full.intro_epochs, full.intro_lr, full.intro_batch_size, full.epochs, full.out) == (100, 0.01, 16, 150, None)
    quick = ref.Config.from_args(parser.parse_args(["--quick", "--epochs", "7", "--seed", "3"]))
    assert quick.epochs == ref.QUICK["epochs"] and quick.seed == 3
    assert len(ref.plan(full)) == 43  # the seed's 42 runs and 2.3d


def test_results_do_not_depend_on_the_number_of_processes():
    """Every run seeds itself and uses one thread: 1 process and 2 processes give identical numbers."""
    argv = ["--dry-run", "--no-progress", "--experiments", "optimizers", "batchnorm", "intro", "--seed", "5"]
    one, two = (ref.main(ref.get_args_parser().parse_args([*argv, "--workers", str(w)])) for w in (1, 2))
    untimed = lambda result: [{k: v for k, v in h.items() if k != "time"} for h in result["histories"]]  # noqa: E731
    assert untimed(one) == untimed(two)  # every epoch's numbers, bit for bit
    assert ref.band_metrics(one) == ref.band_metrics(two)


def _study(budget: str, tmp_path_factory) -> dict:
    # The quick study writes no files: its outputs (mostly the plots) took 10 s of its 30 s on its own, and
    # test_dry_run_writes_every_output already writes every one of them.
    argv = ["--seed", str(bands.HELD_OUT_SEED), "--no-progress", "--workers", "2"]
    if budget == "full":
        argv += ["--out", str(tmp_path_factory.mktemp(f"hyperparams_{budget}"))]
    return ref.main(ref.get_args_parser().parse_args(argv + (["--quick"] if budget == "quick" else [])))


def _check_headline_answers(metrics: dict) -> None:
    """The exercise's answers, as orderings within one study (no thresholds)."""
    working = min(metrics["adam_lr0.01.val_acc"], metrics["adam_lr0.001.val_acc"])
    assert metrics["adam_lr0.1.val_acc"] < working, "2.5d: Adam at lr 0.1 should collapse below Adam at 0.01 / 0.001"
    assert metrics["batchnorm.train_acc"] > metrics["no_batchnorm.train_acc"], "2.6: batchnorm should train faster"
    assert metrics["aug_noise0.2_shift_flip.train_acc"] < metrics["aug_noise0.train_acc"], \
        "2.7: noise, shift and flip together should make the training set harder to fit"
    assert metrics["width512.train_acc"] > metrics["width16.train_acc"], "2.8: a wider network should fit the training set better"


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    return _study("quick", tmp_path_factory)


def test_quick_study_gives_the_headline_answers(quick_study):
    _check_headline_answers(ref.band_metrics(quick_study))


def test_quick_study_is_within_its_bands(quick_study, within_bands):
    within_bands("hyperparams", "quick", quick_study)


@pytest.mark.slow
def test_full_study_gives_the_headline_answers_and_stays_in_its_bands(tmp_path_factory, within_bands):
    study = _study("full", tmp_path_factory)
    metrics = ref.band_metrics(study)
    _check_headline_answers(metrics)
    # 2.9b: the run chosen on validation is scored on the test split without having been chosen for it
    assert study["answers"]["2.9b independent test set"]["its test accuracy"] == metrics["selected.test_acc"]
    within_bands("hyperparams", "full", study)


def test_every_seed_claim_names_a_metric_of_the_full_study():
    """exercises/hyperparams/claims.json compares the seed's table with band_metrics of the full study: every
    metric it names is '<run key of plan(Config())>.<a per-run metric of band_metrics>' or a study summary."""
    dry = ref.band_metrics(ref.main(ref.get_args_parser().parse_args(["--dry-run", "--no-progress"])))
    dry_runs = {r.key for r in ref.plan(ref.Config.from_args(ref.get_args_parser().parse_args(["--dry-run"])))}
    per_run = {name.rpartition(".")[2] for name in dry if name.rpartition(".")[0] in dry_runs}  # keys hold dots
    summaries = {name for name in dry if name.rpartition(".")[0] not in dry_runs}
    full_runs = {r.key for r in ref.plan(ref.Config())}
    claimed = json.loads(get("hyperparams").claims_path.read_text())["claims"]
    for claim in claimed:
        for metric in filter(None, (claim["metric"], claim["compare"].partition(":")[2])):
            run, _, rest = metric.rpartition(".")
            assert metric in summaries or (run in full_runs and rest in per_run), f"{claim['id']}: {metric}"
    assert {c["metric"].rpartition(".")[0] for c in claimed if c["metric"]} >= {r.key for r in ref.plan(ref.Config()) if r.label in ref.SEED_NUMBERS}
