"""Tests of exercises/gradnorms/reference.py: properties of the contract names, the --dry-run, and the result bands.

Properties (hypothesis): sensing_grad equals torch.autograd of sensing_loss; the measurements are linear in X
and equal sum(A_i * X); get_gradient_norms equals torch.linalg.norm of each Linear weight's gradient in
forward order; the MLP outputs log-probabilities; gradient_descent's distances describe its iterates, divergent
runs included. The experiment on the held-out seed (quick by default, full with `-m slow`): the headline answer
(a smaller initialization alpha ends at a lower effective rank, nearer X*) and exercises/gradnorms/bands.json.
"""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from labcheck import bands
from labcheck.exercises import get
_probes = get("gradnorms").probes_module()
linears_in_call_order = _probes.linears_in_call_order
from strategies import SEEDS, rare_counterexamples

SENSING_SHAPES = st.tuples(st.integers(1, 8), st.integers(1, 5), st.integers(1, 30))  # (d, R, m)
HIDDEN_SIZES = st.lists(st.integers(1, 24), min_size=1, max_size=4)
SCALARS = st.floats(min_value=-3.0, max_value=3.0, allow_nan=False, allow_infinity=False)


@pytest.fixture(scope="module")
def ref():
    return get("gradnorms").load_reference()


def tol(name: str) -> dict:
    return bands.tolerance(f"gradnorms.{name}")


def _sensing_data(seed: int, d: int, R: int, m: int):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(m, d, d, generator=gen)  # (m, d, d)
    U = torch.randn(d, R, generator=gen)  # (d, R)
    y = torch.randn(m, generator=gen)  # (m,)
    return A, U, y


# ---------------------------------------------------------------------------------------------
# Matrix sensing properties


@given(shape=SENSING_SHAPES, seed=SEEDS)
def test_sensing_grad_equals_autograd(ref, shape, seed):
    A, U, y = (t.double() for t in _sensing_data(seed, *shape))  # float64: the formula, not float32 rounding
    U.requires_grad_(True)
    (auto,) = torch.autograd.grad(ref.sensing_loss(U, A, y), U)
    torch.testing.assert_close(ref.sensing_grad(U.detach(), A, y), auto, **tol("autograd"))


@given(shape=SENSING_SHAPES, seed=SEEDS, a=SCALARS, b=SCALARS)
def test_measurements_are_linear(ref, shape, seed, a, b):
    d, _, m = shape
    gen = torch.Generator().manual_seed(seed)
    A, X, Y = torch.randn(m, d, d, generator=gen), torch.randn(d, d, generator=gen), torch.randn(d, d, generator=gen)
    lhs = ref.sensing_measurements(A, a * X + b * Y)
    rhs = a * ref.sensing_measurements(A, X) + b * ref.sensing_measurements(A, Y)
    torch.testing.assert_close(lhs, rhs, **tol("sensing_measurements"))


@given(shape=SENSING_SHAPES, seed=SEEDS)
def test_measurements_are_trace_inner_products(ref, shape, seed):
    d, _, m = shape
    gen = torch.Generator().manual_seed(seed)
    A, X = torch.randn(m, d, d, generator=gen), torch.randn(d, d, generator=gen)
    loop = torch.stack([(A[i] * X).sum() for i in range(m)])  # <A_i, X> = trace(A_i^T X)
    got = ref.sensing_measurements(A, X)
    assert got.shape == (m,)
    torch.testing.assert_close(got, loop, **tol("sensing_measurements"))


@given(shape=SENSING_SHAPES, seed=SEEDS)
def test_sensing_loss_is_zero_at_the_truth(ref, shape, seed):
    A, U, _ = _sensing_data(seed, *shape)
    y = ref.sensing_measurements(A, U @ U.T)
    assert float(ref.sensing_loss(U, A, y)) <= tol("sensing_loss")["atol"] * (1 + float(y.square().mean()))


