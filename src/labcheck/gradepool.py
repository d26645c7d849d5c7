"""Grader processes forked from a preloaded zygote, so a class pays for `import torch` once.

`labcheck grade` runs each submission's contract tests in a grader process of its own (pytest
with the labcheck plugin), which starts the submission's sandboxed worker. Started fresh
(`python -m pytest ...`), a grader spends ~6 s of its ~10 s importing torch, pytest and the
plugins before the first test runs. Here the graders are forked instead, by multiprocessing's
forkserver, from one server process that imported all of that once (`PRELOAD`) and has run no
torch computation (so no thread pool exists to be broken by fork):

    parent (grade.grade_one)  --- launch(argv) --->  forkserver (torch, pytest, labcheck preloaded)
                                                         | fork, one child per submission
                                                         v
                                    grader child: setsid; stdout/stderr -> grader.log;
                                    pytest.main(argv)  ->  sandboxed worker (untrusted, unchanged)

What stays as it was, by construction:
  - one grader process per submission: each child is a fresh copy of the server, which never
    graded anything, so no module-level cache (exercises/*/test_contract.py, labcheck.probes, the plugin)
    can carry one student's state into another's grade; the child exits when its pytest session ends;
  - the same argv as the fresh process (grade.grader_command), the same cwd, the same exit codes
    (negative for a signal), and its own session: the overall cap (`--total-timeout`) and Ctrl-C
    stop the whole process group as before, and a killed child still leaves the partial
    results.json that grade_one completes;
  - the trust boundary: the student's code still runs only in the sandbox worker the child starts;
    the forkserver and the children are grader processes (rule 9).

The reference's expected answers are not recomputed per submission either: the plugin keeps them
in its on-disk cache (labcheck.probes.expected), keyed by the sha256 of the reference and probes.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import types
from pathlib import Path

from labcheck.sandbox import ZYGOTE_ENV, WorkerZygote

# Modules the forkserver imports once (the children inherit them): the heavy, non-plugin libraries.
# Only imports: nothing here may start a thread or run a torch kernel in the server, or fork would
# copy a broken thread pool. Not labcheck, pytest_benchmark or hypothesis: pytest rewrites the asserts
# of plugin packages and refuses ("Module already imported so cannot be rewritten") those it finds
# imported; the children import them (cheaply, torch being loaded) inside pytest.main. pytest itself is
# not a plugin package, so it is preloaded.
PRELOAD = ("torch", "torch.nn", "torch.nn.functional", "numpy", "platformdirs", "pytest",
           # the contract tests' torch.testing.assert_close imports DTensor (and sympy) on its first call:
           # 0.6 s of a grader's CPU, measured; imported here once instead
           "torch.testing", "torch.distributed.tensor")
REWRITTEN_PACKAGES = ("labcheck",)  # imported by the child's bootstrap, dropped before pytest.main
GRADER_THREADS = 1  # torch threads of a grader child: --jobs graders share the cores fairly

_CONTEXT_LOCK = threading.Lock()
_MAIN_LOCK = threading.Lock()
_context = None


def context() -> multiprocessing.context.BaseContext:
    """The forkserver context, its preload list set before the server first starts."""
    global _context
    with _CONTEXT_LOCK:
        if _context is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(list(PRELOAD))  # not '__main__': see REWRITTEN_PACKAGES
            _context = ctx
        return _context


def start_server() -> None:
    """Start the forkserver now (its imports run while the caller does other work), not at the first launch."""
    import multiprocessing.forkserver

    context()
    multiprocessing.forkserver.ensure_running()


def _grader_main(argv: list[str], log_path: str, cwd: str, env: dict[str, str], threads: int,
                 zygote_control=None, zygote_handoff: dict | None = None) -> None:
    """The child: its own session, output to the log, the caller's environment of now (not the one the
    server started with), then one pytest session; exits with pytest's exit code. A worker zygote lent
    by the caller (its control socket, passed by the forkserver) is announced to the Sandbox in ZYGOTE_ENV."""
    os.setsid()  # a process group of its own: stopped as a whole, like start_new_session=True
    signal.signal(signal.SIGINT, signal.default_int_handler)  # SIGINT: pytest ends its report
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(devnull)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    sys.dont_write_bytecode = True
    os.environ.clear()
    os.environ.update(env)
    if zygote_control is not None:
        os.environ[ZYGOTE_ENV] = WorkerZygote.announcement(zygote_control.detach(), zygote_handoff)
    os.chdir(cwd)
    for name in [m for m in sys.modules if m.split(".")[0] in REWRITTEN_PACKAGES]:
        del sys.modules[name]  # this function keeps its globals; pytest imports the plugin afresh
    import pytest
    import torch

    torch.set_num_threads(threads)
    sys.exit(int(pytest.main(argv)))


class ForkedGrader:
    """A started grader child, with the part of subprocess.Popen's interface grade.py uses."""

    def __init__(self, process: multiprocessing.process.BaseProcess):
        self._process = process
        self.pid = process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        """The exit code (negative: killed by that signal); subprocess.TimeoutExpired after `timeout` s."""
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(f"grader {self.pid}", timeout)
        return self._process.exitcode

    def close(self) -> None:
        if self._process.exitcode is not None:
            self._process.close()


def pytest_args(command: list[str]) -> list[str]:
    """The pytest arguments of a `python -m pytest ...` command line (grade.grader_command)."""
    try:
        at = command.index("pytest")
    except ValueError:
        raise ValueError(f"not a `python -m pytest` command: {command[:4]}") from None
    if at < 1 or command[at - 1] != "-m":
        raise ValueError(f"not a `python -m pytest` command: {command[:4]}")
    return list(command[at + 1:])


def launch(command: list[str], log_path: Path, cwd: Path, env: dict[str, str] | None = None,
           threads: int = GRADER_THREADS, zygote=None) -> ForkedGrader:
    """Fork a grader child that runs `command`'s pytest session in `cwd` with `env` (default: this
    process's environment); its output goes to `log_path`. `zygote` (labcheck.sandbox.WorkerZygote) is
    lent to it for the submission's worker."""
    env = dict(os.environ if env is None else env)
    lent = () if zygote is None else (zygote.control, zygote.handoff())
    process = context().Process(target=_grader_main, name="labcheck-grader", daemon=False,
                                args=(pytest_args(command), str(log_path), str(cwd), env, threads, *lent))
    with _MAIN_LOCK:
        # multiprocessing re-runs the caller's __main__ script in every child before the target (its
        # "safe importing of the main module" rule); a grader needs nothing from it, and a script
        # without an `if __name__ == "__main__"` guard would grade its class again in each child.
        # Start the child while __main__ is a bare module, so it has no script to re-run.
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            process.start()
        finally:
            sys.modules["__main__"] = main
    return ForkedGrader(process)


def signal_group(pid: int, sig: int) -> None:
    """Send `sig` to the grader's process group; to the process alone if it has not called setsid yet."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
