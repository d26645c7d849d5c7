"""Calls for labcheck's own tests of the sandbox (not an exercise)."""
from labcheck.untrusted.calls import Registry, require

CALLS = Registry()


@CALLS.call
def call(impl, name: str, args: list = (), kwargs: dict | None = None):
    """Call `name` from the submission with plain-data arguments and return its result."""
    return require(impl, name)(*args, **(kwargs or {}))


@CALLS.call
def call_meta(impl, name: str, args: list = (), kwargs: dict | None = None):
    """Like `call`, plus the dtype/shape/device of a tensor result (which the wire does not keep)."""
    from labcheck.wire import tensor_meta

    out = require(impl, name)(*args, **(kwargs or {}))
    return {"value": out, "meta": tensor_meta(out)}
