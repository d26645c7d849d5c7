"""labcheck.claims: the seed notebooks' claims and the stated tests that judge them."""
import json

import pytest

from labcheck import claims, paths, study
from labcheck.exercises import EXERCISES

CLAIM_FILES = sorted((paths.reference_dir() / "claims").glob("*.json"))


def claim(**overrides) -> claims.Claim:
    fields = dict(id="c", what="w", where="here", seed_value=0.5, metric="m", compare="value",
                  data_source="fashion-mnist", seed_data="d", seed_settings="s")
    return claims.Claim(**{**fields, **overrides})


def runs(**columns) -> list[dict]:
    n = len(next(iter(columns.values())))
    return [{"metrics": {k: v[i] for k, v in columns.items() if v[i] is not None}} for i in range(n)]


def test_value_inside_or_outside_the_prediction_interval():
    ours = runs(m=[0.48, 0.50, 0.52, 0.49, 0.51])
    # mean 0.5, sd 0.0158, t(0.975; 4) = 2.776, sqrt(1.2) = 1.095: interval 0.5 +- 0.048
    assert claims.judge(claim(seed_value=0.545), ours, "fashion-mnist").verdict == claims.REPRODUCED
    assert claims.judge(claim(seed_value=0.56), ours, "fashion-mnist").verdict == claims.NOT_REPRODUCED
    assert claims.judge(claim(seed_value=0.56, resolution=0.02), ours, "fashion-mnist").verdict == claims.REPRODUCED


def test_greater_by_welch_t_test():
    ours = runs(a=[0.95, 0.96, 0.955, 0.957], b=[0.90, 0.91, 0.905, 0.899])
    assert claims.judge(claim(metric="a", compare="greater:b"), ours, "fashion-mnist").verdict == claims.REPRODUCED
    verdict = claims.judge(claim(metric="b", compare="greater:a"), ours, "fashion-mnist")
    assert verdict.verdict == claims.NOT_REPRODUCED and "p = " in verdict.detail
    overlapping = runs(a=[0.90, 0.95, 0.92], b=[0.91, 0.94, 0.93])
    from scipy import stats  # the written-out statistic is scipy's Welch test where scipy does not warn

    for x, y in (([0.95, 0.96, 0.955, 0.957], [0.90, 0.91, 0.905, 0.899]), ([0.90, 0.95, 0.92], [0.91, 0.94, 0.93])):
        for greater in (True, False):
            expected = stats.ttest_ind(x, y, equal_var=False, alternative="greater" if greater else "less").pvalue
            assert claims.welch_one_sided(x, y, greater) == pytest.approx(expected, rel=1e-9)
    assert claims.judge(claim(metric="a", compare="greater:b"), overlapping, "x").verdict != claims.REPRODUCED


def test_less_between_constants_is_their_comparison():
    ours = runs(a=[6.0, 6.0, 6.0], b=[10.0, 10.0, 10.0])
    assert claims.judge(claim(metric="a", compare="less:b"), ours, "fashion-mnist").verdict == claims.REPRODUCED
    assert claims.judge(claim(metric="b", compare="less:a"), ours, "fashion-mnist").verdict == claims.NOT_REPRODUCED


def test_equal_counts_seeds_and_a_missing_answer_is_an_answer():
    ours = runs(w=[32.0, 32.0, None])
    verdict = claims.judge(claim(metric="w", compare="equal", seed_value=128), ours, "fashion-mnist")
    assert verdict.verdict == claims.NOT_REPRODUCED and verdict.answers == {"32": 2, "None": 1}
    assert claims.judge(claim(metric="w", compare="equal", seed_value=32), ours, "fashion-mnist").verdict == \
        claims.REPRODUCED


