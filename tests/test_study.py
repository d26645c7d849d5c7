"""labcheck.study: `labcheck bands ID --seeds N` and `labcheck reproduce ID --seeds N`, end to end on tiny budgets.

The issue's done-when command `labcheck reproduce width --quick --seeds 3` runs the same code path as the
--dry-run below (only the reference's budget differs); the band sweep is checked into a temporary folder.
"""
import json
import shutil

import pytest

from labcheck import bands, cli, paths, study
from labcheck.exercises import EXERCISES, get


@pytest.fixture(scope="module")
def width_dry_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    status = cli.main(["reproduce", "width", "--seeds", "2", "--dry-run", "--executor", "serial", "--out", str(out)])
    assert status == 0
    return out


def test_reproduce_with_seeds_writes_report_and_png(width_dry_study):
    out = width_dry_study
    report = (out / "report.md").read_text()
    assert "| `eta_star` |" in report and "| `smallest_interpolating_width` |" in report
    assert "budget: **dry**" in report and "seeds [0, 1]" in report
    # the dry run's claims on the full budget are not comparable; eta* (any budget) gets a verdict
    assert "budget differs" in report and report.count("**not comparable**") >= 3
    assert (out / "claims.png").stat().st_size > 1000
    sweep = json.loads((out / "sweep.json").read_text())
    assert [r["seed"] for r in sweep["runs"]] == [0, 1] and all(r["metrics"]["divergent_lr"] > 0 for r in sweep["runs"])
    assert (out / "seed_1" / "answers.json").exists(), "each run's own outputs"


def test_bands_from_a_recorded_sweep_band_exactly_its_runs(width_dry_study, tmp_path):
    """`labcheck bands ID --from-sweep` turns a reproduction's runs into bands without running again."""
    recorded = width_dry_study / "sweep.json"
    with pytest.raises(SystemExit, match="'dry' budget"):
        cli.main(["bands", "width", "--from-sweep", str(recorded), "--bands-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="not a sweep of sgd"):
        cli.main(["bands", "sgd", "--from-sweep", str(recorded), "--bands-dir", str(tmp_path)])
    sweep = json.loads(recorded.read_text())
    sweep["provenance"]["budget"] = "quick"  # pretend the two runs were a quick study, to band them
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    with pytest.raises(SystemExit, match="at least 10 seeds"):
        cli.main(["bands", "width", "--from-sweep", str(tmp_path / "sweep.json"), "--bands-dir", str(tmp_path)])
    assert cli.main(["bands", "width", "--from-sweep", str(tmp_path / "sweep.json"), "--allow-few",
                     "--bands-dir", str(tmp_path)]) == 0
    content = json.loads((tmp_path / "width.json").read_text())
    source = sweep["provenance"]["data_source"]
    prov = content["sweeps"]["quick"][source]
    assert prov["seeds"] == [0, 1] and "reproduce width" in prov["command"] and "--from-sweep" in prov["command"]
    band = content["bands"]["quick.divergent_lr"][source]
    assert band["measured"] == [r["metrics"]["divergent_lr"] for r in sweep["runs"]]


def test_reproduce_without_seeds_still_runs_the_reference_once(tmp_path):
    assert cli.main(["reproduce", "width", "--dry-run", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "answers.json").read_text())["passes"] == 1


def test_bands_command_writes_the_rule_and_provenance(tmp_path):
    shutil.copy(get("sgd").bands_path, tmp_path / "sgd.json")
    before = json.loads((tmp_path / "sgd.json").read_text())
    tiny = "--max-train 256 --n-test 200"
    status = cli.main(["bands", "sgd", "--seeds", "2", "--quick", "--allow-few", "--first-seed", "5",
                       "--executor", "serial", "--bands-dir", str(tmp_path), "--reference-args", tiny])
    assert status == 0
    content = json.loads((tmp_path / "sgd.json").read_text())
    assert content["tolerances"] == before["tolerances"] and content["limits"] == before["limits"]
    prov = content["sweeps"]["quick"]["mnist-5k"]
    assert prov["seeds"] == [5, 6] and len(prov["seconds"]) == 2 and prov["budget"] == "quick"
    assert "--reference-args" in prov["command"] and prov["data_source"] == "mnist-5k"
    band = content["bands"]["quick.test_acc.custom_sgd"]["mnist-5k"]
    assert band["n"] == 2 and band["lo"] <= band["min"] <= band["max"] <= band["hi"]
    assert content["bands"]["quick.custom_vs_torch.sgd.max_abs_param_difference"]["mnist-5k"]["hi"] == 0.0


def test_bands_refuses_too_few_seeds_and_the_held_out_seed(monkeypatch):
    monkeypatch.setattr(study, "run_sweep", lambda *a, **k: pytest.fail("refused only after running the seeds"))
    with pytest.raises(SystemExit, match="at least 10 seeds"):
        cli.main(["bands", "sgd", "--seeds", "3", "--quick"])
    with pytest.raises(SystemExit, match="held out"):
        study.seeds_from(5, bands.HELD_OUT_SEED - 2)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_every_reference_has_the_skeleton(exercise):
    """The reference skeleton of issue #13 (../notes/SKELETON.md): the same names and flags in all five."""
    module = get(exercise).load_reference()
    for name in ("Config", "QUICK", "DRY_RUN", "get_args_parser", "main", "band_metrics"):
        assert hasattr(module, name), f"exercises/{exercise}/reference.py lacks {name}"
    args = module.get_args_parser().parse_args(["--seed", "3", "--deterministic", "--quick", "--out", "x"])
    cfg = module.Config.from_args(args)
    assert (cfg.seed, cfg.deterministic, cfg.quick, cfg.out) == (3, True, True, "x")
    assert all(getattr(cfg, k) == v for k, v in module.QUICK.items()), "QUICK applied by from_args"
    dry = module.Config.from_args(module.get_args_parser().parse_args(["--dry-run"]))
    assert all(getattr(dry, k) == v for k, v in module.DRY_RUN.items()), "DRY_RUN applied by from_args"
    assert module.Config().out is None, "no files unless --out"
    flags = {o for a in module.get_args_parser()._actions for o in a.option_strings}
    assert not flags & {"--write-bands", "--band-seeds", "--bands-seeds"}


def test_reproduce_from_bands_judges_the_committed_runs_without_running(tmp_path, monkeypatch):
    """The claims of the committed full sgd sweep, judged from its band file (no reference run: the
    runner is replaced by one that fails)."""
    monkeypatch.setattr(study, "run_sweep", lambda *a, **k: pytest.fail("--from-bands must not run the reference"))
    assert cli.main(["reproduce", "sgd", "--from-bands", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    stored = json.loads((get("sgd").bands_path).read_text())["sweeps"]["full"]["mnist-5k"]
    assert f"seeds {stored['seeds']}" in report and "--from-bands" in report
    assert "| `momentum_beats_sgd` |" in report and "**reproduced**" in report
    assert not (tmp_path / "sweep.json").exists(), "no new runs, so no new sweep"
