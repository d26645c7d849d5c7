"""Seed studies of a reference: `labcheck bands ID --seeds N` and `labcheck reproduce ID --seeds N`.

Both run exercises/<id>/reference.py's `main` once per seed 0..N-1, each run in its own process with one
thread (labcheck.runner: both cores, or a Dask cluster with --executor dask://HOST:PORT), and collect
`band_metrics(result)` of every run:

    labcheck bands width --seeds 10 --quick        # writes the quick bands of exercises/width/bands.json
    labcheck reproduce width --seeds 3 --quick --out runs/width-study   # report.md + claims.png

`bands` stores, per metric, the band of labcheck.bands.RULE with n, mean, std, min, max and the
sweep's provenance (seeds, device, versions, machine, date, command, wall time per run) for the data
source the runs actually used. `reproduce --seeds` judges the seed notebook's claims
(exercises/<id>/claims.json, labcheck.claims) against the same kind of sweep.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path

from labcheck import bands, runner
from labcheck.exercises import get

def budget_name(quick: bool, dry_run: bool) -> str:
    """"quick", "full" or "dry" (--dry-run: a pipeline check whose numbers are never stored as bands)."""
    return "dry" if dry_run else "quick" if quick else "full"


def budget_flags(budget: str) -> list[str]:
    return {"quick": ["--quick"], "full": [], "dry": ["--dry-run"]}[budget]


def call_reference(exercise: str, function: str, kwargs: dict):
    """exercises/<exercise>/reference.py's `function`(**kwargs), loaded by path in this (runner) process: the target
    through which a reference hands its own independent runs to labcheck.runner."""
    return getattr(get(exercise).load_reference(), function)(**kwargs)


def run_reference(exercise: str, argv: list[str]) -> dict:
    """One run of exercises/<exercise>/reference.py with command-line `argv`: its band metrics, data source, config.

    Module level so that labcheck.runner can call it in a worker process (the reference file itself is
    imported by path there, never pickled).
    """
    module = get(exercise).load_reference()
    result = module.main(module.get_args_parser().parse_args(argv))
    config = result.get("config", {})
    return {"metrics": {k: float(v) for k, v in module.band_metrics(result).items()},
            "data_source": result["data_source"], "metric_sources": result.get("metric_sources", {}), "device": str(result.get("device", config.get("device", "cpu"))),
            "config": json.loads(json.dumps(config, default=str))}


@dataclasses.dataclass
class Sweep:
    """N runs of one reference at one budget, one seed each."""
    exercise: str
    budget: str  # "quick", "full" or "dry"
    seeds: list[int]
    runs: list[dict]  # run_reference() of each seed, plus "seconds" and "worker"
    executor: str
    command: str
    wall_seconds: float  # the whole sweep, start to end

    @property
    def data_source(self) -> str:
        sources = {r["data_source"] for r in self.runs}
        if len(sources) != 1:
            raise ValueError(f"runs of one sweep used different data sources: {sorted(sources)}")
        return sources.pop()

    @property
    def metric_sources(self) -> dict[str, str]:
        """Metric-name prefix -> the data source of those metrics, where the runs measured them elsewhere."""
        return {p: s for r in self.runs for p, s in r.get("metric_sources", {}).items()}

    def values(self, metric: str) -> list[float]:
        """The metric of every run that reported it (a run may lack a metric, e.g. no width interpolated)."""
        return [r["metrics"][metric] for r in self.runs if metric in r["metrics"]]

    def metric_names(self) -> list[str]:
        names: dict[str, None] = {}
        for r in self.runs:
            names.update(dict.fromkeys(r["metrics"]))
        return list(names)

    def provenance(self) -> dict:
        devices = sorted({r["device"] for r in self.runs})
        return bands.provenance(
            self.seeds, ",".join(devices), self.command, data_source=self.data_source, budget=self.budget,
            seconds=[round(r["seconds"], 2) for r in self.runs], wall_seconds=round(self.wall_seconds, 1),
            executor=self.executor, torch_threads_per_run=1, load_average=_load_average(),
            config=self.runs[0]["config"])


def run_sweep(exercise: str, seeds: list[int], budget: str, executor: str | None = None,
              out: Path | None = None, extra_argv: list[str] | None = None, command: str | None = None,
              log=print) -> Sweep:
    """Run the reference once per seed at `budget` (plots of each run in out/seed_<s>/ when `out` is set)."""
    get(exercise)
    argvs = []
    for seed in seeds:
        argv = [*budget_flags(budget), "--seed", str(seed), *(extra_argv or [])]
        if out is not None:
            argv += ["--out", str(Path(out) / f"seed_{seed}")]
        argvs.append(argv)
    start = time.perf_counter()
    outcomes = runner.run_outcomes("labcheck.study:run_reference",
                                   [{"exercise": exercise, "argv": argv} for argv in argvs], executor, log=log)
    wall = time.perf_counter() - start
    runs = [{**o.value, "seed": seed, "seconds": o.seconds, "worker": o.worker} for seed, o in zip(seeds, outcomes)]
    return Sweep(exercise, budget, list(seeds), runs, executor or "local",
                 command or shlex.join(["labcheck", *sys.argv[1:]]), wall)


def command_line(args, subcommand: str) -> str:
    """The labcheck command that reproduces this study, rebuilt from its parsed arguments."""
    parts = ["labcheck", subcommand, args.exercise, "--seeds", str(args.seeds)]
    if args.quick:
        parts.append("--quick")
    if getattr(args, "dry_run", False):
        parts.append("--dry-run")
    if getattr(args, "contract", False):
        parts.append("--contract")
    if args.first_seed:
        parts += ["--first-seed", str(args.first_seed)]
    if args.executor:
        parts += ["--executor", args.executor]
    if args.reference_args:
        parts += ["--reference-args", shlex.join(args.reference_args)]
    return shlex.join(parts)


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not on every platform
        return None


def seeds_from(n: int, first: int) -> list[int]:
    seeds = list(range(first, first + n))
    if bands.HELD_OUT_SEED in seeds:
        raise SystemExit(f"labcheck: seed {bands.HELD_OUT_SEED} is held out for the band tests; choose other seeds")
    return seeds


# ---------------------------------------------------------------------------------------------
# labcheck bands


def cmd_bands(args) -> int:
    """`labcheck bands ID --seeds N [--quick] [--executor E]`: measure and store the exercise's bands.
    `labcheck bands ID --from-sweep DIR/sweep.json`: store the bands of the runs a `labcheck reproduce ID
    --seeds N` already made (one full study gives both the claim verdicts and the bands).
    `labcheck bands ID --contract --seeds N`: the bands the graded contract tests check (the probes' own
    budgets, labcheck.probes.<id>.measure_contract_bands), on the grading data.
    `labcheck bands ID --rederive`: re-derive the stored bands by the rule from their measurements."""
    directory = Path(args.bands_dir) if args.bands_dir else None
    if args.rederive:
        print(f"re-derived by {bands.RULE!r}: {bands.rederive(args.exercise, directory)}")
        return 0
    metric_sources = {}
    if args.from_sweep:
        budget, source, measured, prov, metric_sources = recorded_sweep(args.exercise, Path(args.from_sweep))
        prov = {**prov, "command": f"{prov['command']} && labcheck bands {args.exercise} --from-sweep "
                                   f"{shlex.quote(str(Path(args.from_sweep).name))}"}
        seeds = prov["seeds"]
    else:
        budget = "contract" if args.contract else budget_name(args.quick, False)
        seeds = seeds_from(args.seeds, args.first_seed)
    minimum = bands.MIN_RUNS.get(budget, 3)
    if len(seeds) < minimum and not args.allow_few:  # refused before anything runs
        raise SystemExit(f"labcheck: {budget} bands need at least {minimum} seeds (issue #13); got {len(seeds)} "
                         "(--allow-few to measure anyway, e.g. into --bands-dir for a test)")
    if args.contract:
        source, measured, prov = contract_sweep(args.exercise, seeds, command_line(args, "bands"))
    elif not args.from_sweep:
        sweep = run_sweep(args.exercise, seeds, budget, args.executor, extra_argv=args.reference_args,
                          command=command_line(args, "bands"))
        source, prov, metric_sources = sweep.data_source, sweep.provenance(), sweep.metric_sources
        measured = {m: sweep.values(m) for m in sweep.metric_names()}
    short = {m: len(v) for m, v in measured.items() if len(v) < 2}
    for m in short:
        print(f"not banded: {m} was reported by {short[m]} of {len(seeds)} runs")
        del measured[m]
    path = bands.write_sweep(args.exercise, budget, source, measured, prov, directory, metric_sources)
    print(f"{len(measured)} {budget} metrics for data source {source!r} from seeds {seeds} written to {path}")
    print(f"wall time per run (s): {', '.join(f'{s:.1f}' for s in prov['seconds'])}; "
          f"sweep {prov['wall_seconds']:.1f} s")
    return 0


def contract_sweep(exercise: str, seeds: list[int], command: str) -> tuple[str, dict[str, list[float]], dict]:
    """(data source, measured values per metric, provenance) of the contract probes' band metrics, run on the
    reference in this process (labcheck.probes.<exercise>.measure_contract_bands, one thread)."""
    import importlib

    import torch

    module = get(exercise).probes_module()
    if not hasattr(module, "measure_contract_bands"):
        raise SystemExit(f"labcheck: the graded tests of {exercise} check no bands (no measure_contract_bands)")
    reference, measured, seconds = get(exercise).load_reference(), {}, []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        for seed in seeds:  # one at a time, to time each seed
            begin = time.perf_counter()
            for metric, values in module.measure_contract_bands(reference, [seed]).items():
                measured.setdefault(metric, []).extend(values if isinstance(values, list) else [values])
            seconds.append(round(time.perf_counter() - begin, 2))
    finally:
        torch.set_num_threads(threads)
    wall = time.perf_counter() - start
    source = measured.pop("__source__")[0]
    prov = bands.provenance(seeds, "cpu", command, data_source=source, budget="contract", seconds=seconds,
                            wall_seconds=round(wall, 1), executor="serial", torch_threads_per_run=1,
                            load_average=_load_average())
    return source, {f"{k.partition('.')[2]}": v for k, v in measured.items()}, prov


def recorded_sweep(exercise: str, path: Path) -> tuple[str, str, dict[str, list[float]], dict, dict[str, str]]:
    """(budget, data source, measured values per metric, provenance, metric sources) of a sweep.json that
    `labcheck reproduce` wrote; refuses another exercise's sweep, a dry run and the held-out seed."""
    recorded = json.loads(Path(path).read_text())
    prov, runs = recorded["provenance"], recorded["runs"]
    if recorded.get("exercise", exercise) != exercise or f" {exercise} " not in f" {prov['command']} ":
        raise SystemExit(f"labcheck: {path} is not a sweep of {exercise} (its command: {prov['command']})")
    if prov["budget"] not in ("quick", "full"):
        raise SystemExit(f"labcheck: {path} ran at the {prov['budget']!r} budget; bands come from quick or full runs")
    if bands.HELD_OUT_SEED in prov["seeds"] or sorted(r["seed"] for r in runs) != sorted(prov["seeds"]):
        raise SystemExit(f"labcheck: {path}: its seeds {prov['seeds']} must be the runs' seeds and exclude "
                         f"the held-out seed {bands.HELD_OUT_SEED}")
    sources = {r["data_source"] for r in runs}
    if sources != {prov["data_source"]}:
        raise SystemExit(f"labcheck: {path}: runs on data sources {sorted(sources)}, provenance says "
                         f"{prov['data_source']!r}")
    measured: dict[str, list[float]] = {}
    for r in runs:
        for metric, value in r["metrics"].items():
            measured.setdefault(metric, []).append(float(value))
    metric_sources = {p: s for r in runs for p, s in r.get("metric_sources", {}).items()}
    return prov["budget"], prov["data_source"], measured, prov, metric_sources


