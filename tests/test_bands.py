"""labcheck.bands: the one table of bands and tolerances, the one rule that derives bands, and the band
files themselves (every exercise folder's bands.json, whoever wrote it)."""
import copy
import json

import pytest

from labcheck import bands, cli, data, paths, study
from labcheck.exercises import EXERCISES, get

# Data sources a band may be measured on: the real data sets labcheck.data loads, and gradnorms' generated
# matrix-sensing problems (a synthetic task by definition, not a stand-in for a data set).
KNOWN_SOURCES = {data.FASHION, data.MNIST, data.MNIST_5K, "gaussian-sensing"}
PROVENANCE_KEYS = ("seeds", "runs", "device", "versions", "machine", "date", "command")
BAND_FILES = sorted(bands.band_files().values())


@pytest.fixture
def table_dir(tmp_path):
    content = {
        "exercise": "demo",
        "provenance": {"seeds": [0, 1, 2], "runs": 3, "device": "cpu", "versions": {"torch": "2.14.1"}},
        "tolerances": {"forward": {"rtol": 1e-5, "atol": 1e-6, "why": "float32 reordering"}},
        "bands": {"quick.acc": {"mnist-5k": {"lo": 0.8, "hi": 0.9}}},
    }
    (tmp_path / "demo.json").write_text(json.dumps(content))
    return tmp_path


def test_tables_are_keyed_by_exercise(table_dir):
    table, tolerances = bands.load_tables(table_dir)
    assert tolerances["demo.forward"]["rtol"] == 1e-5
    band = table["demo.quick.acc"]["mnist-5k"]
    assert (band.lo, band.hi) == (0.8, 0.9) and band.provenance["seeds"] == [0, 1, 2]


def test_check_band_message_names_value_band_source_and_provenance(table_dir, monkeypatch):
    table, _ = bands.load_tables(table_dir)
    monkeypatch.setattr(bands, "BANDS", table)
    assert bands.check_band("demo.quick.acc", 0.85, "mnist-5k").contains(0.85)
    with pytest.raises(bands.BandError) as err:
        bands.check_band("demo.quick.acc", 0.75, "mnist-5k")
    message = str(err.value)
    for part in ("demo.quick.acc = 0.75", "[0.8, 0.9]", "mnist-5k", "seeds [0, 1, 2]", "torch 2.14.1"):
        assert part in message
    with pytest.raises(KeyError, match="no entry for data source 'mnist'"):
        bands.check_band("demo.quick.acc", 0.85, "mnist")


def test_prediction_band_is_the_t_interval_for_one_new_value():
    values = [0.80, 0.82, 0.81, 0.79, 0.83]
    band = bands.prediction_band(values, false_failure=0.05)
    # t(0.975; 4) = 2.776445; sd = 0.0158114; sqrt(1 + 1/5) = 1.0954451
    half = 2.776445 * 0.0158114 * 1.0954451
    assert band["lo"] == pytest.approx(0.81 - half, abs=1e-6) and band["hi"] == pytest.approx(0.81 + half, abs=1e-6)
    assert (band["n"], band["min"], band["max"]) == (5, 0.79, 0.83)


def test_prediction_band_floor_and_limits():
    band = bands.prediction_band([1.0, 1.0, 1.0], lo=0.0, hi=1.0, floor=0.002)
    assert (band["lo"], band["hi"]) == (0.998, 1.0), "no spread: the floor sets the width, the limit clips it"
    with pytest.raises(ValueError):
        bands.prediction_band([0.5])


def test_limits_first_matching_pattern_wins():
    limits = {"*range*": {"lo": 0.0, "floor": 0.5}, "*acc*": {"lo": 0.0, "hi": 1.0, "floor": 0.002}}
    assert bands.limits_for("MLP.test_accuracy_range", limits)["floor"] == 0.5
    assert bands.limits_for("test_acc.h8", limits) == {"lo": 0.0, "hi": 1.0, "floor": 0.002}
    assert bands.limits_for("loss", limits) == {"lo": None, "hi": None, "floor": 0.0}


