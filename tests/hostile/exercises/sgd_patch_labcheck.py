"""Hostile lines for sgd (grafted onto examples/sgd/correct.py by tests/test_trust.py): train_sgd does
nothing, and at import the submission replaces labcheck's helpers in its worker: the grader-side metric
helper of labcheck.probes.sgd (imported into the worker by the submission itself, where it is only a copy),
and the worker's call that returns the trained parameters, which now answers with random ones. Test
metrics are computed in the grader from the parameters the worker returns: it loses every training test
and keeps the others (initialize_nn, my_nn, the steps, evaluate)."""
import labcheck.probes.sgd as _grader_copy
import labcheck.untrusted.calls.sgd as _calls

_grader_copy._trusted_metrics = lambda params, x, y: (0.05, 0.99)
_real_trained = _calls.CALLS["trained"]
_calls.CALLS["trained"] = lambda impl, **kw: _real_trained(impl, **{**kw, "epochs": 0})


def train_sgd(param_dict, loader, lr=0.01, epochs=20, momentum=0.0):
    return [2.3] * len(loader) * epochs, [0.1] * len(loader) * epochs


BASE = "sgd"
TESTS = ["test_train_sgd", "test_initial_loss"]
EXPECTED = {"test_train_sgd_learns": "reach test accuracy", "test_train_sgd_trajectory": "",
            "test_train_sgd_momentum_trajectory": ""}
