"""Graded contract tests for `hyperparams` (a2_fashion_hyperparams.txt; interface in CONTRACTS.md).

Points follow the assignment where it gives them (2.3b build_net: 2, 2.6a build_net_bn: 1, 2.8a width: 1,
2.8e parameter count: 1); NoisyDataset (given in 2.7 as course code) and fit (2.4) are weighted by how
much the later experiments depend on them. Every verdict is computed here from the probes' plain data.

Every input is drawn from the run's secret (`lab.seed`, `lab.rng`: labcheck.secret): images, widths, layer
specs, data splits, batch sizes and learning rates, so answers recorded on one run answer nothing on the next.
The networks are judged by what they compute, recomputed here from their own parameters (probes.py), never by
the layer types or sizes the worker could report.
"""
import pytest
import torch

from labcheck import bands, data
from labcheck.exercises import get

probes = get("hyperparams").probes_module()

pytestmark = pytest.mark.exercise("hyperparams")

SIDE = 28
N_IMAGES = 24  # distinct random images: no flip or roll of one equals another
DRAWS = 30  # passes over the NoisyDataset: 720 augmented samples per test
OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def _inputs(lab, label: str, n: int = 16):
    return torch.rand(n, 784, generator=torch.Generator().manual_seed(lab.seed(label, "inputs")))  # (n, 784) in [0, 1)


def _images(lab):
    g = torch.Generator().manual_seed(lab.seed("noisy images"))
    return torch.rand(N_IMAGES, 784, generator=g), torch.randint(0, 10, (N_IMAGES,), generator=g)


def _draws(lab, **kw):
    images, labels = _images(lab)
    got = lab.call("noisy_draws", images=images, labels=labels, draws=DRAWS, seed=lab.seed("noisy draws"), **kw)
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


def _layers(width, bn=False) -> str:
    h2 = width // 2
    norm = (lambda n: f"-BatchNorm1d({n})") if bn else (lambda n: "")
    return f"Linear(784, {width}){norm(width)}-ReLU-Linear({width}, {h2}){norm(h2)}-ReLU-Linear({h2}, 10)"


def _net_problems(got, builder: str, width, bn: bool = False, mode: str = "eval") -> list[str]:
    """What differs between the network's outputs and the contract's layers computed from its own parameters."""
    call = f"{builder}({'' if width is None else width})"
    want_layers = _layers(128 if width is None else width, bn)
    if got["expected"] is None:
        return [f"{call}'s parameters have shapes {got['shapes']}; {want_layers} has {got['expected_shapes']}"]
    out = got[mode]
    if tuple(out.shape) != tuple(got["expected"][mode].shape):
        return [f"{call} outputs shape {tuple(out.shape)} for {len(out)} inputs, expected ({len(out)}, 10)"]
    tol = bands.tolerance("hyperparams.forward")
    if torch.allclose(out.double(), got["expected"][mode], **tol):
        return []
    for name, variant in got.get("variants", {}).items():
        if mode == "eval" and torch.allclose(out.double(), variant, **tol):
            return [f"{call} ends with {name}: the network must output raw logits, because cross_entropy applies "
                    "log-softmax itself (seed 2.2b / 2.3f)"]
    diff = (out.double() - got["expected"][mode]).abs().max().item()
    return [f"{call} in {mode} mode does not compute {want_layers} from its own parameters (max difference "
            f"{diff:.3g})"]


@pytest.mark.public
@pytest.mark.graded(points=2)
def test_build_net_architecture(lab):
    """2.3b: Sequential 784-128-64-10 with ReLUs between and no activation after the last layer."""
    got = lab.call("net_function", builder="build_net", width=None, x=_inputs(lab, "build_net"),
                   seed=lab.seed("build_net"))
    problems = _net_problems(got, "build_net", None)
    first = got["first_layer"]
    if isinstance(first, str):
        problems.append(f"the course's code reaches the first layer as net[0] (net[0].weight.grad), but net[0] of "
                        f"build_net()'s {got['type']} fails: {first}; return a torch.nn.Sequential of the layers")
    elif got["expected"] is not None and not (first.shape == got["first_expected"].shape and torch.allclose(
            first.double(), got["first_expected"], **bands.tolerance("hyperparams.forward"))):
        problems.append("net[0] of build_net() is not the first Linear(784, 128): the course's code reaches it as "
                        "net[0]; return torch.nn.Sequential(Linear, ReLU, Linear, ReLU, Linear)")
    assert not problems, "; ".join(problems)


@pytest.mark.graded(points=1)
def test_build_net_width(lab):
    """2.8a: build_net(width) has hidden layers width and width // 2."""
    rng = lab.rng("build_net width")
    widths = (rng.randint(8, 40), 2 * rng.randint(20, 50) + 1, rng.randint(200, 512))  # an odd one: width // 2
    x = _inputs(lab, "build_net width")
    for width in widths:
        got = lab.call("net_function", builder="build_net", width=width, x=x, seed=lab.seed("build_net width", width))
        problems = _net_problems(got, "build_net", width)
        assert not problems, "; ".join(problems)