def test_write_sweep_replaces_one_budget_and_source_and_keeps_the_rest(tmp_path):
    (tmp_path / "demo.json").write_text(json.dumps({
        "exercise": "demo", "tolerances": {"f": {"rtol": 0, "atol": 1, "why": "w"}},
        "limits": {"*acc*": {"lo": 0.0, "hi": 1.0, "floor": 0.002, "why": "w"}},
        "bands": {"quick.old_metric": {"mnist-5k": {"lo": 0, "hi": 1}},
                  "contract.acc": {"mnist-5k": {"lo": 0, "hi": 1, "provenance": {"seeds": [0]}}}}}))
    prov = bands.provenance([0, 1], device="cpu", command="test")
    bands.write_sweep("demo", "quick", "mnist-5k", {"acc": [0.8, 0.82]}, prov, tmp_path)
    bands.write_sweep("demo", "quick", "fashion-mnist", {"acc": [0.7, 0.71]}, prov, tmp_path)
    content = json.loads((tmp_path / "demo.json").read_text())
    assert "quick.old_metric" not in content["bands"], "a metric the sweep no longer has is dropped"
    assert set(content["bands"]["quick.acc"]) == {"mnist-5k", "fashion-mnist"}
    assert content["tolerances"] and content["limits"] and "contract.acc" in content["bands"]
    assert content["bands"]["quick.acc"]["mnist-5k"]["hi"] == 1.0, "clipped to the accuracy limit"
    table, _ = bands.load_tables(tmp_path)
    band = table["demo.quick.acc"]["mnist-5k"]
    assert band.provenance["runs"] == 2 and "torch" in band.provenance["versions"] and band.n == 2


def test_check_all_fails_on_a_metric_every_seed_reported(tmp_path, monkeypatch):
    prov = bands.provenance([0, 1, 2], device="cpu", command="test")
    bands.write_sweep("demo", "full", "fashion-mnist", {"smallest_interpolating_width": [32.0, 32.0, 32.0],
                                                        "passes_to_interpolation.h8": [90.0, 95.0]}, prov, tmp_path)
    table, _ = bands.load_tables(tmp_path)
    monkeypatch.setattr(bands, "BANDS", table)
    assert len(bands.check_all("demo", "full", {"smallest_interpolating_width": 32.0}, "fashion-mnist")) == 1
    with pytest.raises(bands.BandError, match="smallest_interpolating_width is missing"):
        bands.check_all("demo", "full", {}, "fashion-mnist")  # "no width interpolates" is not accepted
    with pytest.raises(bands.BandError, match="outside its band"):
        bands.check_all("demo", "full", {"smallest_interpolating_width": 128.0}, "fashion-mnist")
    with pytest.raises(KeyError, match="labcheck bands demo --seeds 10 --quick"):
        bands.check_all("demo", "quick", {}, "fashion-mnist")


def test_unknown_tolerance_is_a_clear_error():
    with pytest.raises(KeyError, match="no tolerance"):
        bands.tolerance("nope.nothing")


# ---------------------------------------------------------------------------------------------
# The committed band files


def command_parses(command: str) -> bool:
    """Each `labcheck ...` part of a provenance command (joined by &&) is a command the CLI accepts."""
    import shlex

    for part in command.split("&&"):
        words = shlex.split(part)
        if words[:1] != ["labcheck"]:
            return False
        try:
            if words[1] == "reproduce" and {"--seeds", "--from-bands"} & set(words):
                study.get_reproduce_parser().parse_args(words[2:])
            elif words[1] == "reproduce":  # the other flags go to reference/ID.py
                get(words[2]).load_reference().get_args_parser().parse_args(words[3:])
            else:
                cli.get_args_parser().parse_args(words[1:])
        except SystemExit:
            return False
    return True


def test_command_parses_refuses_a_command_that_does_not_exist():
    assert command_parses("labcheck bands sgd --seeds 10 --contract")
    assert command_parses("labcheck reproduce width --seeds 6 --out x && labcheck bands width --from-sweep sweep.json")
    assert not command_parses("labcheck reproduce sgd --write-bands --band-seeds 5 --device cpu")


