"""The student contract of an exercise, read from its Markdown file (Exercise.contract_path).

    contract = contracts.read("sgd")
    contract.title, contract.exercise_text, contract.imports
    for entry in contract.entries: entry.name, entry.args, entry.returns, entry.description, entry.is_class

The file is written for people, with a fixed shape that this module relies on:

    # `sgd`: SGD from scratch              the title
    ## The exercise                        what the exercise is, in our own words
    ## Imports                             one ```python block: what a starter imports
    ## What to implement                   a paragraph of rules, then one section per contract name:
    ### `initialize_nn(param_dict) -> dict | None`
    what it must do

A name that starts with a capital letter is a class (its arguments are its constructor's).
"""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

from labcheck.exercises import get

_HEADING = re.compile(r"^(#{1,3}) (.*)$", re.MULTILINE)
_SIGNATURE = re.compile(r"^`(?P<name>[A-Za-z_]\w*)\((?P<args>.*?)\)(?:\s*->\s*(?P<returns>.+?))?`$")
_CODE = re.compile(r"```python\n(.*?)```", re.DOTALL)
_FENCE = re.compile(r"```.*?```", re.DOTALL)


class ContractFormatError(ValueError):
    """The contract file does not have the shape this module reads."""


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str  # the contract name the grader calls
    args: str  # its parameters as Python source, e.g. "param_dict, lr=0.01"
    returns: str | None  # what it returns, in the contract's words ("Tensor(B, 10)"), None for a class
    description: str  # what it must do (Markdown)

    @property
    def is_class(self) -> bool:
        return self.name[:1].isupper()

    @property
    def signature(self) -> str:
        return f"{self.name}({self.args})" + (f" -> {self.returns}" if self.returns else "")


@dataclasses.dataclass(frozen=True)
class Contract:
    exercise: str
    title: str  # the first heading, without the id
    exercise_text: str  # "The exercise" section (Markdown)
    rules: str  # the paragraph that opens "What to implement"
    imports: str  # the starter's imports (Python)
    entries: tuple[Entry, ...]
    markdown: str  # the whole file

    def entry(self, name: str) -> Entry:
        return next(e for e in self.entries if e.name == name)


def _sections(text: str, level: int) -> dict[str, str]:
    """Heading -> body for the headings of exactly `level` #s (a body ends at the next heading of its level
    or above)."""
    masked = _FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)  # a "# comment" in code is no heading
    found = [(m.start(), m.end(), len(m.group(1)), m.group(2).strip()) for m in _HEADING.finditer(masked)]
    out = {}
    for i, (_, end, depth, title) in enumerate(found):
        if depth != level:
            continue
        stop = next((s for s, _, d, _ in found[i + 1:] if d <= level), len(text))
        out[title] = text[end:stop].strip()
    return out


def parse(markdown: str, exercise: str) -> Contract:
    """The Contract in `markdown` (ContractFormatError says what is missing)."""
    titles = _sections(markdown, 1)
    if len(titles) != 1:
        raise ContractFormatError(f"{exercise}: expected one '# `{exercise}`: title' heading")
    title = next(iter(titles)).split(":", 1)[-1].strip()
    parts = _sections(markdown, 2)
    missing = [s for s in ("The exercise", "Imports", "What to implement") if s not in parts]
    if missing:
        raise ContractFormatError(f"{exercise}: no section {', '.join(missing)}")
    code = _CODE.search(parts["Imports"])
    if code is None:
        raise ContractFormatError(f"{exercise}: the Imports section has no ```python block")
    entries = []
    for heading, body in _sections(parts["What to implement"], 3).items():
        m = _SIGNATURE.match(heading)
        if m is None:
            raise ContractFormatError(f"{exercise}: {heading!r} is not a `name(args) -> returns` heading")
        try:
            ast.parse(f"def f({m['args']}): pass")
        except SyntaxError:
            raise ContractFormatError(f"{exercise}: the arguments of {heading!r} are not Python parameters") from None
        entries.append(Entry(m["name"], m["args"], m["returns"], body))
    rules = parts["What to implement"].split("\n### ", 1)[0].strip()
    return Contract(exercise, title, parts["The exercise"], rules, code.group(1).strip(), tuple(entries), markdown)


def read(exercise: str) -> Contract:
    """The exercise's contract, from exercises/<id>/CONTRACT.md (through the registry)."""
    path: Path = get(exercise).contract_path
    return parse(path.read_text(encoding="utf-8"), exercise)
