"""Reproducibility in one place: seeding, determinism and RNG-state isolation.

Nothing here runs at import time; callers opt in explicitly (style rule 2).
Modelled on torchvision's references (`set_rng_seed`, `freeze_rng_state`) and
its `--use-deterministic-algorithms` flag.
"""
from __future__ import annotations

import contextlib
import os
import random
from typing import Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, numpy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices


@contextlib.contextmanager
def deterministic(enabled: bool = True) -> Iterator[None]:
    """Force deterministic kernels inside the block and restore the previous settings after.

    cuBLAS needs CUBLAS_WORKSPACE_CONFIG for deterministic matmuls on CUDA >= 10.2.
    """
    if not enabled:
        yield
        return
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        algorithms, warn_only, benchmark, cudnn_det, workspace = previous
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        torch.backends.cudnn.deterministic = cudnn_det
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace


@contextlib.contextmanager
def freeze_rng_state() -> Iterator[None]:
    """Run the block, then restore the Python, numpy, torch CPU and CUDA RNG states."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A private torch RNG, so shuffling does not depend on (or disturb) the global stream."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def config_from_args(cls, args, quick: dict, dry_run: dict):
    """A reference's Config from its parsed flags, with its budgets applied: QUICK when --quick, then
    DRY_RUN when --dry-run (so a run is reproduced from its command line alone). Lists become tuples,
    as the dataclasses' defaults are."""
    import dataclasses

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    cfg = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    if cfg.quick:
        cfg = dataclasses.replace(cfg, **quick)
    if cfg.dry_run:
        cfg = dataclasses.replace(cfg, **dry_run)
    return cfg