@pytest.mark.parametrize("path", BAND_FILES, ids=[p.stem for p in BAND_FILES])
def test_band_file_is_honest(path):
    """Provenance complete with a command that exists, every measured value inside its band, a known source,
    enough seeds, the held-out seed never measured, and every entry re-derived by the one rule from its
    measurements (at the family's per-metric rate; measured-only entries with the reason they are not banded)."""
    content = json.loads(path.read_text())
    assert content["exercise"] == path.parent.name and path.parent.name in EXERCISES
    for name, tol in content.get("tolerances", {}).items():
        assert {"rtol", "atol", "why"} <= set(tol) or "false_failure" in tol, f"tolerance {name} lacks rtol/atol/why"
    redone = bands.derive(copy.deepcopy(content))
    problems = []
    for name, per_source in content.get("bands", {}).items():
        budget = name.split(".", 1)[0]
        for source, entry in per_source.items():
            where = f"{path.name}: {name} [{source}]"
            if "sweep" not in entry:
                problems.append(f"{where}: not from a sweep, so not re-derivable by the rule")
                continue
            prov = content.get("sweeps", {}).get(entry["sweep"][0], {}).get(entry["sweep"][1])
            measured = entry.get("measured", [])
            if source not in KNOWN_SOURCES:
                problems.append(f"{where}: unknown data source")
            if not prov or any(k not in prov for k in PROVENANCE_KEYS):
                problems.append(f"{where}: provenance lacks {[k for k in PROVENANCE_KEYS if k not in (prov or {})]}")
                continue
            if not command_parses(prov["command"]):
                problems.append(f"{where}: its command {prov['command']!r} is not a labcheck command")
            if prov.get("data_source", source) != source:
                problems.append(f"{where}: measured on {prov['data_source']}, stored as {source}")
            if bands.HELD_OUT_SEED in prov["seeds"]:
                problems.append(f"{where}: the held-out seed {bands.HELD_OUT_SEED} was measured")
            minimum = bands.MIN_RUNS.get(budget, 3)
            if prov["runs"] < minimum or len(prov["seeds"]) != prov["runs"]:
                problems.append(f"{where}: {prov['runs']} runs, need >= {minimum} distinct seeds")
            if len(prov.get("seconds", [])) != prov["runs"]:
                problems.append(f"{where}: no wall time per run")
            if entry != redone["bands"][name][source]:
                problems.append(f"{where}: not what the rule derives from its measurements")
            if "lo" not in entry:
                continue
            if len(measured) < 3:
                problems.append(f"{where}: n = {len(measured)} < 3 measurements")
            outside = [v for v in measured if not entry["lo"] <= v <= entry["hi"]]
            if outside:
                problems.append(f"{where}: measured {outside} outside [{entry['lo']}, {entry['hi']}]")
            if entry["false_failure"] * entry["family"] > bands.FAMILY_FALSE_FAILURE * (1 + 1e-12):
                problems.append(f"{where}: {entry['family']} bands at {entry['false_failure']:g} each")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", BAND_FILES, ids=[p.stem for p in BAND_FILES])
def test_every_band_can_fail(path):
    """For each band, the value a broken run gives (the file's 'broken' table: chance accuracy, ln 10, zero
    gradients, the budget's last pass or epoch) lies outside it; where none applies (a search answer, the
    untrained network by design, a setting that does not train in the seed either) a named band catches a
    broken run instead."""
    problems = bands.cannot_fail(json.loads(path.read_text()))
    assert not problems, "\n".join(problems)


