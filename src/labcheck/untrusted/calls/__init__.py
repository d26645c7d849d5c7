"""What the grader may ask the worker to call: the CALLS of an exercise's calls.py (exercises/<id>/calls.py).

A call takes the loaded module (the student's in the worker, the reference in the grader) and inputs
the grader built, calls the contract's names and returns raw results. It judges nothing (see the
trust boundary in `labcheck.untrusted`). `require` fetches a contract name and wraps it so that the
worker can tell the grader which contract function is running (a hang is blamed on it) and refuse at
once to enter a function that already hung in an earlier call.

    from labcheck.untrusted.calls import Registry, require
    CALLS = Registry()

    @CALLS.call
    def mlp_forward(impl, X, ws, bs):
        return require(impl, "mlp", ("X", "ws", "bs"))(X, ws, bs)
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect


class ContractError(Exception):
    """The submission does not provide a name of the contract, or with the wrong signature."""


class KnownHang(Exception):
    """The call entered a contract function that already ran out of time in this grading session."""

    def __init__(self, function: str):
        super().__init__(function)
        self.function = function


class Registry(dict):
    def call(self, fn):
        self[fn.__name__] = fn
        return fn

    probe = call  # the name the selftest calls and older code use


class Tracker:
    """Which contract function runs now (reported by `announce`), and which ones hung before.

    The worker's serve loop points `announce` at a writer of progress frames and sets `hung` from each
    request; in the grader's process (the reference) both stay inert."""

    def __init__(self):
        self.hung: frozenset = frozenset()
        self.announce = None
        self.last: str | None = None

    def enter(self, name: str) -> None:
        if name in self.hung:
            raise KnownHang(name)
        if self.announce is not None and name != self.last:
            self.last = name
            self.announce(name)


TRACKER = Tracker()


def _tracked(name: str, obj):
    if inspect.isclass(obj):  # construction happens right after require(): blame the class from here on
        TRACKER.enter(name)
        return obj

    @functools.wraps(obj)
    def tracked(*args, **kwargs):
        TRACKER.enter(name)
        return obj(*args, **kwargs)

    return tracked


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
            return _tracked(name, obj)
        accepted = sig.parameters
        has_var_kw = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
        has_var_pos = any(p.kind is p.VAR_POSITIONAL for p in accepted.values())
        positional = [p for p in accepted.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) < len(params) and not has_var_pos and not has_var_kw:
            raise ContractError(
                f"`{name}{sig}` takes {len(positional)} positional parameters; the contract has "
                f"{name}({', '.join(params)})"
            )
    return _tracked(name, obj)


def load_calls_module(exercise: str, path: str):
    """An exercise's calls.py, imported by path once per process (the grader names the file; in the worker
    this runs before any student line)."""
    import sys

    name = f"labcheck_calls_{exercise}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def load_calls(exercise: str, path: str) -> Registry:
    """The CALLS registry of an exercise's calls.py (load_calls_module)."""
    return load_calls_module(exercise, path).CALLS
