"""`labcheck mutants ID`: how good are an exercise's graded tests? Single-point mutants of its correct example,
of the kinds students make, graded as a class; the score is the share the tests catch (lose a point on).

Each mutant changes one place of one function or class of examples/correct.py:
  operator     a binary operator or comparison swapped (+ -, * /, < <=, == !=, ...)
  constant     a number changed (0 -> 1, n -> n+1, x -> 2x)
  default      a parameter's default changed the same way
  boundary     a range() off by one
  delete       a statement that is only a call removed (`optimizer.zero_grad()`, `model.eval()`)
  arguments    the first two positional arguments of a call swapped
  reduction    a dim= or reduction= changed, or .mean( <-> .sum(
A survivor is either equivalent (the change cannot show) or a mistake the tests miss: each is printed with
its diff for the author to decide. Reproducible: the sample is drawn with --seed from every mutant there is.
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import random
import tempfile
from pathlib import Path

KINDS = ("operator", "constant", "default", "boundary", "delete", "arguments", "reduction")
_SWAP_OPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.Pow: ast.Mult,
             ast.FloorDiv: ast.Div, ast.MatMult: ast.Mult}
_SWAP_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
_REDUCTIONS = {"mean": "sum", "sum": "mean"}


@dataclasses.dataclass
class Mutant:
    kind: str  # one of KINDS
    function: str  # the top-level def or class it changes
    line: int  # in the original file
    description: str
    source: str  # the whole mutated module
    diff: str = ""


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value == 0:
        return 1
    return value + 1 if isinstance(value, int) else value * 2


def _sites(tree: ast.Module):
    """(kind, owner, node path, description, change) for every place a mutant can be made."""
    for index, top in enumerate(tree.body):
        if not isinstance(top, (ast.FunctionDef, ast.ClassDef)):
            continue
        owner = top.name
        for node in ast.walk(top):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
                    if isinstance(default, ast.Constant) and _number(default.value) is not None:
                        yield ("default", owner, default, f"default {default.value!r} -> {_number(default.value)!r}",
                               lambda n: setattr(n, "value", _number(n.value)))
            if isinstance(node, ast.BinOp) and type(node.op) in _SWAP_OPS:
                new = _SWAP_OPS[type(node.op)]
                yield ("operator", owner, node, f"{type(node.op).__name__} -> {new.__name__}",
                       lambda n, new=new: setattr(n, "op", new()))
            elif isinstance(node, ast.Compare) and type(node.ops[0]) in _SWAP_CMP:
                new = _SWAP_CMP[type(node.ops[0])]
                yield ("operator", owner, node, f"{type(node.ops[0]).__name__} -> {new.__name__}",
                       lambda n, new=new: n.ops.__setitem__(0, new()))
            elif isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name) and func.id == "range" and node.args:
                    yield ("boundary", owner, node, "range(... n) -> range(... n - 1)",
                           lambda n: n.args.__setitem__(-1, ast.BinOp(n.args[-1], ast.Sub(), ast.Constant(1))))
                if len(node.args) >= 2 and not any(isinstance(a, ast.Starred) for a in node.args[:2]):
                    yield ("arguments", owner, node, "first two arguments swapped",
                           lambda n: n.args.__setitem__(slice(0, 2), [n.args[1], n.args[0]]))
                for kw in node.keywords:
                    if kw.arg == "dim" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, int):
                        yield ("reduction", owner, kw, f"dim={kw.value.value} -> dim={1 - kw.value.value}",
                               lambda k: setattr(k.value, "value", 1 - k.value.value))
                    if kw.arg == "reduction" and isinstance(kw.value, ast.Constant) and kw.value.value in _REDUCTIONS:
                        yield ("reduction", owner, kw, f"reduction={kw.value.value!r} -> {_REDUCTIONS[kw.value.value]!r}",
                               lambda k: setattr(k.value, "value", _REDUCTIONS[k.value.value]))
                if isinstance(func, ast.Attribute) and func.attr in _REDUCTIONS:
                    yield ("reduction", owner, func, f".{func.attr}( -> .{_REDUCTIONS[func.attr]}(",
                           lambda f: setattr(f, "attr", _REDUCTIONS[f.attr]))
            elif isinstance(node, ast.Constant) and _number(node.value) is not None:
                yield ("constant", owner, node, f"{node.value!r} -> {_number(node.value)!r}",
                       lambda n: setattr(n, "value", _number(n.value)))
            for field in ("body", "orelse"):
                block = getattr(node, field, None)
                if isinstance(block, list) and len(block) > 1:
                    for stmt in block:
                        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
                            yield ("delete", owner, stmt, f"`{ast.unparse(stmt)[:50]}` deleted",
                                   lambda s, block=block: block.__setitem__(block.index(s), ast.Pass()))


def mutants_of(source: str) -> list[Mutant]:
    """Every single-point mutant of `source` (a module), in file order; duplicates and no-ops left out."""
    tree = ast.parse(source)
    original = ast.unparse(tree)
    count = sum(1 for _ in _sites(tree))
    found, seen = [], {original}
    for i in range(count):
        mutated = copy.deepcopy(tree)
        kind, owner, node, description, change = next(s for j, s in enumerate(_sites(mutated)) if j == i)
        line = getattr(node, "lineno", 0)
        change(node)
        text = ast.unparse(ast.fix_missing_locations(mutated))
        if text in seen:
            continue
        seen.add(text)
        diff = "".join(difflib.unified_diff(original.splitlines(True), text.splitlines(True), "correct.py",
                                            "mutant.py", n=1))
        found.append(Mutant(kind, owner, line, description, text, diff))
    return found


def sample(mutants: list[Mutant], most: int | None, seed: int) -> list[Mutant]:
    """A reproducible sample of at most `most`, spread over the kinds (round robin over shuffled kinds)."""
    if most is None or most >= len(mutants):
        return mutants
    rng = random.Random(seed)
    by_kind = {k: [m for m in mutants if m.kind == k] for k in KINDS}
    for group in by_kind.values():
        rng.shuffle(group)
    chosen = []
    while len(chosen) < most:
        for kind in KINDS:
            if by_kind[kind] and len(chosen) < most:
                chosen.append(by_kind[kind].pop())
    return sorted(chosen, key=lambda m: (m.line, m.kind))


def grade_mutants(exercise: str, chosen: list[Mutant], out: Path, jobs: int = 2) -> dict[str, dict]:
    """Grade the mutants as one class with labcheck grade's machinery; results by mutant name."""
    from labcheck import grade

    klass = out / "mutants"
    klass.mkdir(parents=True, exist_ok=True)
    subs = []
    for i, mutant in enumerate(chosen):
        path = klass / f"m{i:03d}_{mutant.kind}.py"
        path.write_text(mutant.source)
        subs.append(grade.Submission(path, exercise, path.stem, grade.contract_file(exercise)))
    opts = grade.Options(out=out / "grades", jobs=jobs, fresh=True, quiet=True)
    return grade.grade_many(subs, opts)


