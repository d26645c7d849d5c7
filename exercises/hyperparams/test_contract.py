"""Graded contract tests for `hyperparams` (a2_fashion_hyperparams.txt; interface in CONTRACTS.md).

Points follow the assignment where it gives them (2.3b build_net: 2, 2.6a build_net_bn: 1, 2.8a width: 1,
2.8e parameter count: 1); NoisyDataset (given in 2.7 as course code) and fit (2.4) are weighted by how
much the later experiments depend on them. Every verdict is computed here from the probes' plain data.
"""
import pytest
import torch

from labcheck import bands, data

pytestmark = pytest.mark.exercise("hyperparams")

SIDE = 28
N_IMAGES = 24  # distinct random images: no flip or roll of one equals another
DRAWS = 30  # passes over the NoisyDataset: 720 augmented samples per test
OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
NOISY_DEFAULTS = {"noise_sigma": 0, "flip_horizontal": False, "shift": False}  # the contract's NoisyDataset defaults
FIT_DEFAULTS = {"epochs": 25, "batch_size": 10, "device": "cpu"}  # the contract's fit defaults


def _expected_layers(width, bn=False):
    h2 = width // 2
    layers = [["Linear", 784, width]] + ([["BatchNorm1d", width]] if bn else []) + [["ReLU"], ["Linear", width, h2]]
    return layers + ([["BatchNorm1d", h2]] if bn else []) + [["ReLU"], ["Linear", h2, 10]]


def _inputs(n=8, seed=0):
    return torch.rand(n, 784, generator=torch.Generator().manual_seed(seed))  # (n, 784) in [0, 1)


