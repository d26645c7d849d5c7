"""Independent runs on every core, or on a Dask cluster: one executor interface for all studies.

A study (a band sweep over seeds, a grid of hyperparameters) is a list of independent runs of one
function. `run_all` hands them to a pool of worker processes, each with ONE torch/BLAS thread, so
N runs use N cores without oversubscribing them, and returns their results in the order given:

    from labcheck import runner
    results = runner.run_all("labcheck.study:run_reference",          # "module:function", importable
                             [{"exercise": "width", "argv": ["--quick", "--seed", str(s)]} for s in seeds],
                             executor="local")                        # or "local:2", "serial", "dask://HOST:PORT"

The function is named by its import path ("package.module:function"), not passed as an object,
so every kind of worker (a spawned process, a Dask worker on another machine) imports it fresh and
nothing has to be pickled but the path and the keyword arguments; a function defined in a test or
in a script run as __main__ cannot be reached that way and is refused up front. Its keyword
arguments and its return value must pickle (plain data: dicts, lists, numbers, strings).

Executors (`executor=`):
  None or "local"   a process pool with one worker per core, at most one per run;
  "local:N"         the same with N workers;
  "serial"          every run in this process, one after the other (debugging; still 1 thread);
  "dask://HOST:PORT" the runs go to the Dask scheduler at HOST:PORT through
                    `distributed.Client(address).get_executor()`, a concurrent.futures executor.
                    Start its workers with one thread each, e.g.
                    `dask worker tcp://HOST:PORT --nworkers 2 --nthreads 1`, and with labcheck
                    installed (`pip install -e .`) from the same checkout, since each worker imports
                    the function and the reference files by path.
Local workers are spawned, never forked (a forked torch can deadlock in OpenMP), and each process
serves `runs_per_process` runs (default 1: one fresh process per run, so no run sees another's
global state: RNGs, torch flags, imported references; many short runs: a larger number saves the
seconds of importing torch per process). OMP/MKL/OpenBLAS thread variables are 1 in
the workers' environment, and every call sets `torch.set_num_threads(1)` and threadpoolctl's limit
itself, which also holds on Dask workers started by someone else.

A run that raises makes `run_all` raise RunError naming the run (its index and keyword arguments);
no further run starts (runs already under way finish first) and the worker's traceback is chained.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import importlib
import multiprocessing
import os
import platform
import socket
import time
from typing import Any, Callable, Iterator, Sequence

# Thread variables read by OpenMP, MKL and OpenBLAS when they load: a worker gets one thread.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
DASK_SCHEME = "dask://"


class RunError(RuntimeError):
    """One run of a study failed; the message names it, the worker's exception is the cause."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one run returned, and where and how long it ran."""
    value: Any  # the function's return value
    seconds: float  # wall time of the call inside the worker (imports and process start excluded)
    worker: str  # "host:pid" of the process that ran it
    torch_threads: int  # torch.get_num_threads() during the call (1 unless something overrode it)


def resolve(target: str) -> Callable:
    """The function named by "package.module:function" (dots after the colon walk attributes)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"target {target!r} is not of the form 'package.module:function'")
    if module_name == "__main__":
        raise ValueError(f"target {target!r} lives in __main__, which a worker process cannot import")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"target {target!r} is not callable")
    return obj


def limit_threads() -> int:
    """One torch thread and one BLAS thread in this process; returns torch's thread count."""
    import torch

    torch.set_num_threads(1)
    try:
        import threadpoolctl
    except ImportError:  # pragma: no cover - the environment variables above still hold
        pass
    else:
        threadpoolctl.threadpool_limits(1)
    return torch.get_num_threads()


def call(target: str, kwargs: dict) -> Outcome:
    """Run target(**kwargs) with one thread; what every worker executes (module level, so it pickles)."""
    threads = limit_threads()
    fn = resolve(target)
    start = time.perf_counter()
    value = fn(**kwargs)
    seconds = time.perf_counter() - start
    return Outcome(value, seconds, f"{socket.gethostname()}:{os.getpid()}", threads)


def describe_worker(**echo) -> dict:
    """Where a call runs: host, pid, torch and BLAS threads; `echo` is returned as given (for tests)."""
    import threadpoolctl
    import torch

    blas = [p["num_threads"] for p in threadpoolctl.threadpool_info()]
    return {"host": socket.gethostname(), "pid": os.getpid(), "torch_threads": torch.get_num_threads(),
            "blas_threads": blas, "env": {k: os.environ.get(k) for k in THREAD_ENV}, "echo": echo}


@dataclasses.dataclass(frozen=True)
class ExecutorSpec:
    """A parsed `executor` string."""
    kind: str  # "local", "serial" or "dask"
    workers: int | None = None  # local: processes (None: one per core); dask: unused
    address: str | None = None  # dask: the scheduler's "tcp://HOST:PORT"

    @classmethod
    def parse(cls, spec: str | None) -> "ExecutorSpec":
        spec = spec or "local"
        if spec == "serial":
            return cls("serial")
        if spec == "local":
            return cls("local")
        if spec.startswith("local:"):
            workers = int(spec.split(":", 1)[1])
            if workers < 1:
                raise ValueError(f"executor {spec!r}: need at least one worker")
            return cls("local", workers=workers)
        if spec.startswith(DASK_SCHEME):
            host_port = spec[len(DASK_SCHEME):]
            if not host_port or ":" not in host_port:
                raise ValueError(f"executor {spec!r}: expected dask://HOST:PORT")
            return cls("dask", address=f"tcp://{host_port}")
        raise ValueError(f"unknown executor {spec!r}: use local, local:N, serial or dask://HOST:PORT")

    def describe(self) -> str:
        if self.kind == "dask":
            return f"dask scheduler {self.address}"
        if self.kind == "serial":
            return "serial (this process)"
        return f"local process pool, {self.workers or 'one per core'} workers, 1 thread each"


