"""The one registry of labcheck's exercises: it discovers them, and nothing else lists them.

    from labcheck.exercises import EXERCISES, get
    ex = get("width")
    ex.reference_path, ex.contract_tests, ex.probes(), ex.train_split(ds.train, seed=0)

An exercise is a folder `exercises/<id>/` that holds all of it (`labcheck new ID` writes one):
  exercise.py        its registry entry: `EXERCISE = Exercise(...)`, the fields below
  CONTRACT.md        what students must implement (names, signatures, meaning), in the students' words
  reference.py       the runnable reference: the oracle every graded answer is compared with
  calls.py           the worker's side of each graded call: calls the student's functions, returns raw data
                     (the one file of the folder a submission's sandbox can read; labcheck.untrusted)
  probes.py          the grader's side of each graded call: builds inputs, derives results from raw data
  test_contract.py   the graded contract tests (run against the reference by the default suite)
  test_reference.py  tests of the reference itself (properties, the seed's maths)        [optional]
  bands.json         tolerances and metric bands, per data source                         [optional]
  claims.json        the seed's claims, quoted, and how they are judged                    [optional]
  examples/          correct.py and buggy_<mistake>.py: submissions with known outcomes
  hostile/           submissions that attack this exercise's grading                        [optional]
Folders are found under exercises/ (and $LABCHECK_EXERCISES, folders separated by ':'); labcheck's own
`_selftest` exercise lives with the hostile corpus in tests/hostile/_selftest/ and is never listed.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from labcheck import dataset_names, paths

if TYPE_CHECKING:  # the registry loads without torch (`labcheck grade`'s own process never needs it)
    from labcheck.data import Split

__all__ = ["Exercise", "EXERCISES", "REGISTRY", "get", "dataset_names"]


def all_train(split: "Split", seed: int) -> "Split":
    """The seed trains on the whole train split."""
    return split


@dataclasses.dataclass(frozen=True)
class Exercise:
    id: str  # the name on the command line, in markers and in file names: the folder's name
    title: str  # what the exercise reproduces, one line
    # Optional parts, each saying what it adds:
    seed_file: str | None = None  # the seed notebook (as text) in ../shared/seeds/: claims quote it
    dataset: str | None = None  # dataset_names.MNIST or .FASHION: the real data it trains on (None: generated)
    subsampling: str = "all train images"  # how the seed subsamples its training images, in words
    train_split: Callable[["Split", int], "Split"] = all_train  # (train split, seed) -> the seed's images
    bench_cases: tuple[str, ...] = ()  # its throughput cases in labcheck.bench.builders.CASES (`labcheck bench`)
    devices: tuple[str, ...] = ("cpu", "cuda")  # where its reference trains (its --device flag does something)
    reference_file: str = "reference.py"  # file names inside the folder (the internal _selftest overrides two)
    contract_file: str = "test_contract.py"
    folder: Path = Path()  # set by the registry: where exercise.py was found

    @property
    def reference_path(self) -> Path:
        return (self.folder / self.reference_file).resolve()

    @property
    def contract_tests(self) -> Path:
        return (self.folder / self.contract_file).resolve()

    @property
    def bands_path(self) -> Path:
        return self.folder / "bands.json"

    @property
    def claims_path(self) -> Path:
        return self.folder / "claims.json"

    @property
    def calls_path(self) -> Path:
        return self.folder / "calls.py"

    @property
    def probes_path(self) -> Path:
        return self.folder / "probes.py"

    @property
    def contract_path(self) -> Path:
        return self.folder / "CONTRACT.md"

    @property
    def examples_dir(self) -> Path:
        return self.folder / "examples"

    @property
    def hostile_dir(self) -> Path:
        return self.folder / "hostile"

    @property
    def seed_path(self) -> Path | None:
        return paths.seeds_dir() / self.seed_file if self.seed_file else None

    def load_reference(self):
        """reference.py, imported by path under a unique module name (cached in sys.modules)."""
        if not self.reference_path.is_file():
            raise FileNotFoundError(f"{self.reference_path} not found (LABCHECK_HOME={paths.repo_root()})")
        return paths.import_by_path(self.reference_path, f"labcheck_reference_{self.id}")

    def fingerprint(self) -> str:
        """sha256 of everything a grade of this exercise depends on: every file of its folder (and its
        reference and contract, where they sit outside it) and labcheck's own code. Grades and expected
        answers are reused only while it is unchanged; no hand-kept list of files."""
        return _fingerprint(self.folder.resolve(), self.reference_path, self.contract_tests)

    def probes(self):
        """probes.py's PROBES (grader side), imported by path."""
        return paths.import_by_path(self.probes_path, f"labcheck_probes_{self.id}").PROBES

    def probes_module(self):
        """probes.py itself (its helpers, for labcheck's own tests)."""
        return paths.import_by_path(self.probes_path, f"labcheck_probes_{self.id}")