# ---------------------------------------------------------------------------------------------
# labcheck reproduce ID --seeds N


@dataclasses.dataclass
class RecordedSweep:
    """The runs behind a committed band file, for judging claims without running again: per metric its
    measured values (the claims' tests use each metric's values as a sample, so runs that lack a metric
    only shorten that metric's sample)."""
    exercise: str
    budget: str
    seeds: list[int]
    runs: list[dict]
    data_source: str
    recorded: dict  # the sweep's provenance as stored in exercises/<exercise>/bands.json

    def provenance(self) -> dict:
        return {**self.recorded, "command": f"{self.recorded['command']} (judged by labcheck reproduce "
                                           f"{self.exercise} --from-bands{' --quick' if self.budget == 'quick' else ''})"}


def sweep_from_bands(exercise: str, budget: str, source: str | None = None) -> RecordedSweep:
    """The `budget` sweep stored in exercises/<exercise>/bands.json (for `source`, or its only source), with
    the metrics the same runs measured on other sources (part_of_sweep_on: gradnorms' generated problem)."""
    content = json.loads(get(exercise).bands_path.read_text())
    sweeps = content.get("sweeps", {}).get(budget, {})
    primary = [s for s, prov in sweeps.items() if "part_of_sweep_on" not in prov]
    if source is None and len(primary) == 1:
        source = primary[0]
    if source not in primary:
        raise SystemExit(bands.missing_band_message(exercise, budget, source or "any")
                         if not primary else f"labcheck: {exercise} has {budget} sweeps on {sorted(primary)}; "
                                             "choose one with --source")
    prov = sweeps[source]
    parts = {source} | {s for s, p in sweeps.items() if p.get("part_of_sweep_on") == source}
    runs = [{"seed": seed, "data_source": source, "metrics": {}} for seed in prov["seeds"]]
    prefix = f"{budget}."
    for name, per_source in content.get("bands", {}).items():
        for each in parts & set(per_source):
            entry = per_source[each]
            if name.startswith(prefix) and entry.get("sweep") == [budget, each]:
                for run, value in zip(runs, entry["measured"]):
                    run["metrics"][name[len(prefix):]] = value
    return RecordedSweep(exercise, budget, list(prov["seeds"]), runs, source, prov)


