"""The contract as the course wrote it (issue #28 item 6), at the level of one call: labcheck.untrusted.calls.require.

A submission whose signature cannot take the grader's call fails with a ContractError that names the contract's
signature (before: a raw TypeError from inside the call, "missing 1 required positional argument: 'epoch'"); an
error raised inside the student's own function is left as it is; gradnorms passes the course's `epoch` where the
signature has room for it. No grading here: the calls run in this process on small stand-in modules.
"""
import types

import pytest

from labcheck.probes import calls_module
from labcheck.untrusted.calls import ContractError, require

SIGNATURE = "train_one_epoch(train_loader, model, device, optimizer, epoch=None)"
PARAMS = ("train_loader", "model", "device", "optimizer")


def module(**names) -> types.ModuleType:
    impl = types.ModuleType("submission")
    impl.__dict__.update(names)
    return impl


def test_a_call_the_signature_cannot_take_names_the_contracts_signature():
    def train_one_epoch(train_loader, model, device, optimizer, epoch, log_every):
        return 0.0, []

    fn = require(module(train_one_epoch=train_one_epoch), "train_one_epoch", PARAMS, SIGNATURE)
    with pytest.raises(ContractError) as caught:
        fn("loader", "model", "cpu", "opt")
    message = str(caught.value)
    assert f"the contract's signature is `{SIGNATURE}`" in message
    assert "train_one_epoch(train_loader, model, device, optimizer)" in message  # the call the grader made
    assert "train_one_epoch(train_loader, model, device, optimizer, epoch, log_every)" in message  # the student's


def test_an_error_inside_the_students_function_stays_the_students():
    def train_one_epoch(train_loader, model, device, optimizer):
        return None + 1

    fn = require(module(train_one_epoch=train_one_epoch), "train_one_epoch", PARAMS, SIGNATURE)
    with pytest.raises(TypeError, match="NoneType"):
        fn("loader", "model", "cpu", "opt")


def test_a_class_whose_constructor_differs_and_a_missing_name_name_the_contract():
    class NoisyDataset:
        def __init__(self, dataset, sigma):
            self.dataset = dataset

    contract = "NoisyDataset(dataset, noise_sigma=0, flip_horizontal=False, shift=False)"
    cls = require(module(NoisyDataset=NoisyDataset), "NoisyDataset", ("dataset",), contract)
    with pytest.raises(ContractError, match="the contract's signature is"):
        cls([], noise_sigma=0.1)
    assert isinstance(cls([], 0.1), NoisyDataset)  # a call it can take constructs as before
    with pytest.raises(ContractError, match=r"does not define `fit` \(see CONTRACT.md: `fit\(net"):
        require(module(), "fit", (), "fit(net, train, validation, optimizer, epochs=25)")


@pytest.mark.parametrize("signature, passed", [
    ("train_loader, model, device, optimizer, epoch", "keyword"),  # the course's own cell
    ("train_loader, model, device, optimizer, epoch=None", "keyword"),
    ("train_loader, model, device, optimizer, *, epoch=0", "keyword"),
    ("train_loader, model, device, optimizer, ep", "positional"),
    ("train_loader, model, device, optimizer", None),
    ("train_loader, model, device, optimizer, log_every=10", None),
])
def test_the_courses_epoch_reaches_train_one_epoch_where_its_signature_has_room(signature, passed):
    namespace = {}
    exec(f"def train_one_epoch({signature}): pass", namespace)
    assert calls_module("gradnorms")._epoch_argument(namespace["train_one_epoch"]) == passed
