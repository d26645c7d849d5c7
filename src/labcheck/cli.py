"""The `labcheck` command: list, data, reproduce, grade, bench.

    labcheck list [--markdown]                 the exercises and their seeds (--markdown: the README table)
    labcheck new ID                            a new exercise folder from the template (exercises/ID/)
    labcheck mutants ID [--max N]              the mutation score of ID's graded tests, and every survivor
    labcheck data [--download]                 where each data set was found, sizes, checksums
    labcheck reproduce ID [reference flags]    run exercises/ID/reference.py (e.g. --quick, --dry-run, --out DIR)
    labcheck reproduce ID --seeds N [--quick] [--out DIR]   N seeds, the seed's claims judged: report.md
    labcheck reproduce ID --from-bands [--quick]            the same report from the runs the bands came from
    labcheck bands ID --seeds N [--quick]      measure the reference's bands (exercises/ID/bands.json)
    labcheck grade SUBMISSION... --exercise ID --out DIR
    labcheck grade --examples [--exercise ID] --out DIR
    labcheck bench [--exercise ID]             throughput table of the training cores
    labcheck bench --save NAME [--compare OLD] measure and save a run; compare it with a saved one
    labcheck bench --compare OLD --to NAME     compare two saved runs (REGRESSION / same / faster per case)
    labcheck bench --history                   one PNG per case of every saved run
    labcheck package gradescope|prairielearn --exercise ID [--out PATH]   a grading package
    labcheck handout ID [--out DIR]            what students receive: contract, starters, the public self-check
    labcheck check FILE --exercise ID [--handout DIR]   a student's self-check: the handout's public tests
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from labcheck import paths
from labcheck.exercises import EXERCISES, REGISTRY

def exercise_table() -> str:
    """The README's table of exercises, made from the registry (`labcheck list --markdown`)."""
    rows = ["| id | seed notebook | data | what is reproduced |", "| --- | --- | --- | --- |"]
    for ex in REGISTRY.values():
        seed = Path(ex.seed_file).stem if ex.seed_file else "-"
        rows.append(f"| `{ex.id}` | {seed} | {ex.dataset or 'generated'} ({ex.subsampling}) | {ex.title} |")
    return "\n".join(rows)


def cmd_list(args) -> int:
    if getattr(args, "markdown", False):
        print(exercise_table())
        return 0
    for ex in REGISTRY.values():
        present = "" if ex.reference_path.is_file() else "  (no reference yet)"
        print(f"{ex.id:12s} {ex.dataset or 'generated':14s} {ex.title}  [{ex.seed_file or 'no seed'}]{present}")
    return 0


def cmd_data(args) -> int:
    from labcheck import data

    names = tuple(getattr(args, "only", None) or (data.MNIST, data.FASHION))
    rows = [data.describe(name, args.root, allow_download=args.download) for name in names]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    status = 0
    for row in rows:
        if row["found"]:
            print(f"{row['name']:14s} source={row['source']:14s} train={row['train']:6d} test={row['test']:6d} "
                  f"sha256(train)={row['train_sha256']} sha256(test)={row['test_sha256']}\n{'':14s} at {row['location']}")
        else:
            status = 1
            print(f"{row['name']:14s} MISSING: {row['error']}")
    return status


def cmd_reproduce(args, rest: list[str]) -> int:
    try:
        module = REGISTRY[args.exercise].load_reference()
    except FileNotFoundError as e:  # a missing reference ends the command with its path, no traceback
        raise SystemExit(f"labcheck: {e}") from None
    ref_args = module.get_args_parser().parse_args(rest)
    result = module.main(ref_args)
    return int(result) if isinstance(result, int) else 0


def cmd_bands(args) -> int:
    from labcheck import study

    return study.cmd_bands(args)


def _isolation_level(text: str) -> str:
    from labcheck.sandbox import isolation_level  # (imports torch: only when the flag is given)

    return isolation_level(text)


def cmd_grade(args) -> int:
    from labcheck import grade

    return grade.main(args)


def cmd_bench(args) -> int:
    from labcheck.bench import command

    return command.main(args)


def cmd_package(args) -> int:
    from labcheck import package

    return package.main(args)


def cmd_handout(args) -> int:
    from labcheck import handout

    return handout.main(args)


