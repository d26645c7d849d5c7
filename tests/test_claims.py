"""labcheck.claims: the seed notebooks' claims and the stated tests that judge them."""
import json

import pytest

from labcheck import claims, paths, procedure, study
from labcheck.exercises import EXERCISES, REGISTRY, get

CLAIM_FILES = sorted(ex.claims_path for ex in REGISTRY.values() if ex.claims_path.is_file())


def claim(**overrides) -> claims.Claim:
    fields = dict(id="c", what="w", where="here", seed_value=0.5, metric="m", compare="value",
                  data_source="fashion-mnist", seed_data="d", seed_settings="s")
    return claims.Claim(**{**fields, **overrides})


def runs(**columns) -> list[dict]:
    n = len(next(iter(columns.values())))
    return [{"metrics": {k: v[i] for k, v in columns.items() if v[i] is not None}} for i in range(n)]


def test_missing_answers_are_part_of_a_grid_claims_distribution():
    ours = runs(w=[32.0, 32.0, None])
    verdict = claims.judge(claim(metric="w", compare="grid", seed_value=128), ours, "fashion-mnist")
    assert verdict.ours == [32.0, 32.0, None] and verdict.ours_text() == "32 x2, none x1"


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
    text = claims.report_markdown("demo", verdicts, sweep, images=["claims.png"])
    assert "| `c` | w |" in text and "**reproduced**" in text and "![claims, page 1 of 1](claims.png)" in text
    assert "2 claims tested as one family" in text and "Holm p = " in text
    assert claims.plot(verdicts, tmp_path / "claims.png", "demo") == [tmp_path / "claims.png"]
    assert (tmp_path / "claims.png").stat().st_size > 1000


def test_plots_are_pages_a_screen_holds_with_the_interval_drawn(tmp_path):
    """10 measured claims: two pages of at most 3 x 3 panels, each 1386 x 924 px; value claims' intervals drawn."""
    from PIL import Image

    many = [claim(id=f"c{i}", seed_value=0.5 + i / 1000) for i in range(10)]
    verdicts = claims.judge_all(many, runs(m=[0.5, 0.51, 0.49]), "fashion-mnist")
    pages = claims.plot(verdicts, tmp_path / "claims.png", "demo")
    assert [p.name for p in pages] == ["claims.png", "claims-2.png"]
    for page in pages:
        with Image.open(page) as image:
            assert image.size == (1386, 924), page.name
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    claims._panel(ax, verdicts[0], "tab:green")
    assert any(label.startswith("interval (level") for label in ax.get_legend_handles_labels()[1])
    plt.close(fig)


def test_report_groups_claims_by_the_seed_section_of_their_line():
    sections = claims.seed_sections("width")
    assert claims.section_of(450, sections).startswith("2.0.3 1.3 Finding divergent learning rate")
    assert claims.section_of(0, sections) == "(no seed line)"
    verdicts = claims.judge_all([claim(id="late", line=500), claim(id="early", line=450)],
                                runs(m=[0.5, 0.51, 0.49]), "fashion-mnist")
    text = "\n".join(claims._grouped_tables(verdicts, sections))
    assert text.index("### 2.0.3 1.3 Finding") < text.index("`early`") < text.index("### 1.5.2 h=32") < text.index("`late`")


@pytest.mark.parametrize("path", CLAIM_FILES, ids=[p.stem for p in CLAIM_FILES])
def test_claim_file_is_valid(path):
    """Loads (known fields, unique ids), a known exercise, a known compare, and its metrics are ones our
    sweeps measure (checked against the exercise's band files where a sweep exists)."""
    assert path.parent.name in EXERCISES
    loaded = claims.load(path.parent.name)
    assert loaded and json.loads(path.read_text())["exercise"] == path.parent.name
    for c in loaded:
        assert c.kind in claims.KINDS, c.id
        assert c.metric is not None or c.settings_differ, f"{c.id}: no metric and no reason"
        assert c.budget in ("any", "full", "quick"), c.id
    bands_file = path.parent / "bands.json"
    content = json.loads(bands_file.read_text()) if bands_file.exists() else {}
    if "full" not in content.get("sweeps", {}):
        pytest.skip(f"no full sweep of {path.stem} stored yet: labcheck bands {path.stem} --seeds 5")
    banded = {name.split(".", 1)[1] for name in content["bands"]}
    for c in filter(lambda c: c.metric is not None, loaded):  # a claim nothing of ours measures names no metric
        for metric in filter(None, (c.metric, c.other_metric)):
            assert metric in banded, f"{c.id}: {metric} is not a band metric of {path.stem}"


