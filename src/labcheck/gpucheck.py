"""`scripts/gpu-check`: labcheck's GPU checks in one command, for a bare CUDA machine (issue #25).

A machine an instructor borrows has torch (with numpy), pytest and hypothesis, but none of labcheck's other
dependencies, none of its data and no network. This module imports only those (plus torchvision for the
bench part), and labcheck runs from the working tree (PYTHONPATH=src, set by the script). The data comes
from a pack made beforehand on a machine that has it (`scripts/gpu-check --pack`: the data sets exactly as
found there, 32 MB, in gpu-pack/ of the working tree, git-ignored) plus the pure-Python modules the
references import and a bare machine lacks (tqdm), copied beside it.

Parts, in order, each a row of the closing table:
  1. tests     the `gpu` tests (`pytest -m gpu` over the test files that hold any) and
               tests/test_device_semantics.py whole (grading hides the GPU; --deterministic runs repeat
               bit for bit); pytest loads only the labcheck plugin (PYTEST_DISABLE_PLUGIN_AUTOLOAD).
               Where the compiled training step cannot be built (no g++/ninja), its tests are deselected
               and the row says so.
  2. bands     each exercise's reference that trains on the device (Exercise.devices), quick budget, the
               held-out seed, checked against its quick bands for this data source: the same bands as on
               the CPU. A band is a prediction interval for one new run; a run on another device is one more
               such run (other RNG streams, other float rounding), so a band that holds there is the test
               that the device changes nothing beyond seed-to-seed noise. The bands checked are the quick
               budget's band test (its bands file's family); a correct reference fails the row with
               probability at most bands.FAMILY_FALSE_FAILURE, printed.
  3. bench     the bench cases on the device, one repeat (labcheck.bench), optionally saved (--save NAME).
`--device cpu` runs the same parts on the CPU, so the suite tests the script on every machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from labcheck import paths

REQUIRED = ("torch", "numpy", "pytest", "hypothesis")  # what a bare GPU machine is assumed to have
PACKED_MODULES = ("tqdm",)  # pure Python, imported by the references, absent from a bare machine
GPU_MARK = re.compile(r"^\s*@pytest\.mark\.gpu\b|marks=\(?pytest\.mark\.gpu\b", re.MULTILINE)
SEMANTICS_TESTS = "test_device_semantics.py"


@dataclasses.dataclass(frozen=True)
class Config:
    """What one gpu-check runs; the script's flags map one to one."""

    device: str = "cuda"  # cuda, or cpu to check the script itself
    exercises: tuple[str, ...] = ()  # only these exercises' references and bench cases (empty: all)
    parts: tuple[str, ...] = ("tests", "bands", "bench")  # which parts run
    bench_seconds: float = 1.0  # seconds per timed bench loop
    pack: str = ""  # the data pack to use (empty: gpu-pack/ of the working tree where it exists)
    save: str | None = None  # save the bench run under this name (labcheck bench --history draws it)


@dataclasses.dataclass
class Row:
    part: str
    what: str
    verdict: str  # PASS, FAIL or SKIP
    detail: str
    seconds: float


def default_pack() -> Path:
    return paths.repo_root() / "gpu-pack"


def make_pack(dest: Path) -> str:
    """The data sets as this machine has them, and PACKED_MODULES, into `dest` (see the module docstring)."""
    from labcheck import data

    packed = data.pack(dest)
    site = dest / "site"
    for name in PACKED_MODULES:
        spec = importlib.util.find_spec(name)
        source = Path(spec.origin).parent
        shutil.copytree(source, site / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    return (f"packed {', '.join(f'{k} (source {v})' for k, v in packed.items())} and {', '.join(PACKED_MODULES)} "
            f"into {dest}: {size / 2**20:.1f} MiB")


def _use_pack(cfg: Config) -> str:
    """Point LABCHECK_DATA at the pack and put its modules on the path (after what is installed)."""
    pack = Path(cfg.pack) if cfg.pack else default_pack()
    if not pack.is_dir():
        return f"no data pack at {pack}: the data sets must be found otherwise (labcheck.data's search)"
    os.environ.setdefault("LABCHECK_DATA", str(pack))
    site = str(pack / "site")
    if site not in sys.path:
        sys.path.append(site)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), site) if p)
    return f"data pack {pack} (LABCHECK_DATA={os.environ['LABCHECK_DATA']})"


