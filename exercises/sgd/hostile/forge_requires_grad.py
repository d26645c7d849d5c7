"""Hostile lines for sgd (grafted onto examples/correct.py by tests/test_trust.py): the seed's initialize_nn
(examples/buggy_bias_no_grad.py: the biases rebuilt by torch.zeros_like never require grad), and at import the
submission rewrites what the worker's init_params call reports: every tensor said to require grad and to be a
leaf, the dict said to be returned as it came (what the structure test trusted before: 26/26 instead of 24/26);
on the reply that call gives now, the biases are made to look trained (moved after the step). The structure
test now judges a training step it replays from the dict's values: the biases did not move as a step moves a
tensor that requires grad, so it is lost as the honest bug loses it (24/26); every other test keeps its points."""
import sys

import torch

_calls = sys.modules["labcheck_calls_sgd"]  # the worker's own copy of exercises/sgd/calls.py
_real_init_params = _calls.CALLS["init_params"]


def _forged_init_params(impl, **kwargs):
    reply = _real_init_params(impl, **kwargs)
    for meta in (reply.get("meta") or {}).values():  # the reply of the call before: flags about the tensors
        meta.update(requires_grad=True, is_leaf=True)
    if "returned_same_dict" in reply:
        reply.update(returned_same_dict=True, returned_type="dict")
    after = reply.get("after_step") or {}  # the reply now: the dict after a training step
    for key in [k for k in after if k.startswith("b")]:
        after[key] = after[key] - 1e-3 * torch.linspace(-1, 1, after[key].numel()).reshape(after[key].shape)
    return reply


_calls.CALLS["init_params"] = _forged_init_params


def initialize_nn(param_dict):
    for name, param in param_dict.items():
        param_dict[name] = torch.zeros_like(param)
        if "W" in name:
            param_dict[name] = param_dict[name].normal_(0, 1 / math.sqrt(param.size(0)))
            param_dict[name].requires_grad = True
    return param_dict


BASE = "sgd"
TESTS = ["test_"]  # every test: 24 of 26 points, as the honest bug
EXPECTED = {"test_initialize_nn_structure": "training step"}
