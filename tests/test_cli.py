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


def test_the_grading_command_itself_never_imports_torch():
    """`labcheck grade`'s own process only orchestrates (graders and workers import torch): importing torch
    there cost 1.8 s of each one-submission Gradescope/PrairieLearn container. The registry, discovery,
    the isolation check and the bubblewrap command must all work without it."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import labcheck.cli, labcheck.grade as grade\n"
            "from labcheck import sandbox\n"
            "sandbox.environment_paths(); sandbox.achievable_isolation()\n"
            "grade.discover_examples('sgd'); grade.WorkerZygotes(grade.Options(out='.'), {'sgd'}).close()\n"
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