def cmd_reproduce_seeds(args) -> int:
    """`labcheck reproduce ID --seeds N [--quick|--dry-run] --out DIR`: report.md and claims.png.
    With --from-bands instead of --seeds: the same report from the runs behind the committed bands."""
    from labcheck import claims

    budget = budget_name(args.quick, args.dry_run)
    out = Path(args.out or f"runs/{args.exercise}-study")
    out.mkdir(parents=True, exist_ok=True)
    if args.from_bands:
        sweep = sweep_from_bands(args.exercise, budget, args.source)
        seeds = sweep.seeds
    else:
        seeds = seeds_from(args.seeds, args.first_seed)
        sweep = run_sweep(args.exercise, seeds, budget, args.executor, out=out, extra_argv=args.reference_args,
                          command=command_line(args, "reproduce") + f" --out {shlex.quote(str(out))}")
    verdicts = claims.judge_all(claims.load(args.exercise), sweep.runs, sweep.data_source, budget,
                                claims.load_tables(args.exercise))
    if not args.from_bands:
        (out / "sweep.json").write_text(json.dumps(
            {"exercise": args.exercise, "provenance": sweep.provenance(),
             "runs": [{k: r[k] for k in ("seed", "data_source", "metric_sources", "metrics", "seconds")}
                      for r in sweep.runs]},
            indent=1) + "\n")
    pages = claims.plot(verdicts, out / "claims.png",
                        title=f"{args.exercise}: seed claims vs {len(seeds)} seeds ({budget})")
    report = claims.report_markdown(args.exercise, verdicts, sweep, images=[p.name for p in pages],
                                    problems=claims.code_problems(args.exercise),
                                    edges=claims.knife_edges(args.exercise))
    (out / "report.md").write_text(report)
    print(report)
    print(f"report in {out / 'report.md'}")
    return 0


