"""Probes for labcheck's own tests of the sandbox (not an exercise)."""
from labcheck.probes import Registry, require

PROBES = Registry()


@PROBES.probe
def call(impl, name: str, args: list = (), kwargs: dict | None = None):
    """Call `name` from the submission with plain-data arguments and return its result."""
    return require(impl, name)(*args, **(kwargs or {}))