@rare_counterexamples
@given(seed=SEEDS, steps=st.integers(0, 12), lr_scale=st.floats(0.01, 0.5))
def test_gradient_descent_distances_describe_the_iterates(ref, seed, steps, lr_scale):
    """distances[t] = ||U_t U_t^T - X*||_F for the iterate the callback saw at step t, for every t, including
    runs whose step exceeds the finite-m problem's smoothness (m = 40 < d^2, so lr_scale = 0.1 / ||X*||_2 can
    already diverge): a divergent run overflows to inf / NaN and then stays non-finite, in its distances and
    its iterates alike."""
    d, r, m = 6, 2, 40
    gen = torch.Generator().manual_seed(seed)
    A, U_star, X_star, y = ref.make_sensing_problem(d, r, m, gen)
    U0 = torch.randn(d, r, generator=gen) / math.sqrt(d)
    lr = ref.sensing_lr(X_star, lr_scale)
    seen = []
    U, dist = ref.gradient_descent(U0, A, y, X_star, lr, steps, callback=lambda t, Ut: seen.append(Ut))
    assert len(dist) == steps + 1 == len(seen)
    want = [float(torch.linalg.matrix_norm(Ut @ Ut.T - X_star)) for Ut in seen]
    torch.testing.assert_close(torch.tensor(dist), torch.tensor(want), **tol("gradient_descent"), equal_nan=True)
    finite = [math.isfinite(v) for v in dist]
    assert finite == sorted(finite, reverse=True), f"a distance became finite again after diverging: {dist}"
    assert all(bool(torch.isfinite(Ut).all()) or not ok for Ut, ok in zip(seen, finite)), "a finite distance from a non-finite iterate"
    torch.testing.assert_close(U, seen[-1], equal_nan=True)


@given(seed=SEEDS, k=st.integers(1, 4))
def test_effective_rank_counts_the_rank_of_a_generic_product(ref, seed, k):
    gen = torch.Generator().manual_seed(seed)
    U = torch.randn(12, k, generator=gen, dtype=torch.float64) @ torch.randn(k, 12, generator=gen, dtype=torch.float64)
    s = torch.linalg.svdvals(U)
    if s[k - 1] < 0.05 * s[0]:  # an ill-conditioned draw: the threshold is allowed to cut it
        return
    assert ref.effective_rank(U, 1e-2) == k


def test_gradient_descent_decreases_the_loss_at_a_small_step(ref):
    gen = torch.Generator().manual_seed(0)
    A, _, X_star, y = ref.make_sensing_problem(8, 2, 160, gen)
    U = torch.randn(8, 8, generator=gen) * 0.1
    lr = ref.sensing_lr(X_star, 0.02)
    losses = []
    for _ in range(20):
        losses.append(float(ref.sensing_loss(U, A, y)))
        U, _ = ref.gradient_descent(U, A, y, X_star, lr, 1)
    assert all(b <= a for a, b in zip(losses, losses[1:])), losses


# ---------------------------------------------------------------------------------------------
# MLP and gradient-norm properties


@given(hidden=HIDDEN_SIZES, seed=SEEDS)
def test_mlp_is_bias_free_and_outputs_log_probabilities(ref, hidden, seed):
    torch.manual_seed(seed)
    model = ref.MNISTClassifierMLP(784, hidden, 10)
    assert model.depth == len(hidden) + 1
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    linears, out = linears_in_call_order(model, x)
    sizes = [784, *hidden, 10]
    assert [tuple(lin.weight.shape) for lin in linears] == [(b, a) for a, b in zip(sizes[:-1], sizes[1:])]
    assert all(lin.bias is None for lin in linears)
    assert out.shape == (5, 10)
    torch.testing.assert_close(torch.logsumexp(out, dim=1), torch.zeros(5), **tol("mlp_forward"))


