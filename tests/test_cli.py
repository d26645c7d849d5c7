"""The labcheck command line: list, data, reproduce's argument handling."""
import json

import pytest

from labcheck import cli
from labcheck.exercises import REGISTRY


def test_list_names_every_exercise(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for ex in REGISTRY.values():
        assert ex.id in out and ex.seed_file in out


def test_data_reports_sources_as_json(capsys):
    cli.main(["data", "--json"])
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["fashion-mnist"]["found"] and rows["fashion-mnist"]["source"] == "fashion-mnist"
    assert rows["mnist"]["found"] and rows["mnist"]["source"] in {"mnist", "mnist-5k"}


def test_reproduce_rejects_an_unknown_exercise():
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "nonsense"])
