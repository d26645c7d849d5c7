"""Probes: how a graded test asks something of a submission, on the grader's side of the trust boundary.

A probe has three parts, two of them here in the grader's process (see `labcheck.untrusted` for where
the boundary lies):

    inputs  = probe.inputs(**kwargs)           # grader: build the tensors from seeds and sizes
    raw     = worker runs CALLS[probe.call](submission, **inputs)   # untrusted: call, return raw data
    value   = probe.result(raw, inputs, kwargs)  # grader: metrics, replays, norms from the raw data

`lab.call(name, **kwargs)` runs the middle step in the sandboxed worker, `lab.expect(name, **kwargs)`
on the reference in the grader, so both go through the same `result`. Calling a probe object directly,
`PROBES[name](module, **kwargs)`, runs all three steps in this process (for trusted modules only:
the reference, or labcheck's own tests).

Each exercise folder has probes.py (grader side) and calls.py (worker side; labcheck.exercises):

    PROBES = Probes("width")
    PROBES.add("accuracy", inputs=accuracy_inputs, result=accuracy_result)
"""
from __future__ import annotations

import inspect

from labcheck.untrusted.calls import ContractError, KnownHang, Registry, require  # noqa: F401


def calls_module(exercise: str):
    """The exercise's worker-side calls.py, loaded here for the reference's runs (and its helpers)."""
    from labcheck.exercises import get
    from labcheck.untrusted.calls import load_calls_module

    return load_calls_module(exercise, str(get(exercise).calls_path))


def calls_of(exercise: str) -> Registry:
    """The exercise's CALLS (calls_module)."""
    return calls_module(exercise).CALLS


class Probe:
    """One probe: input builder and result step (grader side) around a call (worker side)."""

    def __init__(self, exercise: str, name: str, call: str | None = None, inputs=None, result=None):
        self.exercise = exercise
        self.name = name
        self.call = call or name  # the worker-side function in labcheck.untrusted.calls.<exercise>
        self._inputs = inputs
        self._result = result

    def call_function(self):
        return calls_of(self.exercise)[self.call]

    def inputs(self, *args, **kwargs) -> dict:
        """The call's inputs, built here (the grader) from the probe's arguments."""
        if self._inputs is None:
            params = list(inspect.signature(self.call_function()).parameters.values())[1:]  # without impl
            bound = inspect.Signature(params).bind(*args, **kwargs)
            return dict(bound.arguments)
        bound = inspect.signature(self._inputs).bind(*args, **kwargs)
        return self._inputs(**bound.arguments)

    def arguments(self, *args, **kwargs) -> dict:
        """The probe's own arguments by name (what `result` receives as `kwargs`)."""
        fn = self._inputs or self.call_function()
        params = list(inspect.signature(fn).parameters.values())[0 if self._inputs else 1:]
        bound = inspect.Signature(params).bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def result(self, raw, inputs: dict, kwargs: dict):
        """What the graded test sees: `raw` itself, or what the grader derives from it."""
        return raw if self._result is None else self._result(raw, inputs, kwargs)

    def __call__(self, impl, *args, **kwargs):
        """All three steps in this process, for a trusted module (the reference, labcheck's own tests)."""
        from labcheck import wire

        inputs = self.inputs(*args, **kwargs)
        raw = self.call_function()(impl, **wire.decode(wire.encode(inputs)))
        return self.result(wire.decode(wire.encode(raw)), inputs, self.arguments(*args, **kwargs))


class Probes(dict):
    """name -> Probe for one exercise."""

    def __init__(self, exercise: str):
        super().__init__()
        self.exercise = exercise

    def add(self, name: str, inputs=None, result=None, call: str | None = None) -> Probe:
        self[name] = Probe(self.exercise, name, call, inputs, result)
        return self[name]

    def passthrough(self, *names: str) -> None:
        """Probes whose inputs are the call's own and whose result is the raw reply."""
        for name in names:
            self.add(name)
