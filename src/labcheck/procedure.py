"""The one statistical procedure by which labcheck judges a seed notebook's claims (labcheck.claims).

Our evidence for an exercise is n runs of its reference, one per seed; the seed notebook is ONE run whose
numbers it printed. Every claim is judged by one of three tests, and the tests of one exercise form one
family whose error rate is controlled by Holm's step-down procedure.

1. A value claim ("the seed printed 0.8102") asks: could the seed's number s be one more run of ours?
   Its variance as a new run, around our mean m of n runs with sample sd sd, is

       V = sd^2 (1 + 1/n)  +  U,      U = sum over the variance sources our runs do not sample,

   U being, for a share p (an accuracy) measured on a set of N items that every one of our seeds shares
   (a fixed validation split, a fixed test set), p(1-p)/N_ours, plus p(1-p)/N_seed where the seed measured
   on its own draw of such a set (p = m; the claims file's "sampling" table names N and the reason). A set
   the seed and we share adds nothing. A mean loss's set-sampling variance is not recorded (no per-example
   losses), so U leaves it out, which the report says. The statistic is t = max(0, |s - m| - r) / sqrt(V)
   (r: half a unit of the seed's last printed digit), with Welch-Satterthwaite degrees of freedom
   df = V^2 / ((sd^2 (1 + 1/n))^2 / (n - 1)) (U counts as known; df = inf where sd = 0); p is two-sided.
   The interval shown is m +- t(1 - level/2; df) sqrt(V) +- r at the level Holm applied to the claim,
   clipped to the metric's domain (the exercise's bands file's `limits`). Effect size: s - m, and the same
   in units of sqrt(V).

2. A grid claim (an answer on a grid or an integer: eta*, a width, an epoch, a count, yes = 1 / no = 0) asks
   the same of an answer whose distribution is not normal. The seed's run and our n runs are exchangeable
   under the claim, so the rank of the seed's answer among all n + 1 is uniform: with lower = #{ours <= s}
   and upper = #{ours >= s} (a run without an answer counts on both sides, a tie),
   p = min(1, 2 min(1 + lower, 1 + upper) / (n + 1)), exact and two-sided, never below 2 / (n + 1). Effect
   size: how many of our seeds give the seed's answer, and our distribution over the grid. When none of
   ours gives the seed's answer and the test cannot reject it, the claim could not be judged.

3. A relational claim ("A > B", "A < B") is judged on the runs that report both metrics, paired by seed:
   d_i = A_i - B_i (B_i - A_i for "<"). With sd_d their sample sd,

       V = sd_d^2 / n  +  U_d,      U_d = (err_A + err_B) / N_ours

   where A and B are shares measured on the same fixed set of N_ours items (err = 1 - mean): the variance
   of the difference of two classifiers' accuracies over draws of that set is (q01 + q10 - delta^2) / N,
   at most (err_A + err_B) / N, since the claim is about the population, not our one test set.
   t = mean(d) / sqrt(V), df as above with sd_d^2 / n; p is one-sided. Where V = 0 (both metrics constant),
   p is 0 when the relation holds and 1 when it does not. Effect size: mean(d), its 95% interval, d_z =
   mean(d) / sd_d, and, for shares, mean(d) in items of the evaluation set.

The family. For the m judged claims of one exercise (a claim that is not comparable is not tested), Holm's
procedure sorts the p-values, compares the k-th smallest with FWER / (m - k + 1) and stops at the first
that exceeds its level; adjusted p_(k) = max over j <= k of min(1, (m - j + 1) p_(j)), rejected when
<= FWER. A rejection means "not reproduced" for value and grid claims (the seed's number is not one of our
runs) and "reproduced" for relational claims (the relation holds beyond chance). So the probability of any
false "not reproduced" or false "reproduced" among an exercise's claims is at most FWER = 0.05.

Verdicts: reproduced, not reproduced, could not be judged (a grid answer none of ours gives that the test
cannot reject), and not comparable (labcheck.claims: the data, settings or budget differ, or nothing of
ours measures the claim). Each verdict carries its test, n, statistic, p, Holm-adjusted p, the interval
(value claims) and the effect size.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from collections import Counter
from typing import Callable

FWER = 0.05  # family-wise error rate of each exercise's claims (Holm)
EFFECT_INTERVAL = 0.95  # coverage of the interval printed beside a relational claim's mean difference
REPRODUCED, NOT_REPRODUCED, NOT_COMPARABLE = "reproduced", "not reproduced", "not comparable"
UNDECIDED = "could not be judged"

TEST_NAMES = {
    "value": "prediction t-test of one new run (seed-to-seed + unsampled set variance)",
    "grid": "rank test of the seed's answer among ours (exchangeable runs, exact)",
    "paired": "paired t-test across seeds, one-sided (+ test-set variance of the difference)",
}


@dataclasses.dataclass(frozen=True)
class Sampling:
    """The evaluation set of a share (an accuracy) where our seeds do not redraw it."""
    ours: int | None  # items of the set every one of our runs shares (None: our runs redraw it)
    seed: int | None  # items of the seed's own draw (None: the seed used the same set as ours)


NO_SAMPLING = Sampling(None, None)


@dataclasses.dataclass
class Outcome:
    """One test's result, before the family's correction."""
    kind: str  # "value", "grid" or "paired"
    n: int  # our runs (value, grid) or pairs (paired)
    statistic: str  # e.g. "t = 2.31, df 4.2"
    p: float  # two-sided (value, grid) or one-sided (paired)
    effect: str  # the effect size, in words
    rejection_means: str  # REPRODUCED or NOT_REPRODUCED
    interval: Callable[[float], tuple[float, float]] | None = None  # value: level -> (lo, hi)
    seen: bool = True  # grid: at least one of our runs gives the seed's answer
    variances: tuple[float, float] | None = None  # value: (seed-to-seed sd^2 (1 + 1/n), unsampled set variance)
    difference: float | None = None  # value: seed - our mean

    @property
    def test(self) -> str:
        return TEST_NAMES[self.kind]


def _t_sf(t: float, df: float) -> float:
    from scipy import stats

    return float(stats.norm.sf(t) if math.isinf(df) else stats.t.sf(t, df))


def _t_quantile(q: float, df: float) -> float:
    from scipy import stats

    return float(stats.norm.ppf(q) if math.isinf(df) else stats.t.ppf(q, df))


def satterthwaite_df(sampled_var: float, total_var: float, n: int) -> float:
    """Degrees of freedom of a variance whose `sampled_var` part is estimated from n runs (the rest known)."""
    if sampled_var <= 0:
        return math.inf
    return total_var ** 2 / (sampled_var ** 2 / (n - 1))


def share_variance(p: float, n_items: int | None) -> float:
    """p(1 - p) / N: the variance of a share over draws of an N-item set (0 where no set is fixed)."""
    if not n_items:
        return 0.0
    p = min(max(p, 0.0), 1.0)
    return p * (1 - p) / n_items


def value_test(seed: float, ours: list[float], sampling: Sampling = NO_SAMPLING, resolution: float = 0.0,
               domain: tuple[float | None, float | None] = (None, None)) -> Outcome:
    """Test 1: the seed's number as one more of our runs (module docstring)."""
    n, mean = len(ours), statistics.fmean(ours)
    sd = statistics.stdev(ours)
    seeds_var = sd ** 2 * (1 + 1 / n)
    unsampled = share_variance(mean, sampling.ours) + share_variance(mean, sampling.seed)
    total = seeds_var + unsampled
    df = satterthwaite_df(seeds_var, total, n)
    gap = max(0.0, abs(seed - mean) - resolution)
    if total == 0:
        t, p = (0.0, 1.0) if gap == 0 else (math.inf, 0.0)
    else:
        t = gap / math.sqrt(total)
        p = min(1.0, 2 * _t_sf(t, df))
    lo_domain, hi_domain = domain

    def interval(level: float) -> tuple[float, float]:
        half = _t_quantile(1 - level / 2, df) * math.sqrt(total) + resolution
        lo, hi = mean - half, mean + half
        return (lo if lo_domain is None else max(lo, lo_domain), hi if hi_domain is None else min(hi, hi_domain))

    scale = f" ({(seed - mean) / math.sqrt(total):+.2f} sd of a new run)" if total > 0 else ""
    unsampled_text = f" incl. unsampled set sd {math.sqrt(unsampled):.3g}" if unsampled else ""
    return Outcome("value", n, f"t = {t:.3g}, df {df:.3g}{unsampled_text}", p,
                   f"seed - ours = {seed - mean:+.4g}{scale}", NOT_REPRODUCED, interval,
                   variances=(seeds_var, unsampled), difference=seed - mean)


