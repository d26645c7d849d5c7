"""Hostile lines for sgd (grafted onto examples/correct.py by tests/test_trust.py): train_sgd does nothing,
and at import the submission replaces the worker's call that returns the trained parameters, which now trains
for 0 epochs. Test metrics are computed in the grader from the parameters the worker returns: it loses every
training test and keeps the others (initialize_nn, my_nn, the steps, evaluate). (The grader-side probes it
once imported to patch no longer exist in the worker at all: the exercise folder is hidden from it.)"""
import sys

_calls = sys.modules["labcheck_calls_sgd"]  # the worker's own copy of exercises/sgd/calls.py
_real_trained = _calls.CALLS["trained"]
_calls.CALLS["trained"] = lambda impl, **kw: _real_trained(impl, **{**kw, "epochs": 0})


def train_sgd(param_dict, loader, lr=0.01, epochs=20, momentum=0.0):
    return [2.3] * len(loader) * epochs, [0.1] * len(loader) * epochs


BASE = "sgd"
TESTS = ["test_train_sgd", "test_initial_loss"]
EXPECTED = {"test_train_sgd_learns": "reach test accuracy", "test_train_sgd_trajectory": "",
            "test_train_sgd_momentum_trajectory": ""}
