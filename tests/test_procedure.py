"""labcheck.procedure: each of its three tests and Holm's correction against statistics computed by hand.

The expected numbers below are worked out in the comments from the formulas of the procedure's docstring
(t quantiles and tail areas from tables: scipy agrees to the digits asserted).
"""
import math

import pytest

from labcheck import claims, procedure


def test_value_claim_counts_the_unsampled_split_variance():
    # ours: mean 0.82, squared deviations 4+0+4+1+1 (1e-4) -> sd^2 = 0.001 / 4 = 2.5e-4; a new run's variance
    # 2.5e-4 * (1 + 1/5) = 3.0e-4. Two 500-image sets our seeds do not redraw (ours fixed, the seed's own):
    # 2 * 0.82 * 0.18 / 500 = 5.904e-4. V = 8.904e-4, sqrt 0.029840; t = |0.76 - 0.82| / 0.029840 = 2.0108;
    # df = V^2 / ((3.0e-4)^2 / 4) = 35.24; p = 2 P(T_35.24 > 2.0108) = 0.0521.
    ours = [0.80, 0.82, 0.84, 0.81, 0.83]
    outcome = procedure.value_test(0.76, ours, procedure.Sampling(ours=500, seed=500), domain=(0.0, 1.0))
    assert outcome.n == 5 and "t = 2.01, df 35.2" in outcome.statistic
    assert outcome.p == pytest.approx(0.05205, abs=5e-5)
    # the 95% interval: 0.82 +- t(0.975; 35.24) * 0.029840 = 0.82 +- 0.06056
    assert outcome.interval(0.05) == pytest.approx((0.75944, 0.88056), abs=5e-5)
    assert "seed - ours = -0.06 (-2.01 sd of a new run)" in outcome.effect
    # without the split's variance: t = 0.06 / sqrt(3.0e-4) = 3.4641, df 4, p = 2 P(T_4 > 3.4641) = 0.0257
    alone = procedure.value_test(0.76, ours)
    assert alone.p == pytest.approx(0.02572, abs=5e-5)
    verdict = claims.judge(claim(seed_value=0.76), runs(m=ours), "fashion-mnist")
    assert verdict.verdict == procedure.NOT_REPRODUCED and verdict.step.adjusted_p == pytest.approx(0.02572, abs=5e-5)
    # the interval is clipped to the metric's domain [0, 1]
    assert procedure.value_test(0.99, [0.97, 0.99, 1.0], domain=(0.0, 1.0)).interval(0.05)[1] == 1.0


def test_grid_claim_is_the_rank_of_the_seeds_answer_among_ours():
    ours = [0.01, 0.01, 0.02, 0.01, 0.02, 0.01]
    # seed 0.02: 6 of ours <= 0.02, 2 >= 0.02: p = 2 min(1 + 6, 1 + 2) / 7 = 6/7
    seen = procedure.grid_test(0.02, ours)
    assert seen.p == pytest.approx(6 / 7) and seen.seen and "2 of 6 give 0.02" in seen.effect
    # seed 0.04, an answer none of ours gives: p = 2 (1 + 0) / 7 = 2/7, the smallest p six seeds can give,
    # so the test cannot reject it: the claim could not be judged
    unseen = claims.judge(claim(compare="grid", seed_value=0.04), runs(m=ours), "fashion-mnist")
    assert unseen.outcome.p == pytest.approx(2 / 7) and unseen.verdict == procedure.UNDECIDED
    # 39 seeds all at 32 against the seed's 128: p = 2 / 40 = 0.05, rejected at FWER 0.05
    many = claims.judge(claim(compare="grid", seed_value=128), runs(m=[32.0] * 39), "fashion-mnist")
    assert many.outcome.p == pytest.approx(0.05) and many.verdict == procedure.NOT_REPRODUCED
    # a run without an answer is a tie: it counts on both sides
    assert procedure.grid_test(32, [32.0, None]).p == 1.0