@given(hidden=HIDDEN_SIZES, seed=SEEDS)
def test_gradient_norms_equal_linalg_norm_per_layer(ref, hidden, seed):
    torch.manual_seed(seed)
    model = ref.MNISTClassifierMLP(784, hidden, 10)
    gen = torch.Generator().manual_seed(seed)
    x, labels = torch.randn(8, 1, 28, 28, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    linears, out = linears_in_call_order(model, x)
    F.nll_loss(out, labels).backward()
    norms = ref.get_gradient_norms(model)
    assert len(norms) == model.depth and all(isinstance(v, float) for v in norms)
    want = [float(torch.linalg.norm(lin.weight.grad)) for lin in linears]  # input to output
    torch.testing.assert_close(torch.tensor(norms), torch.tensor(want), **tol("gradient_norms"))


def test_train_one_epoch_averages_loss_and_norms_over_steps(ref):
    torch.manual_seed(0)
    model = ref.MNISTClassifierMLP(784, [16, 16], 10)
    twin = ref.MNISTClassifierMLP(784, [16, 16], 10)
    twin.load_state_dict(model.state_dict())
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(4, 1, 28, 28, generator=gen), torch.randint(0, 10, (4,), generator=gen)) for _ in range(3)]
    loss, norms = ref.train_one_epoch(batches, model, "cpu", torch.optim.SGD(model.parameters(), lr=0.1))
    opt, losses, steps = torch.optim.SGD(twin.parameters(), lr=0.1), [], []
    for x, y in batches:  # the same loop written out: the norm of the gradient each step follows
        opt.zero_grad()
        step_loss = F.nll_loss(twin(x), y)
        step_loss.backward()
        steps.append([float(torch.linalg.norm(lin.weight.grad)) for lin in twin.linears])
        opt.step()
        losses.append(step_loss.item())
    assert loss == pytest.approx(sum(losses) / 3, rel=1e-6)
    torch.testing.assert_close(torch.tensor(norms), torch.tensor(steps).mean(dim=0), **tol("gradient_norms"))
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b)