def gpu_test_files() -> list[Path]:
    """The test files that mark a test `gpu` (in code, not in a string), benchmarks aside (the bench part)."""
    files = [*sorted(paths.tests_dir().glob("test_*.py")), *sorted(paths.exercises_dir().glob("*/test_*.py"))]
    return [p for p in files if GPU_MARK.search(p.read_text())]


def _pytest(args: list[str], junit: Path) -> tuple[dict[str, int], str]:
    """Run pytest with only the labcheck plugin; (outcome counts from its junit report, its output's tail)."""
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "labcheck.plugin", "-p", "no:cacheprovider", "-q",
                           f"--junitxml={junit}", *args], cwd=paths.repo_root(), env=env, capture_output=True, text=True)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if junit.is_file():
        for suite in ET.parse(junit).getroot().iter("testsuite"):
            for key in counts:
                counts[key] += int(suite.get(key, 0))
    if proc.returncode not in (0, 1, 5):  # 1: tests failed (counted above); 5: none collected
        counts["errors"] += 1  # interrupted, an internal error, a usage error
    return counts, (proc.stdout + proc.stderr)[-2000:]


def run_tests(cfg: Config, tmp: Path) -> list[Row]:
    from labcheck import native

    deselect: list[str] = []
    note = ""
    if native.module() is None:  # its tests fail rather than skip where it cannot be built (test_training_core)
        deselect = ["-k", "not compiled"]
        note = f"; compiled-step tests deselected ({native.status()})"
    rows = []
    for what, args in (("gpu tests (pytest -m gpu)", ["-m", "gpu", *deselect, *map(str, gpu_test_files())]),
                       # an explicit -m: the suite's addopts name `benchmark`, a marker of an unloaded plugin
                       ("device semantics", ["-m", "not slow", str(paths.tests_dir() / SEMANTICS_TESTS)])):
        start = time.perf_counter()
        counts, tail = _pytest(args, tmp / f"{len(rows)}.xml")
        bad = counts["failures"] + counts["errors"]
        passed = counts["tests"] - bad - counts["skipped"]
        verdict = "FAIL" if bad else "PASS" if passed else "SKIP"
        detail = f"{passed} passed, {bad} failed, {counts['skipped']} skipped{note}"
        if bad:
            print(tail)
        rows.append(Row("tests", what, verdict, detail, time.perf_counter() - start))
    return rows


def check_reference(exercise: str, device: str) -> Row:
    """One quick run of the reference on `device` at the held-out seed, checked against its quick bands."""
    from labcheck import bands, exercises

    start = time.perf_counter()
    ex = exercises.get(exercise)
    try:
        ref = ex.load_reference()
        argv = ["--quick", "--seed", str(bands.HELD_OUT_SEED), "--device", device]
        if "--no-progress" in ref.get_args_parser().format_help():
            argv.append("--no-progress")
        result = ref.main(ref.get_args_parser().parse_args(argv))
    except ImportError as e:
        return Row("bands", exercise, "SKIP", f"not run: needs {e.name}", time.perf_counter() - start)
    source = result["data_source"]
    if not bands.has_bands(exercise, "quick", source):
        return Row("bands", exercise, "SKIP", bands.missing_band_message(exercise, "quick", source),
                   time.perf_counter() - start)
    try:  # the quick budget's band test: the metrics its bands file bands (one family, labcheck.bands)
        checked = bands.check_all(exercise, "quick", ref.band_metrics(result), source, result.get("metric_sources"))
    except bands.BandError as e:
        return Row("bands", exercise, "FAIL", f"{source}: {e}", time.perf_counter() - start)
    measured_on = sorted({b.provenance.get("device", "?") for b in checked})
    return Row("bands", exercise, "PASS",
               f"{len(checked)} quick bands of {source} hold (measured on {', '.join(measured_on)}; false-failure "
               f"probability <= {bands.FAMILY_FALSE_FAILURE:g} as a whole)", time.perf_counter() - start)


