"""The reference's answers to a handout's public tests, carried as data: what lets `labcheck check` run
on a student's machine with neither the reference nor the hidden tests.

    book = AnswerBook("sgd")                       # instructor: the public tests run with the reference
    book.put(call, inputs_bytes, raw, seconds)     #   (the plugin's --labcheck-record-answers)
    book.write(path)
    book = AnswerBook.read(path)                   # student: --labcheck-answers
    raw, seconds = book.get(call, inputs_bytes)    # MissingAnswer where the handout has none

An answer is what `lab.expect` and the per-call deadline need: the reference's raw result for one
call on one set of inputs, and the CPU seconds it took. It is keyed by the exercise, the call and the
wire-encoded inputs, so the inputs a student's labcheck builds must be the very ones the instructor's
built (the same probes, the same torch): a miss says which versions the handout was made with instead
of judging against a wrong answer. The file is labcheck.wire data (never pickle), like every other
message between the grader and a worker.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

SCHEMA = b"labcheck answers v1"  # part of every key: a format change misses old books


class MissingAnswer(LookupError):
    """The handout holds no answer for this call and these inputs."""


class AnswerBook:
    def __init__(self, exercise: str, made_with: dict | None = None):
        self.exercise = exercise
        self.made_with = dict(made_with or versions())  # torch and labcheck versions that built it
        self.entries: dict[str, tuple[object, float]] = {}

    def key(self, call: str, inputs_bytes: bytes) -> str:
        h = hashlib.sha256(SCHEMA)
        h.update(self.exercise.encode() + b"\0" + call.encode() + b"\0")
        h.update(inputs_bytes)
        return h.hexdigest()

    def put(self, call: str, inputs_bytes: bytes, raw, seconds: float) -> None:
        self.entries[self.key(call, inputs_bytes)] = (raw, float(seconds))

    def get(self, call: str, inputs_bytes: bytes) -> tuple[object, float]:
        try:
            return self.entries[self.key(call, inputs_bytes)]
        except KeyError:
            here = versions()
            differ = {k: (v, here.get(k)) for k, v in self.made_with.items() if here.get(k) != v}
            why = ("; it was made with " + ", ".join(f"{k} {v} (you have {mine})" for k, (v, mine) in differ.items())
                   if differ else "")
            raise MissingAnswer(f"this handout has no expected answer for the call {call!r} on these inputs{why}. "
                                "Install the versions it names, or ask for a handout made with yours.") from None

    def write(self, path: str | os.PathLike) -> Path:
        from labcheck import wire

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = {key: {"raw": raw, "seconds": seconds} for key, (raw, seconds) in sorted(self.entries.items())}
        path.write_bytes(wire.encode({"schema": SCHEMA.decode(), "exercise": self.exercise,
                                      "made_with": self.made_with, "answers": entries}))
        return path

    @classmethod
    def read(cls, path: str | os.PathLike) -> "AnswerBook":
        from labcheck import wire

        data = wire.decode(Path(path).read_bytes())
        if data.get("schema") != SCHEMA.decode():
            raise ValueError(f"{path} is not a labcheck answers file of this version ({data.get('schema')!r})")
        book = cls(data["exercise"], data["made_with"])
        book.entries = {key: (entry["raw"], float(entry["seconds"])) for key, entry in data["answers"].items()}
        return book


def versions() -> dict[str, str]:
    """What decides the inputs a probe builds: torch's and labcheck's versions."""
    from importlib import metadata

    import torch

    try:
        labcheck_version = metadata.version("labcheck")
    except metadata.PackageNotFoundError:
        labcheck_version = "unknown"
    return {"torch": torch.__version__, "labcheck": labcheck_version}
