"""Probes for labcheck's own tests of the sandbox (not an exercise): plain calls, raw results."""
from labcheck.probes import Probes

PROBES = Probes("_selftest")
PROBES.passthrough("call", "call_meta")
