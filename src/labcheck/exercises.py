"""The one registry of labcheck's exercises: everything else (CLI, plugin, grading, benchmarks,
tests) looks an exercise up here, and no other list of exercises exists.

    from labcheck.exercises import EXERCISES, get
    ex = get("width")
    ex.reference_path, ex.contract_tests, ex.probes_module, ex.train_split(ds.train, seed=0)

Each exercise is one seed notebook in `../shared/seeds/` and one student contract
(reference/contracts/<id>.md, first written in `../shared/CONTRACTS.md`). The files that belong to it follow from its id:
  reference/<id>.py                    the runnable reference (the oracle)
  reference/bands/<id>.json            its tolerances and metric bands per data source
  reference/contracts/<id>.md          the student contract: what students implement (labcheck handout)
  tests/contract/test_<id>_contract.py the graded contract tests
  src/labcheck/probes/<id>.py          the grader's side of each graded call: inputs, derived results
  src/labcheck/untrusted/calls/<id>.py the worker's side: calls the student's functions, returns raw data
  examples/<id>/*.py                   a correct and several buggy bundled submissions
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from labcheck import dataset_names, paths

if TYPE_CHECKING:  # the registry loads without torch (`labcheck grade`'s own process never needs it)
    from labcheck.data import Split


def _all_train(split: Split, seed: int) -> Split:
    return split


def _first_600_per_class(split: Split, seed: int) -> Split:
    from labcheck import data

    return data.first_per_class(split, 600)  # the seed's loader takes the first 600 images of each class


def _random_1000(split: Split, seed: int) -> Split:
    from labcheck import data

    return data.random_split(split, [1000], seed)[0]  # the seed's random_split of the 60k train images


def _fraction_12(split: Split, seed: int) -> Split:
    from labcheck import data

    return data.subsample_fraction(split, 0.12, seed)  # the seed trains on a random 12% of the train set


@dataclasses.dataclass(frozen=True)
class Exercise:
    id: str  # the name on the command line, in markers and in file names
    seed_file: str  # the seed notebook (as text) in ../shared/seeds/
    dataset: str  # dataset_names.MNIST or dataset_names.FASHION: the data set the seed trains on
    subsampling: str  # how the seed subsamples its training images, in words
    title: str  # what the exercise reproduces, one line
    train_split: Callable[[Split, int], Split]  # (the data set's train split, seed) -> the seed's images
    bench_cases: tuple[str, ...]  # names of its throughput cases in labcheck.bench.CASES

    @property
    def reference_path(self) -> Path:
        return paths.reference_dir() / f"{self.id}.py"

    @property
    def bands_path(self) -> Path:
        return paths.bands_dir() / f"{self.id}.json"

    @property
    def contract_path(self) -> Path:
        return paths.contracts_dir() / f"{self.id}.md"

    @property
    def contract_tests(self) -> Path:
        return paths.tests_dir() / "contract" / f"test_{self.id}_contract.py"

    @property
    def probes_module(self) -> str:
        return f"labcheck.probes.{self.id}"

    @property
    def examples_dir(self) -> Path:
        return paths.examples_dir() / self.id

    def load_reference(self):
        """reference/<id>.py, imported by path under a unique module name (cached in sys.modules)."""
        if not self.reference_path.is_file():
            raise FileNotFoundError(f"{self.reference_path} not found (LABCHECK_HOME={paths.repo_root()})")
        return paths.import_by_path(self.reference_path, f"labcheck_reference_{self.id}")


_ALL = (
    Exercise("width", "hw2_width_fashion_mnist.txt", dataset_names.FASHION, "random 12% of the 60k train images",
             "performance vs width, divergent learning rate, interpolation", _fraction_12, ("width",)),
    Exercise("sgd", "lab3_sgd_from_scratch_mnist.txt", dataset_names.MNIST, "all train images",
             "SGD and momentum from scratch vs torch.optim.SGD", _all_train, ("sgd-custom", "sgd-torch")),
    Exercise("batchnorm", "a4_batchnorm_mlp_mnist.txt", dataset_names.MNIST, "first 600 train images per class",
             "BatchNorm MLPs, timing per epoch, deeper variant", _first_600_per_class, ("batchnorm",)),
    Exercise("hyperparams", "a2_fashion_hyperparams.txt", dataset_names.FASHION,
             "random_split 1000 train / 500 validation",
             "optimizers, batch size, batchnorm, augmentation, width", _random_1000, ("hyperparams",)),
    Exercise("gradnorms", "ps2_gradient_norms_matrix_sensing.txt", dataset_names.MNIST, "all train images",
             "per-layer gradient norms, matrix sensing", _all_train, ("gradnorms", "gradnorms-sensing")),
)

REGISTRY: dict[str, Exercise] = {ex.id: ex for ex in _ALL}
EXERCISES: tuple[str, ...] = tuple(REGISTRY)  # ids in the order of the README's table


def get(exercise: str) -> Exercise:
    """The registered exercise `exercise`, or ValueError naming the known ones."""
    try:
        return REGISTRY[exercise]
    except KeyError:
        raise ValueError(f"unknown exercise {exercise!r}; known: {', '.join(EXERCISES)}") from None
