"""Peak memory of a process tree, counted as a container's memory limit counts it (issue #26 item 3).

    python -m labcheck.bench.memory [--interval S] [--json PATH] -- COMMAND ...

runs COMMAND and samples every process it starts, children, grandchildren and orphans alike (this
helper makes itself their child subreaper, so a process that leaves its parent stays in the tree and is
reaped here), until COMMAND ends. A platform's container (Gradescope, PrairieLearn: one cgroup per
submission) is charged each page once, however many of its processes map it; so is this count:

    anon  pages no file backs (heaps, tensors, Python objects, a library's relocated data): the
          sum over the tree of each process's Pss_Anon + Pss_Shmem (/proc/PID/smaps_rollup). A page
          shared by fork (a zygote and its child) is split between them, so it counts once; no
          process outside the tree shares them.
    file  pages of mapped files (the interpreter, torch's libraries): each mapping of the tree's
          processes (/proc/PID/smaps) counted once, by file and offset, at the largest resident
          size any process has of it. Pss would divide them with every other process on the
          machine that maps the same library (another user's torch), which a container does not.
    total anon + file, the figure a memory limit is compared with.

Page cache a process reads without mapping (a data file, a .py file) is left out: the kernel
reclaims it before a container's limit kills anything. The file part changes slowly (libraries
are mapped once), so it is read every `file_every` samples and the anon part every sample.
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36  # prctl(2)
DEFAULT_INTERVAL = 0.1  # seconds between samples
FILE_EVERY = 10  # read the file-backed part every this many samples
LINGER = 10.0  # seconds to go on sampling processes COMMAND left behind after it ended


@dataclasses.dataclass
class Peak:
    """The largest total seen, with its parts and the processes of that sample."""

    total_mib: float = 0.0  # anon + file at the peak
    anon_mib: float = 0.0  # the anon part at that sample
    file_mib: float = 0.0  # the file part at that sample
    max_anon_mib: float = 0.0  # the largest anon part of any sample
    processes: list[dict] = dataclasses.field(default_factory=list)  # [{pid, anon_mib, command}] at the peak
    samples: int = 0
    seconds: float = 0.0
    returncode: int | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)


def _children() -> dict[int, list[int]]:
    by_parent: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command may hold spaces and parentheses
        by_parent.setdefault(ppid, []).append(int(name))
    return by_parent


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (not `pid` itself)."""
    by_parent, out, todo = _children(), [], [pid]
    while todo:
        for child in by_parent.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def anon_kib(pid: int) -> int:
    """Pss_Anon + Pss_Shmem of one process, KiB (0 once it has gone)."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Pss_Anon:", "Pss_Shmem:")):
                    total += int(line.split()[1])
    except (OSError, ValueError):
        return 0
    return total


def file_mappings(pid: int) -> dict[tuple[str, str, int], int]:
    """(file, offset, size) -> its resident file-backed KiB (Rss less the Anonymous copies) of one process."""
    out: dict[tuple[str, str, int], int] = {}
    key, rss = None, 0
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split(None, 6)
                if "-" in head[0] and not head[0].endswith(":"):  # a mapping's header line
                    start, end = (int(x, 16) for x in head[0].split("-"))
                    path = head[5].strip() if len(head) > 5 else ""
                    key = (path, head[2], end - start) if path.startswith("/") else None
                elif key is not None and head[0] == "Rss:":
                    rss = int(head[1])
                elif key is not None and head[0] == "Anonymous:":
                    out[key] = max(out.get(key, 0), rss - int(head[1]))
    except (OSError, ValueError, IndexError):
        pass
    return out


def command_of(pid: int, limit: int = 120) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:limit]
    except OSError:
        return "?"


def _reap() -> None:
    """Collect every exited child (orphans reparented here included), never blocking."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run(command: list[str], interval: float = DEFAULT_INTERVAL, file_every: int = FILE_EVERY,
        env: dict | None = None, cwd: str | None = None, linger: float = LINGER) -> Peak:
    """Run `command` and return its process tree's peak (see the module docstring), sampling until it and
    every process it left behind have ended (at most `linger` seconds after it). Call it in a process of
    its own (the CLI below): it makes that process the child subreaper of everything it starts."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # orphans then leave the tree; the count can only be lower
    me = os.getpid()
    start = time.monotonic()
    proc = subprocess.Popen(command, env=env, cwd=cwd)
    peak, files, tick, ended = Peak(), {}, 0, None
    while True:
        if ended is None and proc.poll() is not None:
            ended = time.monotonic()
        pids = [pid for pid in descendants(me) if pid != proc.pid or ended is None]
        done = ended is not None and (not pids or time.monotonic() - ended > linger)
        if tick % file_every == 0:
            files = {}
            for pid in pids:
                for key, kib in file_mappings(pid).items():
                    files[key] = max(files.get(key, 0), kib)
        per = {pid: anon_kib(pid) for pid in pids}
        anon, file = sum(per.values()) / 1024, sum(files.values()) / 1024
        peak.max_anon_mib = max(peak.max_anon_mib, anon)
        if anon + file > peak.total_mib:
            peak.total_mib, peak.anon_mib, peak.file_mib = anon + file, anon, file
            peak.processes = [{"pid": pid, "anon_mib": round(kib / 1024, 1), "command": command_of(pid)}
                              for pid, kib in sorted(per.items(), key=lambda kv: -kv[1]) if kib]
        tick += 1
        _reap()
        if done:
            break
        time.sleep(interval)
    peak.samples, peak.seconds, peak.returncode = tick, round(time.monotonic() - start, 2), proc.returncode
    peak.total_mib, peak.anon_mib, peak.file_mib, peak.max_anon_mib = (
        round(x, 1) for x in (peak.total_mib, peak.anon_mib, peak.file_mib, peak.max_anon_mib))
    return peak


def measure(command: list[str], env: dict | None = None, cwd: str | None = None,
            interval: float = DEFAULT_INTERVAL, timeout: float | None = None) -> Peak:
    """`run(command)` in a helper process of its own (python -m labcheck.bench.memory), from any process."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="labcheck-memory-") as tmp:
        out = Path(tmp) / "peak.json"
        subprocess.run([sys.executable, "-m", "labcheck.bench.memory", "--interval", str(interval), "--json", str(out),
                        "--", *command], env=env, cwd=cwd, check=False, timeout=timeout)
        return Peak(**json.loads(out.read_text()))


def format_peak(peak: Peak) -> str:
    return (f"{peak.total_mib:.0f} MiB ({peak.anon_mib:.0f} anon + {peak.file_mib:.0f} mapped files, "
            f"{len(peak.processes)} processes)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labcheck.bench.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, metavar="S",
                        help=f"seconds between samples (default: {DEFAULT_INTERVAL})")
    parser.add_argument("--json", metavar="PATH", default=None, help="write the peak as JSON here (default: stdout)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")
    peak = run(command, args.interval)
    if args.json:
        Path(args.json).write_text(peak.to_json())
    else:
        print(peak.to_json())
    return 0 if peak.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
