"""Probes: the trusted procedures a graded test runs inside the worker against a submission.

A probe takes the loaded module (student or reference) and keyword arguments that are plain
data, calls the contract's names, and returns plain data (numbers, strings, lists, dicts,
tensors, arrays) for the grader to judge. Probes judge nothing themselves: the worker's
process is untrusted, so every verdict is computed in the grader from the returned data.

Each exercise has `labcheck/probes/<exercise>.py`:

    from labcheck.probes import Registry, require
    PROBES = Registry()

    @PROBES.probe
    def mlp_forward(impl, seed, n, widths):
        mlp = require(impl, "mlp")
        ...
        return out            # a tensor, decoded on the grader's side
"""
from __future__ import annotations

import inspect


class ContractError(Exception):
    """The submission does not provide a name of the contract, or with the wrong signature."""


class Registry(dict):
    def probe(self, fn):
        self[fn.__name__] = fn
        return fn


def require(impl, name: str, params: tuple[str, ...] = ()):
    """The contract's `name` from the submission, checking that it is callable and accepts `params`."""
    obj = getattr(impl, name, None)
    if obj is None:
        raise ContractError(f"the submission does not define `{name}` (see CONTRACTS.md)")
    if not callable(obj):
        raise ContractError(f"`{name}` is a {type(obj).__name__}, not a function or class")
    if params:
        try:
            sig = inspect.signature(obj)
        except (TypeError, ValueError):
            return obj
        accepted = sig.parameters
        has_var_kw = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
        has_var_pos = any(p.kind is p.VAR_POSITIONAL for p in accepted.values())
        positional = [p for p in accepted.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) < len(params) and not has_var_pos and not has_var_kw:
            raise ContractError(
                f"`{name}{sig}` takes {len(positional)} positional parameters; the contract has "
                f"{name}({', '.join(params)})"
            )
    return obj