def main(args) -> int:
    from labcheck.exercises import get

    correct = get(args.exercise).examples_dir / "correct.py"
    everything = mutants_of(correct.read_text())
    chosen = sample(everything, args.max, args.seed)
    print(f"labcheck mutants: {len(everything)} single-point mutants of {correct}; grading {len(chosen)} "
          f"(seed {args.seed})", flush=True)
    with tempfile.TemporaryDirectory(prefix="labcheck-mutants-") as scratch:
        results = grade_mutants(args.exercise, chosen, Path(args.out) if args.out else Path(scratch), args.jobs)
    survivors = []
    for i, mutant in enumerate(chosen):
        r = results[f"m{i:03d}_{mutant.kind}"]
        if r["score"] >= r["max_score"]:
            survivors.append(mutant)
    caught = len(chosen) - len(survivors)
    print(f"mutation score: {caught}/{len(chosen)} caught ({100 * caught / max(1, len(chosen)):.0f}%)")
    for kind in KINDS:
        of_kind = [m for m in chosen if m.kind == kind]
        if of_kind:
            alive = sum(m in survivors for m in of_kind)
            print(f"  {kind:10s} {len(of_kind) - alive}/{len(of_kind)} caught")
    for mutant in survivors:
        print(f"\nSURVIVED ({mutant.kind}) {mutant.function}, line {mutant.line}: {mutant.description}\n{mutant.diff}")
    return 0