def _images(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(N_IMAGES, 784, generator=g), torch.randint(0, 10, (N_IMAGES,), generator=g)


def _draws(lab, **kw):
    images, labels = _images()
    got = lab.call("noisy_draws", images=images, labels=labels, draws=DRAWS, seed=3, **kw)
    source = images.repeat(DRAWS, 1)  # (DRAWS*N, 784): the image each draw came from
    return got, source, labels.repeat(DRAWS)


def _grid(x):
    return x.reshape(-1, SIDE, SIDE)  # (M, 28, 28)


def _classify(x, img):
    """Name the transform of img (28x28) that gives x: 'id', 'hflip', 'vflip', or ('roll', dy, dx[, 'hflip'])."""
    for name, base in (("id", img), ("hflip", img.flip(1)), ("vflip", img.flip(0))):
        if torch.equal(x, base):
            return name
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            for flipped in (False, True):
                base = img.flip(1) if flipped else img
                if torch.equal(x, torch.roll(base, (dy, dx), (0, 1))):
                    return ("roll", dy, dx) + (("hflip",) if flipped else ())
    return None


@pytest.mark.public
@pytest.mark.graded(points=2)
def test_build_net_architecture(lab):
    """2.3b: Sequential 784-128-64-10 with ReLUs between and no activation after the last layer."""
    x = _inputs()
    got = lab.call("describe_net", builder="build_net", width=None, x=x)
    assert got["class"] == "Sequential", f"build_net() returned a {got['class']}, expected torch.nn.Sequential"
    want = _expected_layers(128)
    assert tuple(got["logits"].shape) == (len(x), 10), f"output shape {tuple(got['logits'].shape)}, expected ({len(x)}, 10)"
    last = got["layers"][-1][0] if got["layers"] else None
    if last in ("Softmax", "LogSoftmax", "Sigmoid", "ReLU"):
        pytest.fail(f"build_net ends with {last}: the network must output raw logits, because cross_entropy "
                    "applies log-softmax itself (seed 2.2b / 2.3f)")
    assert got["layers"] == want, f"build_net() layers are {got['layers']}, expected {want}"


@pytest.mark.graded(points=1)
def test_build_net_width(lab):
    """2.8a: build_net(width) has hidden layers width and width // 2."""
    x = _inputs()
    for width in (16, 40, 512):
        got = lab.call("describe_net", builder="build_net", width=width, x=x)
        want = _expected_layers(width)
        assert got["layers"] == want, f"build_net({width}) layers are {got['layers']}, expected {want}"


@pytest.mark.graded(points=1)
def test_build_net_bn_order(lab):
    """2.6a: BatchNorm1d after each hidden Linear and before its ReLU; no BatchNorm on the output."""
    x = _inputs()
    got = lab.call("describe_net", builder="build_net_bn", width=None, x=x)
    want = _expected_layers(128, bn=True)
    names = [layer[0] for layer in got["layers"]]
    for i, name in enumerate(names[:-1]):
        if name == "ReLU" and names[i + 1] == "BatchNorm1d":
            pytest.fail(f"build_net_bn has BatchNorm1d after ReLU (layers {names}): normalise the Linear's output, "
                        "then apply the ReLU (seed 2.6a)")
    assert got["layers"] == want, f"build_net_bn() layers are {got['layers']}, expected {want}"
    assert tuple(got["logits"].shape) == (len(x), 10)


@pytest.mark.public
@pytest.mark.graded(points=1)
def test_count_parameters(lab):
    """2.8e: every weight and bias counts (109,386 for width 128), BatchNorm's affine parameters too."""
    specs = [
        [["linear", 784, 128, True], ["relu"], ["linear", 128, 64, True], ["relu"], ["linear", 64, 10, True]],
        [["linear", 784, 16, False], ["relu"], ["linear", 16, 10, True]],
        [["linear", 784, 32, True], ["bn", 32], ["relu"], ["linear", 32, 10, True]],
        [["relu"]],
    ]
    got = lab.call("count_parameters_of", specs=specs)
    want = lab.expect("count_parameters_of", specs=specs)
    if got[0] == 784 * 128 + 128 * 64 + 64 * 10:
        pytest.fail(f"count_parameters(build_net(128)) = {got[0]}: the {want[0] - got[0]} biases are missing")
    assert got == want, f"count_parameters gave {got}, expected {want} for nets {specs}"


@pytest.mark.graded(points=1)
def test_noisy_dataset_noise(lab):
    """2.7: pixel noise is N(0, sigma), fresh for every access, and sigma = 0 changes nothing."""
    got, source, _ = _draws(lab, noise_sigma=0.0, flip_horizontal=False, shift=False)
    assert torch.equal(got["x"], source), "NoisyDataset(noise_sigma=0) changed the images"
    sigma = 0.2
    got, source, _ = _draws(lab, noise_sigma=sigma, flip_horizontal=False, shift=False)
    noise = got["x"] - source  # (DRAWS*N, 784)
    torch.testing.assert_close(noise.std().item(), sigma, **bands.tolerance("hyperparams.noise_std"),
                               msg=lambda m: f"noise std {noise.std().item():.4f}, expected sigma = {sigma}: {m}")
    torch.testing.assert_close(noise.mean().item(), 0.0, **bands.tolerance("hyperparams.noise_mean"),
                               msg=lambda m: f"noise mean {noise.mean().item():.4f}, expected 0: {m}")
    first, second = noise[:N_IMAGES], noise[N_IMAGES : 2 * N_IMAGES]
    assert not torch.equal(first, second), "every access returned the same noise: draw it in __getitem__"


@pytest.mark.graded(points=1)
def test_noisy_dataset_flip(lab):
    """2.7: a horizontal mirror (columns reversed) with probability 0.5."""
    got, source, _ = _draws(lab, noise_sigma=0.0, flip_horizontal=True, shift=False)
    kinds = [_classify(x, img) for x, img in zip(_grid(got["x"]), _grid(source))]
    if "vflip" in kinds:
        pytest.fail("some images were mirrored vertically (rows reversed): flip dims=(1,) of the 28x28 image")
    bad = [k for k in kinds if k not in ("id", "hflip")]
    assert not bad, f"{len(bad)} of {len(kinds)} draws are neither the image nor its horizontal mirror (e.g. {bad[0]})"
    rate = kinds.count("hflip") / len(kinds)
    torch.testing.assert_close(rate, 0.5, **bands.tolerance("hyperparams.flip_rate"),
                               msg=lambda m: f"flipped {rate:.2f} of the draws, expected probability 0.5: {m}")


@pytest.mark.graded(points=1)
def test_noisy_dataset_shift(lab):
    """2.7: torch.roll by (dy, dx), each uniform on {-1, 0, 1}: a shift of at most one pixel."""
    got, source, _ = _draws(lab, noise_sigma=0.0, flip_horizontal=False, shift=True)
    kinds = [_classify(x, img) for x, img in zip(_grid(got["x"]), _grid(source))]
    kinds = [("roll", 0, 0) if k == "id" else k for k in kinds]
    far = [k for k in kinds if isinstance(k, tuple) and len(k) == 3 and max(abs(k[1]), abs(k[2])) > 1]
    if far:
        pytest.fail(f"{len(far)} draws were rolled by more than one pixel, e.g. (dy, dx) = {far[0][1:]}: "
                    "draw the shifts from torch.randint(-1, 2, (2,))")
    bad = [k for k in kinds if not (isinstance(k, tuple) and len(k) == 3)]
    assert not bad, (f"{len(bad)} of {len(kinds)} draws are not a torch.roll of the image by at most one pixel "
                     f"(e.g. {bad[0]}; a zero-filled shift or a flip?)")
    for dy, dx in OFFSETS:
        rate = kinds.count(("roll", dy, dx)) / len(kinds)
        torch.testing.assert_close(rate, 1 / 9, **bands.tolerance("hyperparams.shift_rate"),
                                   msg=lambda m: f"roll {(dy, dx)} in {rate:.3f} of the draws, expected 1/9: {m}")


@pytest.mark.public
@pytest.mark.graded(points=1)
def test_noisy_dataset_labels_unchanged(lab):
    """2.7: augmentation never touches the labels, whatever the options."""
    got, _, labels = _draws(lab, noise_sigma=0.1, flip_horizontal=True, shift=True)
    changed = (got["y"] != labels).sum().item()
    assert changed == 0, f"NoisyDataset changed {changed} of {len(labels)} labels: return the original y"


@pytest.mark.graded(points=1)
def test_noisy_dataset_defaults(lab):
    """2.7: each default of NoisyDataset is the contract's: with one option left out it draws exactly what it draws
    with the contract's value passed (noise_sigma=0, flip_horizontal=False, shift=False)."""
    images, labels = _images()
    got = lab.call("noisy_defaults", images=images, labels=labels, draws=4, seed=3, settings=NOISY_DEFAULTS)
    wrong = [f"{name}={NOISY_DEFAULTS[name]!r}" for name, run in got["omitted"].items()
             if not (torch.equal(run["x"], got["explicit"]["x"]) and torch.equal(run["y"], got["explicit"]["y"]))]
    assert not wrong, (f"NoisyDataset draws differently when an option is left to its default than with the contract's "
                       f"default passed: {', '.join(wrong)}. Is the signature NoisyDataset(dataset, noise_sigma=0, "
                       "flip_horizontal=False, shift=False)?")


def _fit_data():
    ds = data.load(data.FASHION)
    train, val = data.random_split(ds.train, [96, 64], seed=7)
    return dict(x_train=train.flat_float() / 255, y_train=train.labels, x_val=val.flat_float() / 255, y_val=val.labels)


@pytest.mark.public
@pytest.mark.graded(points=1)
def test_fit_history_keys(lab):
    """2.4: fit returns one entry per epoch under the course's keys, steps cumulative, time increasing."""
    epochs, batch_size = 3, 32
    got = lab.call("fit_run", **_fit_data(), epochs=epochs, batch_size=batch_size, lr=0.05, batchnorm=False)
    history = got["history"]
    missing = [k for k in ("train loss", "train accuracy", "validation loss", "validation accuracy",
                           "train steps", "time", "epochs") if k not in history]
    assert not missing, f"fit's history lacks {missing} (it has {got['keys']})"
    for key, values in history.items():
        assert len(values) == epochs, f"history[{key!r}] has {len(values)} entries for {epochs} epochs"
    assert history["train steps"] == [3.0, 6.0, 9.0], f"train steps {history['train steps']}, expected [3, 6, 9] (96 / 32 per epoch)"
    assert history["epochs"] == [0.0, 1.0, 2.0], f"epochs {history['epochs']}, expected [0, 1, 2]"
    assert all(b >= a for a, b in zip(history["time"], history["time"][1:])), "history['time'] must not decrease"
    assert 0 <= history["time"][0] and history["time"][-1] <= got["wall_time"] * 1.01 + 0.01, (
        f"history['time'] = {[round(t, 3) for t in history['time']]} but fit ran for {got['wall_time']:.3f} s: "
        "store the seconds since fit started (time.time() - start_time)")
    accs = history["train accuracy"] + history["validation accuracy"]
    assert all(0.0 <= a <= 1.0 for a in accs), f"accuracies outside [0, 1]: {accs}"


@pytest.mark.graded(points=2)
def test_fit_trains_like_reference(lab):
    """2.4: full-batch SGD on a BatchNorm net: same losses and accuracies as the reference's fit.

    One batch per epoch makes the run independent of the shuffle order; BatchNorm makes the validation
    numbers depend on eval mode, and several epochs expose gradients that are never zeroed.
    """
    kw = dict(**_fit_data(), epochs=6, batch_size=96, lr=0.1, batchnorm=True)
    got = lab.call("fit_run", **kw)["history"]
    want = lab.expect("fit_run", **kw)["history"]
    tol = bands.tolerance("hyperparams.fit_metrics")
    keys = ("train loss", "train accuracy", "validation loss", "validation accuracy")
    missing = [key for key in keys if key not in got]
    assert not missing, f"fit's history lacks {missing}"
    close = lambda key: abs(got[key][0] - want[key][0]) <= tol["atol"] + tol["rtol"] * abs(want[key][0])
    if close("train loss") and not close("validation loss"):
        pytest.fail(f"validation loss {got['validation loss'][0]:.4f} at epoch 0, reference {want['validation loss'][0]:.4f}, "
                    "while the training loss agrees: is the validation phase run in train mode (net.eval())?")
    for key in keys:
        torch.testing.assert_close(torch.tensor(got[key]), torch.tensor(want[key]), **tol,
                                   msg=lambda m, key=key: f"history[{key!r}] = {[round(v, 4) for v in got[key]]}, reference "
                                   f"{[round(v, 4) for v in want[key]]} (optimizer.zero_grad() each step? eval mode "
                                   f"for validation?): {m}")


@pytest.mark.graded(points=1)
def test_fit_defaults(lab):
    """2.4: each default of fit is the contract's: with one setting left out it trains exactly as with the contract's
    value passed (epochs=25, batch_size=10, device='cpu'; 41 training images, 125 steps a run)."""
    d = _fit_data()
    small = dict(x_train=d["x_train"][:41], y_train=d["y_train"][:41], x_val=d["x_val"][:19], y_val=d["y_val"][:19])
    got = lab.call("fit_defaults", **small, lr=0.05, settings=FIT_DEFAULTS)
    keys = ("train loss", "train accuracy", "validation loss", "validation accuracy", "train steps", "epochs")
    explicit = {k: got["explicit"]["history"].get(k) for k in keys}
    wrong = []
    for name, run in got["omitted"].items():
        history = {k: run["history"].get(k) for k in keys}
        if history != explicit:
            steps = history["train steps"] or []
            detail = (f" ({len(steps)} epochs, {steps[0]:g} steps each)" if steps and steps != explicit["train steps"]
                      else "")
            wrong.append(f"{name}={FIT_DEFAULTS[name]!r}{detail}")
    assert not wrong, (f"fit trains differently when a setting is left to its default than with the contract's default "
                       f"passed: {', '.join(wrong)}. Is the signature fit(net, train, validation, optimizer, epochs=25, "
                       "batch_size=10, device='cpu')?")