def cmd_check(args) -> int:
    from labcheck import selfcheck

    return selfcheck.main(args)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labcheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("new", help="write a new exercise folder from the template (exercises/ID/)")
    p.add_argument("exercise", metavar="ID", help="the new exercise's id: lower-case letters, digits and _")
    p.add_argument("--root", metavar="DIR", default=None,
                   help="folder to write ID/ in; list it in $LABCHECK_EXERCISES if it is not the checkout's "
                        "exercises/ (default: exercises/)")
    p = sub.add_parser("mutants", help="grade single-point mutants of an exercise's correct example: the "
                                       "mutation score of its graded tests and every survivor's diff")
    p.add_argument("exercise", choices=EXERCISES, metavar="ID", help="an exercise id (`labcheck list`)")
    p.add_argument("--max", type=int, default=None, metavar="N", help="grade a sample of N mutants (default: all)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the sample (default: 0)")
    p.add_argument("--jobs", type=int, default=2, metavar="N", help="mutants graded in parallel (default: 2)")
    p.add_argument("--out", metavar="DIR", default=None, help="keep the mutants and their reports here "
                   "(default: a temporary folder)")
    p = sub.add_parser("list", help="list the exercises")
    p.add_argument("--markdown", action="store_true", help="the README's table of exercises (default: False)")
    p = sub.add_parser("data", help="where each data set was found, sizes and checksums")
    p.add_argument("--root", metavar="DIR", default=None, help="extra folder to search first (default: None)")
    p.add_argument("--download", action="store_true", help="allow a torchvision download (default: False)")
    p.add_argument("--json", action="store_true", help="print JSON (default: False)")
    p.add_argument("--only", action="append", default=None, metavar="NAME", choices=("mnist", "fashion-mnist"),
                   help="only this data set, mnist or fashion-mnist; repeatable (default: both)")
    p = sub.add_parser("reproduce", help="run an exercise's reference; other flags go to exercises/ID/reference.py",
                       add_help=False)
    p.add_argument("exercise", choices=EXERCISES, metavar="ID", help="an exercise id (`labcheck list`)")
    p = sub.add_parser("grade", help="grade submissions against an exercise's contract tests")
    p.add_argument("submissions", nargs="*", metavar="SUBMISSION",
                   help="files (.py/.ipynb) or folders (a folder of many: each entry)")
    p.add_argument("--exercise", choices=EXERCISES, metavar="ID", default=None,
                   help="exercise to grade; required unless --examples (default: None)")
    p.add_argument("--examples", action="store_true",
                   help="grade the bundled exercises/<id>/examples/*.py and check their EXPECTED_FAILURES (default: False)")
    p.add_argument("--out", metavar="DIR", default="runs/grades", help="report folder (default: runs/grades)")
    p.add_argument("--jobs", type=int, default=2, metavar="N", help="submissions graded in parallel (default: 2)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="cap on the seconds of one call; each call gets max(20 x the reference's time, 5 s) "
                        "up to this (default: 60.0)")
    p.add_argument("--min-isolation", metavar="LEVEL", default="whitelist-fs", type=_isolation_level,
                   help="refuse to grade below this confinement: none < hook-only < no-network < whitelist-fs "
                        "(bubblewrap) (default: whitelist-fs)")
    p.add_argument("--total-timeout", type=float, default=900.0, metavar="S",
                   help="seconds per submission, all its tests together (default: 900.0)")
    p.add_argument("--memory-mb", type=int, default=3072, metavar="MB", help="worker memory limit (default: 3072)")
    p.add_argument("--fresh", action="store_true", help="regrade even where a finished report exists (default: False)")
    p.add_argument("--roster", metavar="CSV", default=None,
                   help="columns file,student_id,email,name: who handed in which file; writes OUT/lms/ "
                        "(Canvas, Moodle, Brightspace grade imports) (default: None)")
    p.add_argument("--assignment", metavar="NAME", default=None,
                   help="the assignment's name in the LMS files (default: 'labcheck ID')")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar or per-submission lines, for CI logs (default: False)")
    p.add_argument("--grader", choices=("fork", "fresh"), default=None, metavar="HOW",
                   help="fork: graders forked from a zygote with torch loaded; fresh: one new python per "
                        "submission (default: $LABCHECK_GRADER or fork)")
    p.add_argument("--worker", choices=("fork", "fresh"), default=None, metavar="HOW",
                   help="fork: each submission's sandboxed worker forked from a worker zygote under the same "
                        "bubblewrap set-up (torch imported once per job); fresh: a new sandboxed process per "
                        "submission (default: $LABCHECK_WORKER or fork)")
    from labcheck.package import add_parser as add_package_parser

    add_package_parser(sub)
    from labcheck.study import add_bands_parser

    add_bands_parser(sub)
    p = sub.add_parser("handout", help="what students receive: contract, starter notebook and .py, public self-check")
    p.add_argument("exercise", choices=EXERCISES, metavar="ID", help=f"one of {', '.join(EXERCISES)}")
    p.add_argument("--out", metavar="DIR", default=None, help="the handout's folder (default: handout-ID)")
    p = sub.add_parser("check", help="run a handout's public tests on your file before you submit")
    p.add_argument("file", metavar="FILE", help="your submission (.py or .ipynb)")
    p.add_argument("--exercise", choices=EXERCISES, metavar="ID", required=True, help=f"one of {', '.join(EXERCISES)}")
    p.add_argument("--handout", metavar="DIR", default=None,
                   help="the handout's folder, the one holding check/ (default: FILE's folder)")
    p = sub.add_parser("bench", help="throughput table of each exercise's training core")
    p.add_argument("--exercise", choices=EXERCISES, metavar="ID", default=None, help="only this one (default: all)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="cpu or cuda (default: cpu)")
    p.add_argument("--seconds", type=float, default=2.0, metavar="S", help="time per measurement (default: 2.0)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch and BLAS threads; None: $LABCHECK_BENCH_THREADS or 1 (default: None)")
    p.add_argument("--grading-class", type=int, default=None, metavar="N",
                   help="submissions in the grading-throughput row; 0 skips it "
                        "(default: $LABCHECK_BENCH_GRADING_CLASS or 20)")
    p.add_argument("--grading-python", default=None, metavar="PATH",
                   help="the interpreter whose environment the grading-memory row grades with, as a platform's "
                        "image would (e.g. a venv with torch's CPU build) (default: $LABCHECK_BENCH_GRADING_PYTHON "
                        "or this one)")
    p.add_argument("--grading-submission", default=None, metavar="FILE",
                   help="the .py the grading-memory row grades, one that scores full marks (default: None, the "
                        "exercise's examples/correct.py)")
    p.add_argument("--repeats", type=int, default=None, metavar="R",
                   help="measure every case R times, repeat by repeat; a saved run's noise is measured from its "
                        "repeats (default: 3 with --save or --compare, else 1)")
    p.add_argument("--save", default=None, metavar="NAME", help="store this run as NAME in --store (default: None)")
    p.add_argument("--compare", default=None, metavar="OLD",
                   help="compare this run (or --to's) with the saved run OLD; exit 1 on a REGRESSION (default: None)")
    p.add_argument("--to", default=None, metavar="NAME",
                   help="with --compare: the saved run NAME instead of a new measurement (default: None)")
    p.add_argument("--history", action="store_true",
                   help="draw every saved run, one PNG per case, in --out; measures nothing (default: False)")
    p.add_argument("--store", default=None, metavar="DIR",
                   help="folder of saved runs (default: None, i.e. $XDG_CACHE_HOME/labcheck/bench or "
                        "~/.cache/labcheck/bench)")
    p.add_argument("--out", default=None, metavar="DIR", help="folder of --history's PNGs (default: None: STORE/history)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = get_args_parser()
    if argv[:1] == ["reproduce"] and any(a in ("--seeds", "--from-bands") or a.startswith("--seeds=")
                                           for a in argv):
        from labcheck import study

        return study.cmd_reproduce_seeds(study.get_reproduce_parser().parse_args(argv[1:]))
    if argv[:1] == ["reproduce"]:
        if len(argv) < 2 or argv[1].startswith("-"):
            parser.parse_args(argv)  # prints usage / help
            return 2
        args = parser.parse_args(argv[:2])
        return cmd_reproduce(args, argv[2:])
    args = parser.parse_args(argv)
    if args.command == "new":
        from labcheck import new_exercise

        return new_exercise.main(args)
    if args.command == "mutants":
        from labcheck import mutants

        return mutants.main(args)
    return {"list": cmd_list, "data": cmd_data, "grade": cmd_grade, "bench": cmd_bench,
            "package": cmd_package, "bands": cmd_bands, "handout": cmd_handout,
            "check": cmd_check}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