def test_cannot_fail_finds_a_band_that_holds_chance_and_the_budget_end():
    content = {"broken": {"*acc*": {"value": 0.1, "why": "chance"}, "*.passes*": {"config": "passes", "why": "end"},
                          "*.rank": {"none": "a search answer", "caught_by": ["acc"]}},
               "sweeps": {"full": {"x": {"config": {"passes": 120}}}},
               "bands": {"full.acc": {"x": {"lo": 0.05, "hi": 0.9}}, "full.passes": {"x": {"lo": 5.0, "hi": 121.0}},
                         "full.rank": {"x": {"lo": 1.0, "hi": 2.0}}, "full.loss": {"x": {"lo": 0.0, "hi": 1.0}}}}
    problems = "\n".join(bands.cannot_fail(content))
    assert "full.acc [x]: band [0.05, 0.9] accepts a broken run's 0.1" in problems
    assert "full.passes [x]: band [5, 121] accepts a broken run's 120" in problems
    assert "full.rank [x]: states no broken value and no band of ['acc'] catches" in problems
    assert "full.loss [x]: no broken-run value stated" in problems
    content["bands"]["full.acc"]["x"]["lo"] = 0.2  # now the accuracy band catches a broken run, so rank is fine
    assert not any("full.rank" in p or "full.acc" in p for p in bands.cannot_fail(content))


def test_derive_bands_a_family_at_the_family_rate_and_stores_the_rest_as_measurements():
    values = [0.80, 0.82, 0.81, 0.79, 0.83]
    content = {"band_tests": {"quick": {"checks": ["a*"], "why": "the test checks a*"}},
               "measured_only": {"quick.a3": {"why": "cannot fail", "caught_by": ["a1"]}},
               "bands": {f"quick.{m}": {"x": {"measured": values, "sweep": ["quick", "x"]}}
                         for m in ("a1", "a2", "a3", "b")}}
    derived = bands.derive(content)["bands"]
    expected = bands.prediction_band(values, false_failure=bands.FAMILY_FALSE_FAILURE / 2)
    for m in ("a1", "a2"):
        assert (derived[f"quick.{m}"]["x"]["lo"], derived[f"quick.{m}"]["x"]["hi"]) == (expected["lo"], expected["hi"])
        assert derived[f"quick.{m}"]["x"]["family"] == 2
    assert derived["quick.a3"]["x"]["not_banded"] == "cannot fail" and "lo" not in derived["quick.a3"]["x"]
    assert derived["quick.b"]["x"]["not_banded"] == "the test checks a*" and derived["quick.b"]["x"]["n"] == 5


def test_write_sweep_stores_each_metric_under_the_data_it_was_measured_on(tmp_path, monkeypatch):
    prov = bands.provenance([0, 1, 2], device="cpu", command="labcheck bands demo --seeds 3", data_source="mnist-5k")
    bands.write_sweep("demo", "quick", "mnist-5k", {"acc": [0.8, 0.81, 0.82], "sensing.rank": [2.0, 2.0, 2.0]},
                      prov, tmp_path, metric_sources={"sensing.": "gaussian-sensing"})
    content = json.loads((tmp_path / "demo.json").read_text())
    assert set(content["bands"]["quick.sensing.rank"]) == {"gaussian-sensing"}
    assert content["sweeps"]["quick"]["gaussian-sensing"]["part_of_sweep_on"] == "mnist-5k"
    table, _ = bands.load_tables(tmp_path)
    monkeypatch.setattr(bands, "BANDS", table)
    checked = bands.check_all("demo", "quick", {"acc": 0.81, "sensing.rank": 2.0}, "mnist-5k",
                              {"sensing.": "gaussian-sensing"})
    assert sorted(b.source for b in checked) == ["gaussian-sensing", "mnist-5k"]


def test_only_sources_with_measurements_have_bands():
    """No band for full MNIST unless a sweep ran on full MNIST (the seed notebooks' numbers are claims)."""
    for path in BAND_FILES:
        content = json.loads(path.read_text())
        swept = {(b, s) for b, per in content.get("sweeps", {}).items() for s in per}
        for name, per_source in content.get("bands", {}).items():
            for source, entry in per_source.items():
                if "sweep" in entry:
                    assert tuple(entry["sweep"]) in swept and entry["sweep"][1] == source, f"{path.name}: {name}"