def test_relational_claim_is_a_paired_test_with_the_test_sets_variance():
    a = [0.95, 0.96, 0.94, 0.97, 0.95]
    b = [0.94, 0.94, 0.93, 0.95, 0.94]
    # d = a - b = .01 .02 .01 .02 .01: mean 0.014, sd^2 = 1.2e-4 / 4 = 3e-5, sd 0.0054772, d_z = 2.556.
    # Paired alone: t = 0.014 / sqrt(3e-5 / 5) = 5.7155, df 4, p = P(T_4 > 5.7155) = 0.00232.
    alone = procedure.paired_test(a, b, greater=True)
    assert alone.p == pytest.approx(0.002318, abs=5e-6) and "d_z +2.56" in alone.effect
    # The same 1,000 test images for both: + (err_a + err_b) / N = (0.046 + 0.060) / 1000 = 1.06e-4;
    # V = 6e-6 + 1.06e-4 = 1.12e-4, t = 0.014 / 0.010583 = 1.3229, df = V^2 / ((6e-6)^2 / 4) = 1394, p = 0.0930.
    outcome = procedure.paired_test(a, b, greater=True, eval_items=1000)
    assert outcome.p == pytest.approx(0.09305, abs=5e-5) and "t = 1.32, df 1.39e+03" in outcome.statistic
    assert "mean difference +0.014" in outcome.effect and "+14.0 of 1,000 items" in outcome.effect
    # "a < b" is the mirror test: p = P(T_4 > -5.7155) = 1 - 0.00232
    assert procedure.paired_test(a, b, greater=False).p == pytest.approx(1 - 0.002318, abs=5e-6)
    # constant metrics: the comparison of the two constants
    assert procedure.paired_test([6.0, 6.0], [10.0, 10.0], greater=False).p == 0.0
    assert procedure.paired_test([6.0, 6.0], [10.0, 10.0], greater=True).p == 1.0


def test_holm_controls_the_family():
    # sorted p: 0.005 (x4 = 0.02, rejected), 0.01 (x3 = 0.03, rejected), 0.03 (x2 = 0.06 > 0.05: stop), 0.04
    # (adjusted max(0.06, 0.04) = 0.06)
    steps = procedure.holm([0.01, 0.04, 0.03, 0.005])
    assert [s.adjusted_p for s in steps] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [s.rejected for s in steps] == [True, False, False, True]
    assert [s.level for s in steps] == pytest.approx([0.05 / 3, 0.05, 0.05 / 2, 0.05 / 4])


def test_a_relation_significant_alone_is_not_reproduced_in_its_family():
    """batchnorm's case: a paired p of about 0.017 is a rejection alone and not among three tests."""
    a = [0.952, 0.953, 0.951, 0.953, 0.951]
    b = [0.950, 0.951, 0.951, 0.949, 0.951]
    # d = .002 .002 0 .004 0: mean 0.0016, sd^2 = (0.16+0.16+2.56+5.76+2.56)e-6 / 4 = 2.8e-6,
    # t = 0.0016 / sqrt(2.8e-6 / 5) = 2.1381, df 4: p = 0.0496 alone; Holm over three: 3 x 0.0496 = 0.149
    relation = claim(id="r", metric="a", compare="greater:b")
    ours = runs(a=a, b=b, m=[0.5, 0.6, 0.55, 0.52, 0.58], c=[1.0, 2.0, 3.0, 2.0, 1.0])
    alone = claims.judge(relation, ours, "fashion-mnist")
    assert alone.outcome.p == pytest.approx(0.04961, abs=5e-5) and alone.verdict == procedure.REPRODUCED
    family = claims.judge_all([relation, claim(seed_value=0.55), claim(id="g", metric="c", compare="grid",
                                                                        seed_value=2)], ours, "fashion-mnist")
    assert family[0].step.adjusted_p == pytest.approx(3 * 0.04961, abs=2e-4)
    assert [v.verdict for v in family] == [procedure.NOT_REPRODUCED, procedure.REPRODUCED, procedure.REPRODUCED]
    assert all(v.family == 3 for v in family) and "Holm p = 0.149 (of 3)" in family[0].outcome_text()


def claim(**overrides) -> claims.Claim:
    fields = dict(id="c", what="w", where="here", seed_value=0.5, metric="m", compare="value",
                  data_source="fashion-mnist", seed_data="d", seed_settings="s")
    return claims.Claim(**{**fields, **overrides})


def runs(**columns) -> list[dict]:
    n = len(next(iter(columns.values())))
    return [{"metrics": {k: v[i] for k, v in columns.items() if v[i] is not None}} for i in range(n)]


def test_domain_and_resolution():
    # resolution r shrinks the gap: |0.56 - 0.5| - 0.02 = 0.04 is judged, and widens the interval by r
    ours = [0.48, 0.50, 0.52, 0.49, 0.51]
    wide = procedure.value_test(0.56, ours, resolution=0.02)
    plain = procedure.value_test(0.56, ours)
    assert wide.p > plain.p
    assert wide.interval(0.05)[1] - plain.interval(0.05)[1] == pytest.approx(0.02)
    assert not math.isnan(procedure.value_test(0.5, [0.5, 0.5]).p)
