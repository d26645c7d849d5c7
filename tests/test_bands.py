"""labcheck.bands: the one table of bands and tolerances, and its messages."""
import json

import pytest

from labcheck import bands


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


def test_band_from_measurements_widens_by_the_largest_margin():
    lo, hi = bands.band_from_measurements([1.0, 1.2], sd_margin=0.0, abs_margin=0.5)
    assert (lo, hi) == (0.5, 1.7)
    lo, hi = bands.band_from_measurements([0.9, 1.0], rel_margin=0.0, abs_margin=0.0, sd_margin=0.0, hi_clip=0.95)
    assert (lo, hi) == (0.9, 0.95)


def test_write_bands_merges_with_provenance(tmp_path):
    prov = bands.provenance([0, 1], device="cpu", command="test")
    bands.write_bands("demo", "mnist-5k", {"quick.acc": [0.8, 0.82]}, prov, directory=tmp_path)
    bands.write_bands("demo", "fashion-mnist", {"quick.acc": [0.7, 0.71]}, prov, directory=tmp_path)
    table, _ = bands.load_tables(tmp_path)
    assert set(table["demo.quick.acc"]) == {"mnist-5k", "fashion-mnist"}
    assert table["demo.quick.acc"]["mnist-5k"].provenance["runs"] == 2
    assert "torch" in table["demo.quick.acc"]["mnist-5k"].provenance["versions"]


def test_unknown_tolerance_is_a_clear_error():
    with pytest.raises(KeyError, match="no tolerance"):
        bands.tolerance("nope.nothing")
