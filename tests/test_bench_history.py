"""Saved bench runs (labcheck.bench.history): the compare's statistics on runs made up here, and
`labcheck bench --save / --compare / --to / --history` end to end on two measured runs, one slowed on purpose."""
import argparse
import dataclasses
import json
import math

import pytest

from labcheck import cli
from labcheck.bench import builders, command, harness, history
from bench_fixtures import restore_threads, small_split  # noqa: F401  (fixtures)

SLOWDOWN = 4  # the slowed run's core does its round this many times: its ratio and %peak fall to a quarter


def _run(name: str, ratios: list[float], peaks: list[float], case: str = "sgd-custom", **settings) -> history.SavedRun:
    figures = {k: [1.0] * len(ratios) for k in history.RECORDED}
    figures.update(ratio=list(ratios), peak_fraction=list(peaks))
    fields = dict(date="2026-01-01T00:00:00+00:00", device="cpu", threads=1, clock="cpu", seconds=1.0,
                  machine={"node": "here"}, versions={"torch": "x"}, training_step="compiled")
    fields.update(settings)
    return history.SavedRun(name, cases={case: figures}, **fields)


def _row(out: str, case: str) -> str:
    """The compare table's line of `case`."""
    return next(line for line in out.splitlines() if line.startswith(case) and "->" in line)


def test_identical_runs_are_the_same():
    row, = history.compare(_run("a", [15.0, 15.3, 14.8], [0.7, 0.71, 0.69]), _run("b", [15.0, 15.3, 14.8], [0.7, 0.71, 0.69]))
    assert row.verdict == "same" and all(c.effect == pytest.approx(0.0) and c.t == 0.0 for c in row.changes)


def test_a_halved_ratio_is_a_regression_and_a_doubled_one_faster():
    old = _run("a", [15.0, 15.3, 14.8], [0.70, 0.71, 0.69])
    slow = _run("b", [7.5, 7.6, 7.4], [0.70, 0.71, 0.69])
    row, = history.compare(old, slow)
    ratio, peak = row.changes
    assert row.verdict == "REGRESSION" and ratio.verdict == "REGRESSION" and peak.verdict == "same"
    assert ratio.effect == pytest.approx(-0.5, abs=0.01) and ratio.t < -10 and ratio.n_old == ratio.n_new == 3
    row, = history.compare(slow, old)
    assert row.verdict == "faster" and row.changes[0].effect == pytest.approx(1.0, abs=0.02)


def test_the_threshold_grows_with_the_repeats_spread_and_never_drops_below_the_floor():
    old = _run("a", [10.0, 10.0, 10.0], [0.5] * 3)
    quiet = history.compare(old, _run("b", [8.5, 8.5, 8.5], [0.5] * 3))[0].changes[0]
    assert quiet.threshold == history.MIN_EFFECT and quiet.verdict == "REGRESSION"  # -15%, no spread
    tiny = history.compare(old, _run("b", [9.6, 9.6, 9.6], [0.5] * 3))[0].changes[0]
    assert tiny.verdict == "same" and tiny.t == -math.inf  # -4%: real, but under the floor
    noisy = history.compare(_run("a", [10.0, 14.0, 7.0], [0.5] * 3), _run("b", [8.5, 12.0, 6.0], [0.5] * 3))[0].changes[0]
    assert noisy.threshold > 0.5 and noisy.verdict == "same"  # the same -15% inside the noise of the repeats


def test_the_false_alarm_budget_is_shared_by_every_figure_compared():
    one = history.change("ratio", [10.0, 10.4, 9.8], [9.0, 9.3, 8.8], comparisons=1, min_effect=0.0)
    many = history.change("ratio", [10.0, 10.4, 9.8], [9.0, 9.3, 8.8], comparisons=14, min_effect=0.0)
    assert many.threshold > one.threshold and one.t == many.t


def test_runs_on_another_device_or_thread_count_do_not_compare():
    old = _run("a", [15.0], [0.7])
    assert "cuda" in history.not_comparable(old, _run("b", [15.0], [0.7], device="cuda"))
    with pytest.raises(ValueError, match="thread"):
        history.compare(old, _run("b", [15.0], [0.7], threads=2))


def test_save_and_load_round_trip_and_name_the_runs_there_are(tmp_path):
    run = _run("nightly-1", [15.0, 15.3], [0.7, 0.71])
    path = history.save(run, tmp_path)
    assert path == tmp_path / "nightly-1.json" and history.load("nightly-1", tmp_path) == run
    with pytest.raises(FileNotFoundError, match="saved: nightly-1"):
        history.load("other", tmp_path)
    with pytest.raises(ValueError, match="letters"):
        history.save(dataclasses.replace(run, name="../escape"), tmp_path)


def test_save_compare_and_history_of_two_measured_runs_one_slowed_on_purpose(
        monkeypatch, tmp_path, capsys, small_split, restore_threads):
    monkeypatch.setattr(harness, "PEAK_SIZES", (256,))
    monkeypatch.setattr(builders, "train_split", lambda case, seed: small_split)
    argv = ["bench", "--exercise", "hyperparams", "--seconds", "0.05", "--grading-class", "0", "--store", str(tmp_path)]
    assert cli.main([*argv, "--save", "a"]) == 0
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["device"] == "cpu" and len(saved["cases"]["hyperparams"]["ratio"]) == command.SAVED_REPEATS

    real_build = builders.build

    def slowed(case, device="cpu", **kwargs):
        work = real_build(case, device, **kwargs)
        once = work.core.run

        def run():
            for _ in range(SLOWDOWN):
                once()

        return dataclasses.replace(work, core=dataclasses.replace(work.core, run=run))

    monkeypatch.setattr(builders, "build", slowed)
    capsys.readouterr()
    assert cli.main([*argv, "--save", "b", "--compare", "a"]) == 1
    assert _row(capsys.readouterr().out, "hyperparams").endswith("REGRESSION")
    ratio = history.compare(history.load("a", tmp_path), history.load("b", tmp_path))[0].changes[0]
    assert ratio.effect == pytest.approx(1 / SLOWDOWN - 1, abs=0.15), ratio

    assert cli.main(["bench", "--compare", "a", "--to", "a", "--store", str(tmp_path)]) == 0
    assert _row(capsys.readouterr().out, "hyperparams").endswith("same")
    assert cli.main(["bench", "--compare", "b", "--to", "a", "--store", str(tmp_path)]) == 0
    assert _row(capsys.readouterr().out, "hyperparams").endswith("faster")
    assert cli.main(["bench", "--compare", "nope", "--store", str(tmp_path)]) == 2

    assert cli.main(["bench", "--history", "--store", str(tmp_path), "--out", str(tmp_path / "plots")]) == 0
    png = tmp_path / "plots" / "hyperparams.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "2 saved runs" in capsys.readouterr().out


def test_bench_flags_map_to_the_options():
    args = cli.get_args_parser().parse_args(["bench", "--save", "x", "--compare", "y", "--repeats", "5"])
    opts = command.Options.from_args(args)
    assert (opts.save, opts.compare, opts.repeat_count) == ("x", "y", 5)
    assert command.Options(compare="y").repeat_count == command.SAVED_REPEATS and command.Options().repeat_count == 1
    assert isinstance(args, argparse.Namespace)
