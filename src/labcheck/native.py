"""labcheck's one compiled extension, labcheck_native.Step (csrc/relu_mlp_step.cpp): the training step.

core.ReluMLPStep.step is 17 ATen calls; from Python each costs ~3 us of argument parsing and glue, ~100 us
of the bench's 838 us Lab-3 step. The C++ file makes the same calls in the same order (bit-identical results,
tests/test_training_core.py), so the step runs at the speed of its kernels. It is built once per machine
with torch's own extension builder (g++ and ninja; ~30 s) into ~/.cache/labcheck/native/<key>, keyed by
the source, torch's version and Python's, and imported from there afterwards (~10 ms).

Where it cannot be built or loaded (no compiler, a read-only home, LABCHECK_NATIVE=0) the Python step
runs instead; `status()` says which and why, and `labcheck bench` prints it.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import platform
import sys
from pathlib import Path

import torch
from filelock import FileLock  # torch's own dependency, the lock its extension builder holds

from labcheck import paths

SOURCE = Path(__file__).with_name("csrc") / "relu_mlp_step.cpp"
DISABLE_ENV = "LABCHECK_NATIVE"  # "0": never build or load it; the Python step runs
LIBRARY_NAME = "labcheck_native"


def build_dir() -> Path:
    """Where this source, for this torch and this Python, is built: a new key never loads a stale library."""
    key = hashlib.sha256(SOURCE.read_bytes())
    key.update(f"{torch.__version__} {sys.version} {platform.machine()}".encode())
    return paths.cache_root() / "native" / key.hexdigest()[:16]


def _build(directory: Path):
    """Compile and import the module (torch.utils.cpp_extension; a lock file there serialises builders)."""
    quiet = logging.getLogger("torch.utils.cpp_extension")  # "No CUDA runtime is found": none is needed
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    # ninja comes from pip (pyproject.toml), next to this interpreter, which need not be on PATH.
    env_path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env_path])
    try:
        from torch.utils import cpp_extension

        directory.mkdir(parents=True, exist_ok=True)
        return cpp_extension.load(name=LIBRARY_NAME, sources=[str(SOURCE)], build_directory=str(directory),
                                  extra_cflags=["-O2"], verbose=False)
    finally:
        os.environ["PATH"] = env_path
        quiet.setLevel(level)


def _import(library: Path):
    spec = importlib.util.spec_from_file_location(LIBRARY_NAME, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def _load() -> tuple[object | None, str]:
    if os.environ.get(DISABLE_ENV) == "0":
        return None, f"off (${DISABLE_ENV}=0)"
    directory = build_dir()
    library = directory / f"{LIBRARY_NAME}.so"
    try:
        if library.exists():
            with FileLock(directory / "lock"):  # the builder's lock (cpp_extension): no half-written library
                module = _import(library)
        else:
            print(f"labcheck: building the compiled training step once, into {directory} (~30 s)", file=sys.stderr)
            module = _build(directory)
        return module, f"compiled ({library})"
    except Exception as error:  # noqa: BLE001 - any failure leaves the (correct, slower) Python step
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        print(f"labcheck: no compiled training step, the Python step runs: {reason}", file=sys.stderr)
        return None, f"unavailable: {reason}"


def module():
    """The extension module (its Step class), built on first use; None where it cannot be had."""
    return _load()[0]


def status() -> str:
    """'compiled (<library>)', 'off (...)' or 'unavailable: <reason>', for reports."""
    return _load()[1]


if __name__ == "__main__":  # python -m labcheck.native: build now (and say where), e.g. while setting up
    print(status())
    sys.exit(0 if module() is not None else 1)