def add_study_arguments(p, budget_help: str) -> None:
    """Flags shared by `labcheck bands` and `labcheck reproduce --seeds`."""
    p.add_argument("--quick", action="store_true", help=f"{budget_help} at the reference's --quick budget "
                                                         "(default: False)")
    p.add_argument("--first-seed", type=int, default=0, metavar="S", help="seeds are S..S+N-1 (default: 0)")
    p.add_argument("--executor", default=None, metavar="E",
                   help="local, local:N, serial or dask://HOST:PORT (default: local, one process per core)")
    p.add_argument("--reference-args", type=shlex.split, default=[], metavar="'ARGS'",
                   help="extra flags for every run of exercises/ID/reference.py, quoted, e.g. '--device cpu' (default: none)")


def add_bands_parser(sub) -> None:
    """The `labcheck bands` subcommand (sub: the CLI's subparsers)."""
    from labcheck.exercises import EXERCISES

    p = sub.add_parser("bands", help="run the reference on N seeds (one process each) and store its bands")
    p.add_argument("exercise", choices=EXERCISES, metavar="ID", help=f"one of {', '.join(EXERCISES)}")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--seeds", type=int, metavar="N",
                     help=f"number of seeds; at least {bands.MIN_RUNS['quick']} quick / {bands.MIN_RUNS['full']} "
                          "full")
    how.add_argument("--from-sweep", default=None, metavar="FILE",
                     help="the sweep.json of a `labcheck reproduce ID --seeds N` run: band those runs instead "
                          "of running again (default: None)")
    how.add_argument("--rederive", action="store_true",
                     help="re-derive the stored bands by the rule from their stored measurements (default: False)")
    add_study_arguments(p, "measure")
    p.add_argument("--contract", action="store_true",
                   help="with --seeds: measure the bands the graded contract tests check (default: False)")
    p.add_argument("--bands-dir", default=None, metavar="DIR",
                   help="write <DIR>/<ID>.json instead of exercises/<ID>/bands.json (default: None)")
    p.add_argument("--allow-few", action="store_true",
                   help="accept fewer seeds than the budget's minimum, e.g. for a test (default: False)")


def get_reproduce_parser() -> "argparse.ArgumentParser":
    """`labcheck reproduce ID --seeds N ...`: the seed study (without --seeds, reproduce runs the reference once)."""
    import argparse

    from labcheck.exercises import EXERCISES

    p = argparse.ArgumentParser(prog="labcheck reproduce", description=cmd_reproduce_seeds.__doc__)
    p.add_argument("exercise", choices=EXERCISES, metavar="ID", help=f"one of {', '.join(EXERCISES)}")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--seeds", type=int, metavar="N", help="number of seeds")
    how.add_argument("--from-bands", action="store_true",
                     help="judge the runs the committed bands of this budget came from, without running "
                          "(default: False)")
    p.add_argument("--source", default=None, metavar="SRC",
                   help="with --from-bands: the data source of the sweep (default: the only one stored)")
    add_study_arguments(p, "run")
    p.add_argument("--dry-run", action="store_true",
                   help="each run at the reference's --dry-run budget: checks the pipeline only (default: False)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="report folder; each run's outputs in DIR/seed_<s>/ (default: runs/ID-study)")
    return p