@functools.lru_cache(maxsize=None)
def _fingerprint(folder: Path, *files: Path) -> str:
    import hashlib

    package = Path(__file__).parent
    everything = sorted({*folder.rglob("*"), *files, *package.rglob("*.py"), *package.rglob("*.cpp")})
    h = hashlib.sha256()
    for f in everything:
        if f.is_file() and not f.is_symlink() and "__pycache__" not in f.parts:
            h.update(str(f).encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def exercise_roots() -> list[Path]:
    """Where exercise folders are looked for: exercises/, then $LABCHECK_EXERCISES (':'-separated)."""
    extra = [Path(p) for p in os.environ.get("LABCHECK_EXERCISES", "").split(os.pathsep) if p]
    return [paths.exercises_dir(), *extra]


def _load(entry: Path) -> Exercise:
    module = paths.import_by_path(entry, f"labcheck_exercise_{entry.parent.name}")
    exercise = dataclasses.replace(module.EXERCISE, folder=entry.parent)
    if exercise.id != entry.parent.name:
        raise ValueError(f"{entry}: id {exercise.id!r} is not its folder's name {entry.parent.name!r}")
    return exercise


@functools.lru_cache(maxsize=1)
def _discovered() -> dict[str, Exercise]:
    found: dict[str, Exercise] = {}
    for root in exercise_roots():
        for entry in sorted(Path(root).glob("*/exercise.py")):
            exercise = _load(entry)
            found.setdefault(exercise.id, exercise)
    internal = paths.tests_dir() / "hostile" / "_selftest" / "exercise.py"
    if internal.is_file():
        found["_selftest"] = _load(internal)
    return found


class _Registry(dict):
    """id -> Exercise for every discovered folder (a dict filled on first use)."""

    def _fill(self) -> None:
        if not dict.__len__(self):
            self.update(_discovered())

    def __getitem__(self, key):
        self._fill()
        return dict.__getitem__(self, key)

    def __contains__(self, key):
        self._fill()
        return dict.__contains__(self, key)

    def __iter__(self):
        self._fill()
        return (k for k in dict.__iter__(self) if not k.startswith("_"))

    def __len__(self):
        return sum(1 for _ in self)

    def keys(self):
        return list(self)

    def values(self):
        return [self[k] for k in self]

    def items(self):
        return [(k, self[k]) for k in self]

    def get(self, key, default=None):
        return self[key] if key in self else default


REGISTRY: dict[str, Exercise] = _Registry()


def __getattr__(name: str):
    if name == "EXERCISES":  # computed on use: a folder added since import (labcheck new) is listed
        return tuple(REGISTRY)
    raise AttributeError(name)


def get(exercise: str) -> Exercise:
    """The registered exercise `exercise`, or ValueError naming the known ones."""
    if exercise in REGISTRY:
        return REGISTRY[exercise]
    raise ValueError(f"unknown exercise {exercise!r}; known: {', '.join(REGISTRY)}")


def refresh() -> None:
    """Discover the folders again (after `labcheck new` wrote one) and forget the fingerprints."""
    _discovered.cache_clear()
    _fingerprint.cache_clear()
    dict.clear(REGISTRY)