@contextlib.contextmanager
def _one_thread_environment() -> Iterator[None]:
    """Children spawned inside the block inherit 1-thread OMP/MKL/OpenBLAS variables."""
    saved = {k: os.environ.get(k) for k in THREAD_ENV}
    os.environ.update({k: "1" for k in THREAD_ENV})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def dask_executor(address: str) -> Iterator[cf.Executor]:
    """The concurrent.futures executor of the Dask scheduler at `address`, disconnected on exit."""
    from distributed import Client

    with Client(address) as client:
        executor = client.get_executor(pure=False)  # the same arguments twice still mean two runs
        try:
            yield executor
        finally:
            executor.shutdown(wait=False)


def _local_outcomes(target: str, runs: list[dict], workers: int, runs_per_process: int, done) -> dict[int, Outcome]:
    """Runs on `workers` slots; each slot runs its share in a one-worker process pool that it replaces
    every `runs_per_process` runs (so a fresh process per run by default, and no idle process is ever
    spawned at the end, as a shared pool with max_tasks_per_child would)."""
    import threading

    pending = list(enumerate(runs))[::-1]
    lock = threading.Lock()
    results: dict[int, Outcome] = {}
    failures: list[tuple[int, dict, BaseException]] = []
    context = multiprocessing.get_context("spawn")

    def slot() -> None:
        pool, served = None, 0
        try:
            while True:
                with lock:
                    if not pending or failures:
                        return
                    i, kwargs = pending.pop()
                if pool is None or served == runs_per_process:
                    if pool is not None:
                        pool.shutdown()
                    pool, served = cf.ProcessPoolExecutor(max_workers=1, mp_context=context), 0
                served += 1
                try:
                    results[i] = pool.submit(call, target, kwargs).result()
                except BaseException as e:  # noqa: BLE001 - reported as RunError below
                    with lock:
                        failures.append((i, kwargs, e))
                    return
                done(i, results[i])
        finally:
            if pool is not None:
                pool.shutdown()

    with _one_thread_environment(), cf.ThreadPoolExecutor(max_workers=workers) as slots:
        for future in [slots.submit(slot) for _ in range(workers)]:
            future.result()
    if failures:
        i, kwargs, e = min(failures, key=lambda f: f[0])
        raise RunError(f"run {i} ({kwargs}) failed: {type(e).__name__}: {e}") from e
    return results


def run_outcomes(target: str, runs: Sequence[dict], executor: str | None = None, *,
                 runs_per_process: int = 1, log: Callable[[str], None] | None = None) -> list[Outcome]:
    """Outcome of target(**kwargs) for every kwargs in `runs`, in that order (see the module docstring)."""
    resolve(target)  # fail here, not in a worker, when the target does not import
    runs = [dict(r) for r in runs]
    spec = ExecutorSpec.parse(executor)
    if log:
        log(f"{len(runs)} runs of {target} on {spec.describe()}")

    def done(i: int, outcome: Outcome) -> None:
        _log_done(log, i, len(runs), outcome)

    if spec.kind == "serial":
        outcomes = []
        for i, kwargs in enumerate(runs):
            outcomes.append(_checked(i, kwargs, lambda kw=kwargs: call(target, kw)))
            done(i, outcomes[-1])
        return outcomes
    if spec.kind == "local":
        workers = max(1, min(spec.workers or os.cpu_count() or 1, len(runs)))
        results = _local_outcomes(target, runs, workers, runs_per_process, done)
        return [results[i] for i in range(len(runs))]
    results = {}
    with dask_executor(spec.address) as pool:
        futures = {pool.submit(call, target, kwargs): i for i, kwargs in enumerate(runs)}
        try:
            for future in cf.as_completed(futures):
                i = futures[future]
                results[i] = _checked(i, runs[i], future.result)
                done(i, results[i])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [results[i] for i in range(len(runs))]


def run_all(target: str, runs: Sequence[dict], executor: str | None = None, **options) -> list:
    """[target(**kwargs) for kwargs in runs], run in parallel; options as for `run_outcomes`."""
    return [o.value for o in run_outcomes(target, runs, executor, **options)]


def _checked(index: int, kwargs: dict, get: Callable[[], Outcome]) -> Outcome:
    try:
        return get()
    except Exception as e:
        raise RunError(f"run {index} ({kwargs}) failed: {type(e).__name__}: {e}") from e


def _log_done(log, index: int, total: int, outcome: Outcome) -> None:
    if log:
        log(f"run {index + 1}/{total} done in {outcome.seconds:.1f} s on {outcome.worker}")


def machine() -> str:
    """One line about this machine, for provenance."""
    return f"{platform.node()}: {platform.machine()}, {os.cpu_count()} cpus, {platform.system()} {platform.release()}"