@pytest.mark.graded(points=1)
def test_build_net_bn_order(lab):
    """2.6a: BatchNorm1d after each hidden Linear and before its ReLU; no BatchNorm on the output."""
    got = lab.call("net_function", builder="build_net_bn", width=None, x=_inputs(lab, "build_net_bn", 32),
                   seed=lab.seed("build_net_bn"))
    problems = _net_problems(got, "build_net_bn", None, bn=True, mode="train")
    if problems and got["expected"] is not None and torch.allclose(
            got["train"].double(), got["bn_after_relu"], **bands.tolerance("hyperparams.forward")):
        pytest.fail("build_net_bn has BatchNorm1d after ReLU (its train-mode output normalises the ReLU's output): "
                    "normalise the Linear's output, then apply the ReLU (seed 2.6a)")
    problems = problems or _net_problems(got, "build_net_bn", None, bn=True, mode="eval")
    assert not problems, "; ".join(problems)


@pytest.mark.public
@pytest.mark.graded(points=1)
def test_count_parameters(lab):
    """2.8e: every weight and bias counts (109,386 for width 128), BatchNorm's affine parameters too."""
    rng = lab.rng("count_parameters")
    w, v, u = rng.randint(64, 256), rng.randint(8, 48), rng.randint(16, 64)
    specs = [
        [["linear", 784, w, True], ["relu"], ["linear", w, w // 2, True], ["relu"], ["linear", w // 2, 10, True]],
        [["linear", 784, v, False], ["relu"], ["linear", v, 10, True]],
        [["linear", 784, u, True], ["bn", u], ["relu"], ["linear", u, 10, True]],
        [["relu"]],
    ]
    got = lab.call("count_parameters_of", specs=specs)
    want = lab.expect("count_parameters_of", specs=specs)
    if got[0] == 784 * w + w * (w // 2) + (w // 2) * 10:
        pytest.fail(f"count_parameters(build_net({w})) = {got[0]}: the {want[0] - got[0]} biases are missing")
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


def _fit_data(lab, label: str):
    ds = data.load(data.FASHION)
    train, val = data.random_split(ds.train, [96, 64], seed=lab.seed(label, "split"))
    return dict(x_train=train.flat_float() / 255, y_train=train.labels, x_val=val.flat_float() / 255, y_val=val.labels)


@pytest.mark.public
@pytest.mark.graded(points=1)
def test_fit_history_keys(lab):
    """2.4: fit returns one entry per epoch under the course's keys, steps cumulative, time increasing."""
    rng = lab.rng("fit history")
    epochs, batch_size = 3, rng.choice([16, 24, 32, 48])  # whole batches of the 96 training images
    got = lab.call("fit_run", **_fit_data(lab, "fit history"), epochs=epochs, batch_size=batch_size,
                   lr=round(rng.uniform(0.02, 0.1), 3), batchnorm=False, seed=lab.seed("fit history"))
    history = got["history"]
    missing = [k for k in ("train loss", "train accuracy", "validation loss", "validation accuracy",
                           "train steps", "time", "epochs") if k not in history]
    assert not missing, f"fit's history lacks {missing} (it has {got['keys']})"
    for key, values in history.items():
        assert len(values) == epochs, f"history[{key!r}] has {len(values)} entries for {epochs} epochs"
    steps = [float((e + 1) * (96 // batch_size)) for e in range(epochs)]
    assert history["train steps"] == steps, (f"train steps {history['train steps']}, expected {steps} "
                                             f"(96 / {batch_size} per epoch, counted from the start)")
    assert history["epochs"] == [0.0, 1.0, 2.0], f"epochs {history['epochs']}, expected [0, 1, 2]"
    assert all(b >= a for a, b in zip(history["time"], history["time"][1:])), "history['time'] must not decrease"
    accs = history["train accuracy"] + history["validation accuracy"]
    assert all(0.0 <= a <= 1.0 for a in accs), f"accuracies outside [0, 1]: {accs}"


@pytest.mark.graded(points=2)
def test_fit_trains_like_reference(lab):
    """2.4: full-batch SGD on a BatchNorm net: same losses and accuracies as the reference's fit.

    One batch per epoch makes the run independent of the shuffle order; BatchNorm makes the validation
    numbers depend on eval mode, and several epochs expose gradients that are never zeroed.
    """
    kw = dict(**_fit_data(lab, "fit trains"), epochs=6, batch_size=96,
              lr=round(lab.rng("fit trains").uniform(0.05, 0.2), 3), batchnorm=True, seed=lab.seed("fit trains"))
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
