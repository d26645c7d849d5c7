"""The reference's answers to the probes' calls, computed in the grader and cached on disk.

`lab.expect` and the per-call deadlines both need the reference's raw result for a call and the time
it took, measured as CPU seconds of this process (`time.process_time`), so that a deadline derived
from it means the same amount of work on an idle and on a loaded machine. Both are stored under a key that changes whenever anything that could change them does:

    sha256(reference file, calls file, probes file, torch version, call name, wire-encoded inputs)

so a class of submissions computes each once. The folder is $LABCHECK_EXPECTED_CACHE, else
~/.cache/labcheck/expected (`--labcheck-expected-cache` overrides both). It lives on the grader's side
only: the worker's whitelist file system never contains it (and the fallback hides it).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

from labcheck import paths

CACHE_ENV = "LABCHECK_EXPECTED_CACHE"
SCHEMA = b"labcheck expected v2: raw result, cpu seconds"  # part of every key: a format change misses old entries


def default_folder() -> Path:
    return Path(os.environ.get(CACHE_ENV) or paths.cache_root() / "expected")


class ExpectedCache:
    """Raw reference results and their measured seconds, in memory and (unless `folder` is None) on disk."""

    def __init__(self, folder: str | os.PathLike | None):
        self.folder = None if folder is None else Path(folder)
        self._memory: dict[str, tuple[object, float]] = {}
        self.computed = 0  # reference runs done by this process (not served from a cache)

    @staticmethod
    def key(fingerprint: str, reference: Path, call: str, inputs_bytes: bytes) -> str:
        """The exercise's fingerprint (its folder and labcheck's code), the reference actually used (it may be
        given on the command line), torch's version, the call and its inputs."""
        import torch

        h = hashlib.sha256(SCHEMA)
        h.update(fingerprint.encode())
        h.update(hashlib.sha256(Path(reference).read_bytes()).digest())
        h.update(torch.__version__.encode())
        h.update(call.encode() + b"\0")
        h.update(inputs_bytes)
        return h.hexdigest()

    def get_or_compute(self, key: str, compute) -> tuple[object, float]:
        """(raw result, CPU seconds): from memory, from disk, or `compute()` timed (and stored)."""
        from labcheck import wire

        if key in self._memory:
            return self._memory[key]
        path = None if self.folder is None else self.folder / key[:2] / f"{key}.bin"
        if path is not None and path.is_file():
            try:
                entry = wire.decode(path.read_bytes())
                self._memory[key] = (entry["raw"], float(entry["seconds"]))
                return self._memory[key]
            except (OSError, wire.WireError, KeyError, TypeError, ValueError):
                pass  # a damaged entry is recomputed
        start = time.process_time()
        raw = compute()
        seconds = time.process_time() - start  # CPU seconds: what the worker's deadline is measured in
        self.computed += 1
        raw = wire.decode(wire.encode(raw))  # the same types a worker's reply has
        self._memory[key] = (raw, seconds)
        if path is not None:
            self._store(path, wire.encode({"raw": raw, "seconds": seconds}))
        return raw, seconds

    @staticmethod
    def _store(path: Path, payload: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only home: the cache is only an optimisation
