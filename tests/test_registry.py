"""The exercise registry is the only list of exercises, and every file it names exists."""
from __future__ import annotations

import importlib
import re

import pytest

from labcheck import exercises, paths
from labcheck.bench import builders
from labcheck.exercises import EXERCISES, REGISTRY


@pytest.mark.parametrize("exercise", EXERCISES)
def test_every_registered_exercise_has_its_files(exercise):
    ex = exercises.get(exercise)
    assert ex.reference_path.is_file()
    assert ex.bands_path.is_file()
    assert ex.contract_tests.is_file()
    assert ex.examples_dir.is_dir() and (ex.examples_dir / "correct.py").is_file()
    assert importlib.import_module(ex.probes_module).PROBES
    assert (paths.repo_root().parent / "shared" / "seeds" / ex.seed_file).name == ex.seed_file


def test_bench_cases_are_the_registrys():
    registered = {case for ex in REGISTRY.values() for case in ex.bench_cases}
    assert registered == set(builders.CASES)
    for ex in REGISTRY.values():
        assert all(builders.CASES[name].exercise == ex.id for name in ex.bench_cases)


def test_unknown_exercise_names_the_known_ones():
    with pytest.raises(ValueError, match="known: width, sgd"):
        exercises.get("mnist")


def test_no_other_list_of_exercises_remains():
    """No source or test file outside the registry spells out the exercise ids as a collection."""
    ids = "|".join(EXERCISES)
    item = rf"""["'](?:{ids})["']"""
    listing = re.compile(rf"{item}(?:[^\n]*?,[ \t]*{item}){{2}}")  # three ids in one line: a list of them
    offenders = []
    for path in sorted((paths.repo_root() / "src").rglob("*.py")) + sorted(paths.tests_dir().rglob("*.py")):
        if path.name in ("exercises.py", "test_registry.py"):
            continue
        if listing.search(path.read_text(encoding="utf-8")):
            offenders.append(str(path.relative_to(paths.repo_root())))
    assert not offenders, f"lists of exercises outside labcheck.exercises: {offenders}"
