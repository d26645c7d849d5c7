"""Where the repository's non-package parts live (reference/, tests/, examples/).

The exercises themselves are listed in labcheck.exercises.
labcheck is installed editable from its checkout (see README), so these sit next to src/.
$LABCHECK_HOME overrides the checkout root, for an install that keeps them elsewhere.
"""
from __future__ import annotations

import os
from pathlib import Path

def import_by_path(path: Path, name: str):
    """Import the file at `path` as module `name` (cached in sys.modules); never touches sys.path."""
    import importlib.util
    import sys

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def repo_root() -> Path:
    env = os.environ.get("LABCHECK_HOME")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2]


def reference_dir() -> Path:
    return repo_root() / "reference"


def bands_dir() -> Path:
    return reference_dir() / "bands"


def contracts_dir() -> Path:
    """The student contracts, one Markdown file per exercise (Exercise.contract_path)."""
    return reference_dir() / "contracts"


def tests_dir() -> Path:
    return repo_root() / "tests"


def examples_dir() -> Path:
    return repo_root() / "examples"


def cache_root() -> Path:
    """$XDG_CACHE_HOME/labcheck, else ~/.cache/labcheck: the per-user caches (expected answers, decoded
    data, the compiled step) and torchvision downloads."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labcheck"
