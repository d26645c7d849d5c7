"""Inputs a replay table cannot anticipate: every graded call's inputs drawn per grading run from a secret.

A submission that records the reference's answers on one run (from feedback, or by resubmitting) and
looks them up by a hash of its inputs on the next earns nothing, because the next run draws other
inputs: its seeds, data subsets, sizes and learning rates all come from a secret that lives in the
grader's process only. The worker's environment is built from scratch (labcheck.sandbox) and its
/proc shows no other process, so it never sees the secret; it sees only the inputs drawn from it.

    draws = Draws(secret)                        # grader side (the plugin's `draws` fixture, `lab.draws`)
    draws.seed("sgd", "init std")                # an int in [0, 2**31), the same for the same secret and labels
    draws.rng("sgd", "lrs").uniform(0.01, 0.1)   # a random.Random for anything else drawn

Each draw is HMAC-SHA256(secret, labels): independent across labels, reproducible for a fixed secret.
Where the secret comes from, first found: `--labcheck-secret`, $LABCHECK_SECRET (`labcheck grade` sets
it for the graders of one class run, so they share inputs and the expected-answer cache), else a new
random one for this pytest session. Fix it (either way) where a run must be reproducible: labcheck's own
tests, regrading a disputed submission with the inputs it had. `secret_id` names a secret in reports
(which submissions saw the same inputs) without revealing it.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import random
import secrets

SECRET_ENV = "LABCHECK_SECRET"


def new_secret() -> str:
    """A fresh secret: 128 random bits."""
    return secrets.token_hex(16)


def resolve(option: str | None) -> tuple[str, str]:
    """(secret, where it came from): the option, else $LABCHECK_SECRET, else a new one ("drawn")."""
    if option:
        return option, "option"
    if os.environ.get(SECRET_ENV):
        return os.environ[SECRET_ENV], "environment"
    return new_secret(), "drawn"


def secret_id(secret: str) -> str:
    """A short public name of a secret: equal ids, equal inputs; the secret cannot be recovered from it."""
    return hashlib.sha256(b"labcheck secret id\0" + secret.encode()).hexdigest()[:12]


class Draws:
    """Seeds and random streams derived from one secret and a label path (grader side only)."""

    def __init__(self, secret: str, *prefix: str):
        self._key = secret.encode()
        self._prefix = tuple(str(p) for p in prefix)

    def scoped(self, *prefix: str) -> "Draws":
        """The same secret under a longer label path (one per exercise, say)."""
        child = Draws("", *self._prefix, *prefix)
        child._key = self._key
        return child

    def _digest(self, labels) -> bytes:
        path = "\0".join((*self._prefix, *(str(label) for label in labels)))
        return hmac.new(self._key, path.encode(), hashlib.sha256).digest()

    def seed(self, *labels) -> int:
        """An int in [0, 2**31) (any torch, numpy or random seed accepts it)."""
        return int.from_bytes(self._digest(labels)[:8], "big") % 2**31

    def rng(self, *labels) -> random.Random:
        """A random.Random of its own for these labels."""
        return random.Random(int.from_bytes(self._digest(labels), "big"))