def run_bench(cfg: Config) -> list[Row]:
    import torch

    from labcheck import native
    from labcheck.bench import builders, command, harness, history

    harness.set_threads(harness.threads_from_env())
    device = torch.device(cfg.device)
    names = [n for n in builders.cases_for(None, device)
             if not cfg.exercises or builders.CASES[n].exercise in cfg.exercises]
    start = time.perf_counter()
    by_repeat = command.measure_repeats(names, device, cfg.bench_seconds, 1)
    if cfg.save:
        run = history.make_run(cfg.save, by_repeat, device.type, torch.get_num_threads(),
                               harness.clock_name(harness.clock_for(device)), cfg.bench_seconds, native.status())
        print(f"bench run saved: {history.save(run)}")
    seconds = (time.perf_counter() - start) / max(1, len(names))
    return [Row("bench", r.case, "PASS", f"{r.samples_per_s:,.0f} samples/s, {r.ratio:.1f}x the seed-style loop, "
                f"{r.peak_fraction:.1%} of sgemm peak ({r.peak_gflops:.0f} GFLOP/s)", seconds)
            for r in by_repeat[0]]


def format_rows(rows: list[Row]) -> str:
    width = max(len(r.what) for r in rows)
    lines = [f"{'part':6s} {'what':{width}s} {'verdict':7s} {'s':>6s}  detail"]
    lines += [f"{r.part:6s} {r.what:{width}s} {r.verdict:7s} {r.seconds:6.1f}  {r.detail}" for r in rows]
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    d = Config()
    p = argparse.ArgumentParser(prog="scripts/gpu-check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=d.device, choices=("cuda", "cpu"), help=f"(default: {d.device})")
    p.add_argument("--exercise", dest="exercises", action="append", default=[], metavar="ID",
                   help="only this exercise's references and bench cases; repeatable (default: all)")
    p.add_argument("--part", dest="parts", action="append", choices=d.parts, default=[],
                   help=f"only this part; repeatable (default: {', '.join(d.parts)})")
    p.add_argument("--bench-seconds", type=float, default=d.bench_seconds, metavar="S",
                   help=f"seconds per timed bench loop (default: {d.bench_seconds})")
    p.add_argument("--pack-dir", dest="pack", default=d.pack, metavar="DIR",
                   help="the data pack (default: gpu-pack/ in the working tree)")
    p.add_argument("--pack", dest="make_pack", action="store_true",
                   help="write the data pack from this machine's data and stop (default: False)")
    p.add_argument("--save", default=d.save, metavar="NAME", help="save the bench run as NAME (default: None)")
    return p


def main(argv: list[str] | None = None) -> int:
    """0 when every part that ran passed; 1 when one failed; 2 when this machine cannot run the check."""
    args = get_args_parser().parse_args(argv)
    if args.make_pack:
        print(make_pack(Path(args.pack) if args.pack else default_pack()))
        return 0
    cfg = Config(args.device, tuple(args.exercises), tuple(args.parts) or Config.parts, args.bench_seconds,
                 args.pack, args.save)
    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    if missing:
        print(f"gpu-check: missing {', '.join(missing)} (needs {', '.join(REQUIRED)})")
        return 2
    import torch

    if cfg.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: torch.cuda.is_available() is False here; `scripts/gpu-check --device cpu` checks the script")
        return 2
    card = torch.cuda.get_device_name() if cfg.device == "cuda" else "CPU"
    print(f"gpu-check on {cfg.device} ({card}), torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"Python {sys.version.split()[0]}; {_use_pack(cfg)}", flush=True)
    from labcheck import exercises

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="labcheck-gpu-check-") as tmp:
        if "tests" in cfg.parts:
            rows += run_tests(cfg, Path(tmp))
    if "bands" in cfg.parts:
        for ex in exercises.REGISTRY.values():
            if (not cfg.exercises or ex.id in cfg.exercises) and cfg.device in ex.devices:
                rows.append(check_reference(ex.id, cfg.device))
    if "bench" in cfg.parts:
        if importlib.util.find_spec("torchvision") is None:
            rows.append(Row("bench", "cases", "SKIP", "needs torchvision (the seed-style loop)", 0.0))
        else:
            rows += run_bench(cfg)
    print(f"\ngpu-check, {time.strftime('%Y-%m-%d')}, {card}, torch {torch.__version__}:")
    print(format_rows(rows))
    failed = [r for r in rows if r.verdict == "FAIL"]
    print(f"{'FAIL' if failed else 'PASS'}: {len(rows) - len(failed)} of {len(rows)} rows passed or skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
