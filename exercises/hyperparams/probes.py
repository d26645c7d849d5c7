"""Probes for the `hyperparams` exercise (a2_fashion_hyperparams.txt; names in CONTRACTS.md), grader side.

The inputs are the graded tests' own (real images, layer specs, budgets); the worker's calls
(exercises/hyperparams/calls.py) return raw results, which exercises/hyperparams/test_contract.py
compares with the same calls run on the reference.
"""
from labcheck.probes import Probes
from labcheck.probes import calls_module

FIT_KEYS = calls_module("hyperparams").FIT_KEYS  # noqa: F401  (the graded tests use it)

PROBES = Probes("hyperparams")
PROBES.passthrough("describe_net", "count_parameters_of", "noisy_draws", "noisy_defaults", "fit_run", "fit_defaults")