def test_not_comparable_says_which_difference():
    ours = runs(m=[0.5, 0.6, 0.55])
    data = claims.judge(claim(data_source="mnist", seed_data="full MNIST"), ours, "mnist-5k")
    assert data.verdict == claims.NOT_COMPARABLE and "full MNIST" in data.detail and "mnist-5k" in data.detail
    settings = claims.judge(claim(settings_differ="another init"), ours, "fashion-mnist")
    assert settings.verdict == claims.NOT_COMPARABLE and "another init" in settings.detail
    budget = claims.judge(claim(), ours, "fashion-mnist", budget="quick")
    assert budget.verdict == claims.NOT_COMPARABLE and "budget" in budget.detail
    assert claims.judge(claim(budget="any", seed_value=0.55), ours, "fashion-mnist", "quick").verdict == \
        claims.REPRODUCED
    unmeasured = claims.judge(claim(metric=None, settings_differ="VGG11 is elsewhere"), ours, "fashion-mnist")
    assert unmeasured.verdict == claims.NOT_COMPARABLE
    relation = runs(a=[0.95, 0.96, 0.955], b=[0.90, 0.91, 0.905])
    judged = claims.judge(claim(metric="a", compare="greater:b", data_source="mnist", judge_on=("mnist-5k",)),
                          relation, "mnist-5k")
    assert judged.verdict == claims.REPRODUCED and "judged on mnist-5k" in judged.detail


def test_report_and_plot(tmp_path):
    verdicts = claims.judge_all([claim(), claim(id="d", metric="a", compare="greater:b")],
                                runs(m=[0.5, 0.51, 0.49], a=[2.0, 2.1, 2.2], b=[1.0, 1.1, 1.2]), "fashion-mnist")
    sweep = study.Sweep("demo", "full", [0, 1, 2],
                        [{"data_source": "fashion-mnist", "device": "cpu", "config": {}, "seconds": 1.0,
                          "metrics": {}}] * 3, "serial", "labcheck reproduce demo --seeds 3", 3.5)
    text = claims.report_markdown("demo", verdicts, sweep, image="claims.png")
    assert "| `c` |" in text and "**reproduced**" in text and "![claims](claims.png)" in text
    claims.plot(verdicts, tmp_path / "claims.png", "demo")
    assert (tmp_path / "claims.png").stat().st_size > 1000


@pytest.mark.parametrize("path", CLAIM_FILES, ids=[p.stem for p in CLAIM_FILES])
def test_claim_file_is_valid(path):
    """Loads (known fields, unique ids), a known exercise, a known compare, and its metrics are ones our
    sweeps measure (checked against the exercise's band files where a sweep exists)."""
    assert path.stem in EXERCISES
    loaded = claims.load(path.stem, path.parent)
    assert loaded and json.loads(path.read_text())["exercise"] == path.stem
    for c in loaded:
        assert c.kind in claims.TESTS, c.id
        assert c.metric is not None or c.settings_differ, f"{c.id}: no metric and no reason"
        assert c.budget in ("any", "full", "quick"), c.id
    bands_file = paths.bands_dir() / f"{path.stem}.json"
    content = json.loads(bands_file.read_text()) if bands_file.exists() else {}
    if "full" not in content.get("sweeps", {}):
        pytest.skip(f"no full sweep of {path.stem} stored yet: labcheck bands {path.stem} --seeds 5")
    banded = {name.split(".", 1)[1] for name in content["bands"]}
    for c in loaded:
        for metric in filter(None, (c.metric, c.other_metric)):
            assert metric in banded, f"{c.id}: {metric} is not a band metric of {path.stem}"


def test_claims_use_plain_runs_from_a_sweep():
    """judge() reads run dicts as labcheck.study returns them."""
    sweep_runs = [{"seed": 0, "data_source": "fashion-mnist", "metrics": {"m": 0.5}},
                  {"seed": 1, "data_source": "fashion-mnist", "metrics": {"m": 0.52}}]
    verdict = claims.judge(claim(seed_value=0.51), sweep_runs, "fashion-mnist")
    assert verdict.verdict == claims.REPRODUCED and verdict.ours == [0.5, 0.52]
    assert verdict.ours_text() == "0.51 +- 0.014 (2)"


def test_a_claim_on_generated_data_is_judged_whatever_the_runs_real_data_set():
    """ps2's sensing problem is generated by our reference on every machine: its claims are judged on runs whose
    MNIST part used mnist-5k, and the report does not pretend the data differ; a claim on real data is not."""
    ours = runs(lo=[5.0, 5.0, 5.0], hi=[80.0, 81.0, 79.0])
    sensing = claims.judge(claim(metric="lo", compare="less:hi", data_source="gaussian-sensing"), ours, "mnist-5k")
    assert sensing.verdict == claims.REPRODUCED and "judged on" not in sensing.detail
    real = claims.judge(claim(metric="lo", compare="less:hi", data_source="mnist"), ours, "mnist-5k")
    assert real.verdict == claims.NOT_COMPARABLE and "data differ" in real.detail