def _rank_key(value) -> float | None:
    return None if value is None else float(value)


def grid_test(seed: float, ours: list[float | None]) -> Outcome:
    """Test 2: the rank of the seed's answer among ours (module docstring); None is a run without an answer."""
    n = len(ours)
    s = float(seed)
    keys = [_rank_key(v) for v in ours]
    ties = sum(1 for k in keys if k is None)
    lower = sum(1 for k in keys if k is not None and k <= s) + ties
    upper = sum(1 for k in keys if k is not None and k >= s) + ties
    p = min(1.0, 2 * min(1 + lower, 1 + upper) / (n + 1))
    same = sum(1 for k in keys if k is not None and k == s)
    counts = Counter("none" if k is None else f"{k:g}" for k in keys)
    distribution = ", ".join(f"{answer} x{c}" for answer, c in sorted(counts.items()))
    return Outcome("grid", n, f"{lower} of {n} at or below, {upper} at or above", p,
                   f"{same} of {n} give {s:g} (ours: {distribution}); smallest attainable p {2 / (n + 1):.2g}",
                   NOT_REPRODUCED, seen=same > 0)


def paired_test(a: list[float], b: list[float], greater: bool, eval_items: int | None = None) -> Outcome:
    """Test 3: "a > b" (greater) or "a < b" on runs paired by seed (module docstring).

    eval_items: N when a and b are shares of the same fixed N-item set (adds its sampling variance)."""
    n = len(a)
    d = [x - y if greater else y - x for x, y in zip(a, b)]
    mean = statistics.fmean(d)
    sd = statistics.stdev(d)
    sampled = sd ** 2 / n
    unsampled = ((1 - statistics.fmean(a)) + (1 - statistics.fmean(b))) / eval_items if eval_items else 0.0
    total = sampled + unsampled
    df = satterthwaite_df(sampled, total, n)
    if total == 0:
        t, p = (math.inf, 0.0) if mean > 0 else (-math.inf if mean < 0 else 0.0, 1.0)
        ci = f"{mean:+.4g} every seed"
    else:
        t = mean / math.sqrt(total)
        p = _t_sf(t, df)
        half = _t_quantile(0.5 + EFFECT_INTERVAL / 2, df) * math.sqrt(total)
        ci = f"{EFFECT_INTERVAL:.0%} CI [{mean - half:+.4g}, {mean + half:+.4g}]"
    parts = [f"mean difference {mean:+.4g} ({ci})"]
    if sd > 0:
        parts.append(f"d_z {mean / sd:+.2f}")
    if eval_items:
        parts.append(f"{mean * eval_items:+.1f} of {eval_items:,} items")
    unsampled_text = f" incl. test-set sd {math.sqrt(unsampled):.3g}" if unsampled else ""
    return Outcome("paired", n, f"t = {t:.3g}, df {df:.3g}{unsampled_text}", p, ", ".join(parts), REPRODUCED)


@dataclasses.dataclass(frozen=True)
class HolmStep:
    adjusted_p: float  # Holm-adjusted p-value
    level: float  # FWER / (m - k + 1): the level Holm compared this p-value with
    rejected: bool


def holm(p_values: list[float], fwer: float = FWER) -> list[HolmStep]:
    """Holm's step-down procedure over one family, in the order of `p_values`."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    steps: list[HolmStep | None] = [None] * m
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p_values[i]))
        steps[i] = HolmStep(running, fwer / (m - k), running <= fwer)
    return steps


def verdict(outcome: Outcome, step: HolmStep) -> str:
    """The verdict of a tested claim after the family's correction (module docstring)."""
    if step.rejected:
        return outcome.rejection_means
    if outcome.rejection_means == REPRODUCED:
        return NOT_REPRODUCED
    return REPRODUCED if outcome.seen else UNDECIDED