def test_test_one_epoch_counts_correct_predictions(ref):
    torch.manual_seed(0)
    model = ref.MNISTClassifierMLP(784, [8], 10)
    gen = torch.Generator().manual_seed(2)
    batches = [(torch.randn(5, 1, 28, 28, generator=gen), torch.randint(0, 10, (5,), generator=gen)) for _ in range(2)]
    loss, correct = ref.test_one_epoch(batches, model, "cpu")
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    with torch.no_grad():
        out = model(x)
    assert correct == int((out.argmax(1) == y).sum())
    assert loss == pytest.approx(float(F.nll_loss(out, y)), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# The experiment: --dry-run, the headline answers and the bands of the quick (default) and full (slow) runs


def _run(ref, tmp_path, *flags):
    return ref.main(ref.get_args_parser().parse_args(["--out", str(tmp_path), "--device", "cpu", *flags]))


def test_dry_run_writes_every_output(ref, tmp_path):
    result = _run(ref, tmp_path, "--dry-run")
    for name in ("loss.png", "gradient_norms.png", "sensing_rank_r.png", "sensing_overparametrized.png",
                 "sensing_seed_grid.png", "singular_values.png", "mnist_log.csv", "sensing_log.csv",
                 "singular_values.csv", "answers.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    answers = json.loads((tmp_path / "answers.json").read_text())
    assert answers["part2"]["rank_r_seconds_per_step"] > 0
    assert len(answers["part1"]["grad_norms_last_epoch"]) == 4 == len(result["config"]["hidden_sizes"]) + 1
    assert set(answers["part2"]["seed_grid"]["runs"]) == {"R=r", *(f"alpha={a:g}" for a in ref.Config().seed_alphas)}
    json.dumps(result)  # the result is plain data


def test_flags_map_to_the_config_and_quick_overrides_them(ref):
    parser = ref.get_args_parser()
    cfg = ref.Config.from_args(parser.parse_args(["--quick", "--steps", "7", "--seed", "4"]))
    assert (cfg.epochs, cfg.d, cfg.r, cfg.steps, cfg.seed) == (ref.QUICK["epochs"], ref.QUICK["d"], ref.QUICK["r"],
                                                               ref.QUICK["steps"], 4)
    full = ref.Config.from_args(parser.parse_args([]))
    assert (full.epochs, full.d, full.r, full.m_factor, full.alphas) == (40, 100, 5, 10, (1e-5, 1e-4, 1e-3, 1e-2, 1e-1))
    # the seed's grid (2d: "10E-5 ... 10E-1", so alpha = 1 is in it) at its step counts (2b: 2000, 2d: 1000)
    assert (full.seed_alphas, full.seed_steps, full.seed_rank_r_steps) == ((1e-4, 1e-3, 1e-2, 1e-1, 1.0), 1000, 2000)


def _check_headline_answers(result: dict) -> None:
    """The alpha-to-rank ordering (2d-e): a smaller initialization ends at a lower effective rank and nearer X*;
    the smallest documented alpha recovers rank(X*); R = r converges. Checked on both grids.

    The rank grows with alpha through the low-rank regime (rank < d/2); once a run is high-rank, every larger
    alpha stays high-rank, but not necessarily higher: at the full budget (d = 100) the six measured seeds end
    at rank 84-86 for alpha 1e-2 and 79-81 for 1e-1, both near full rank (exercises/gradnorms/claims.json's
    `rank_grows_with_alpha` reports that strict monotonicity is not reproduced)."""
    p2 = result["part2"]
    half = p2["d"] / 2
    for grid in (p2["overparametrized"], {k: v for k, v in p2["seed_grid"]["runs"].items() if k != "R=r"}):
        by_alpha = sorted(grid.items(), key=lambda kv: float(kv[0].split("=")[1]))
        ranks = [v["effective_rank"] for _, v in by_alpha]
        distances = [v["final_distance"] for _, v in by_alpha]
        assert None not in ranks, by_alpha
        for smaller, larger in zip(ranks, ranks[1:]):
            if smaller < half:
                assert smaller <= larger, f"effective rank should grow with alpha while low: {by_alpha}"
            else:
                assert larger >= half, f"a larger alpha than a high-rank run should stay high-rank: {by_alpha}"
        assert distances == sorted(distances), f"the final distance to X* should grow with alpha: {distances}"
    assert p2["overparametrized"][min(p2["overparametrized"], key=lambda k: float(k.split("=")[1]))]["effective_rank"] == p2["r"]
    assert p2["rank_r_final_distance"] < min(v["final_distance"] for v in p2["overparametrized"].values())


@pytest.fixture(scope="module")
def quick_run(ref, tmp_path_factory):
    return _run(ref, tmp_path_factory.mktemp("gradnorms_quick"), "--quick", "--seed", str(bands.HELD_OUT_SEED))


def test_quick_run_gives_the_headline_answers(quick_run):
    _check_headline_answers(quick_run)


def test_quick_run_is_within_its_bands(quick_run, within_bands):
    within_bands("gradnorms", "quick", quick_run)


@pytest.mark.slow
def test_full_run_gives_the_headline_answers_and_stays_in_its_bands(ref, tmp_path, within_bands):
    result = _run(ref, tmp_path, "--seed", str(bands.HELD_OUT_SEED))
    _check_headline_answers(result)
    within_bands("gradnorms", "full", result)


def test_every_seed_claim_names_a_metric_of_the_full_run(ref, tmp_path):
    """exercises/gradnorms/claims.json names metrics of band_metrics: the sensing ones as a dry run reports them
    (the grids' alphas do not change with the budget), the gradient norms per layer at epochs 1-5 and 40."""
    metrics = set(ref.band_metrics(_run(ref, tmp_path, "--dry-run")))
    depth = len(ref.Config().hidden_sizes) + 1
    metrics |= {f"grad_norm_layer{j}.epoch{e}" for j in range(1, depth + 1) for e in (1, 2, 3, 4, 5, ref.Config().epochs)}
    claimed = json.loads(get("gradnorms").claims_path.read_text())["claims"]
    for claim in claimed:
        for metric in filter(None, (claim["metric"], claim["compare"].partition(":")[2])):
            assert metric in metrics, f"{claim['id']}: {metric}"
