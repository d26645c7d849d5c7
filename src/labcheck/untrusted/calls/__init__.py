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


def _call_shown(name: str, params: tuple[str, ...], args: tuple, kwargs: dict) -> str:
    """The call the grader makes, in the contract's words: `train_one_epoch(train_loader, model, device, optimizer)`."""
    shown = [params[i] if i < len(params) else f"<argument {i + 1}>" for i in range(len(args))]
    return f"{name}({', '.join(shown + [f'{k}=...' for k in kwargs])})"


def _signature_mismatch(name: str, sig, params: tuple[str, ...], contract: str | None, args: tuple, kwargs: dict):
    """A ContractError naming the expected signature when `sig` cannot take the call (never a raw TypeError)."""
    try:
        sig.bind(*args, **kwargs)
    except TypeError as e:
        expected = contract or f"{name}({', '.join(params)})"
        return ContractError(
            f"`{name}{sig}` cannot take the call the grader makes, {_call_shown(name, params, args, kwargs)} "
            f"({e}): the contract's signature is `{expected}`. Keep its parameter names and order; a parameter "
            "of your own needs a default")
    return None


def _tracked(name: str, obj, sig=None, params: tuple[str, ...] = (), contract: str | None = None):
    """`obj` wrapped so that entering it is announced (a hang is blamed on it) and a call its signature cannot
    take fails with the contract's signature instead of a TypeError from inside the grader's call."""
    if inspect.isclass(obj):  # construction happens right after require(): blame the class from here on
        TRACKER.enter(name)
        if sig is None:
            return obj

        @functools.wraps(obj, updated=())
        def construct(*args, **kwargs):
            mismatch = _signature_mismatch(name, sig, params, contract, args, kwargs)
            if mismatch is not None:
                raise mismatch
            return obj(*args, **kwargs)

        return construct

    @functools.wraps(obj)
    def tracked(*args, **kwargs):
        TRACKER.enter(name)
        if sig is not None:
            mismatch = _signature_mismatch(name, sig, params, contract, args, kwargs)
            if mismatch is not None:
                raise mismatch
        return obj(*args, **kwargs)

    return tracked


def require(impl, name: str, params: tuple[str, ...] = (), contract: str | None = None):
    """The contract's `name` from the submission, checking that it is callable and accepts `params`.

    `contract` is the contract's signature as CONTRACT.md writes it (`fit(net, train, validation, optimizer,
    epochs=25, batch_size=10, device='cpu')`): a call that the submission's signature cannot take (a missing
    or renamed parameter, one more required argument) fails with a ContractError naming it, never with a
    TypeError raised inside the grader's call."""
    obj = getattr(impl, name, None)
    if obj is None:
        raise ContractError(f"the submission does not define `{name}` (see CONTRACT.md"
                            + (f": `{contract}`)" if contract else ")"))
    if not callable(obj):
        raise ContractError(f"`{name}` is a {type(obj).__name__}, not a function or class")
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return _tracked(name, obj)
    if params:
        accepted = sig.parameters
        has_var_kw = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
        has_var_pos = any(p.kind is p.VAR_POSITIONAL for p in accepted.values())
        positional = [p for p in accepted.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) < len(params) and not has_var_pos and not has_var_kw:
            raise ContractError(
                f"`{name}{sig}` takes {len(positional)} positional parameters; the contract's signature is "
                f"`{contract or name + '(' + ', '.join(params) + ')'}`"
            )
    return _tracked(name, obj, sig, params, contract)


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