def test_claims_use_plain_runs_from_a_sweep():
    """judge() reads run dicts as labcheck.study returns them."""
    sweep_runs = [{"seed": 0, "data_source": "fashion-mnist", "metrics": {"m": 0.5}},
                  {"seed": 1, "data_source": "fashion-mnist", "metrics": {"m": 0.52}}]
    verdict = claims.judge(claim(seed_value=0.51), sweep_runs, "fashion-mnist")
    assert verdict.verdict == claims.REPRODUCED and verdict.ours == [0.5, 0.52]
    assert verdict.ours_text() == "0.51 +- 0.014 (2)" and verdict.outcome.n == 2


def test_a_claim_on_generated_data_is_judged_whatever_the_runs_real_data_set():
    """ps2's sensing problem is generated by our reference on every machine: its claims are judged on runs whose
    MNIST part used mnist-5k, and the report does not pretend the data differ; a claim on real data is not."""
    ours = runs(lo=[5.0, 5.0, 5.0], hi=[80.0, 81.0, 79.0])
    sensing = claims.judge(claim(metric="lo", compare="less:hi", data_source="gaussian-sensing"), ours, "mnist-5k")
    assert sensing.verdict == claims.REPRODUCED and "judged on" not in sensing.detail
    real = claims.judge(claim(metric="lo", compare="less:hi", data_source="mnist"), ours, "mnist-5k")
    assert real.verdict == claims.NOT_COMPARABLE and "data differ" in real.detail


@pytest.mark.parametrize("exercise", EXERCISES)
def test_every_claim_quotes_its_seed_at_the_stated_line(exercise):
    """A claim is the seed's words: its quote is on its line of the seed file (whitespace aside); a question of
    ours names the seed line it asks about; every code problem quotes its line."""
    seed = get(exercise).seed_path
    if not seed.exists():
        pytest.skip(f"{seed} is not beside this checkout")
    lines = seed.read_text().split("\n")

    def on_line(quote: str, line: int) -> bool:
        return 0 < line <= len(lines) and " ".join(quote.split()) in " ".join(lines[line - 1].split())

    loaded = claims.load(exercise)
    for c in loaded:
        assert c.line > 0, f"{c.id}: no seed line"
        assert c.question or c.quote, f"{c.id}: a claim of the seed without its words"
        if c.quote:
            assert on_line(c.quote, c.line), f"{c.id}: {c.quote!r} is not on line {c.line} of {seed.name}"
    for problem in claims.code_problems(exercise):
        assert on_line(problem["quote"], problem["line"]), problem


def test_summary_reasons_are_read_off_the_verdicts_numbers():
    """An offset in one direction and shared evaluation sets are named only when the verdicts' numbers show them."""
    def verdict(difference: float, unsampled: float, verdict=claims.REPRODUCED, line=450):
        outcome = procedure.Outcome("value", 6, "t", 0.5, "e", claims.NOT_REPRODUCED,
                                    variances=(1e-4, unsampled), difference=difference)
        return claims.Verdict(claim(line=line), verdict, [0.5], [], "", outcome)

    sections = claims.seed_sections("width")
    offset = [verdict(-0.01, 4e-4) for _ in range(5)] + [verdict(0.01, 0.0, claims.NOT_REPRODUCED, 500)]
    text = claims.main_reasons(offset, sections)[0]
    assert "ours lies above the seed's number in 5 of 6 value claims" in text
    assert "in 5 of 6 value claims the variance of drawing that one set" in text and "4x the seed-to-seed" in text
    balanced = [verdict(d, 0.0) for d in (-0.01, 0.01, -0.02, 0.02)]
    assert claims.main_reasons(balanced, sections) == []
    missed = [verdict(0.01, 0.0, claims.NOT_REPRODUCED, 500)]
    assert 'from the seed\'s section "1.5.2 h=32"' in claims.main_reasons(missed, sections)[0]


def test_a_quote_with_a_pipe_stays_in_its_cell():
    verdicts = claims.judge_all([claim(quote="train loss 0.3642| train accuracy 89.89%", line=331)],
                                runs(m=[0.5, 0.51, 0.49]), "fashion-mnist")
    row = next(line for line in claims._table(verdicts) if line.startswith("| `c`"))
    assert row.count(" | ") == 6 and "0.3642\\| train" in row
