"""The timing harness of `labcheck bench`: how a round is timed, on which clock, with how many threads,
and this machine's sgemm peak, against which %peak is read.

Every rate comes from the fastest round, because other processes on a shared machine only ever add
time; a clock is read only after core.synchronize(device), and on a 1-thread CPU run the clock is this
thread's CPU time (clock_for), which a loaded machine disturbs far less than the wall clock. Torch
threads are set explicitly (default 1: on a busy 2-core runner OpenMP's spinning threads made a
128x784 @ 784x100 matmul 10x slower with 2 threads than with 1) and recorded with every result.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable

import torch

from labcheck import core, repro

THREADS_ENV = "LABCHECK_BENCH_THREADS"  # torch threads for benchmarks (default DEFAULT_THREADS)
CLOCK_ENV = "LABCHECK_BENCH_CLOCK"  # "wall" or "cpu" (default: see clock_for)
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
DEFAULT_THREADS = 1
PEAK_SIZES = (1024, 2048)  # square sgemm sizes whose best rate is "peak"


def threads_from_env() -> int:
    return int(os.environ.get(THREADS_ENV) or DEFAULT_THREADS)


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads and numpy/scipy's BLAS threads (None: DEFAULT_THREADS); return torch's.

    The BLAS limit (the width fast path and the sensing seed loop are numpy) needs threadpoolctl,
    which scikit-learn brings in with mlxtend; without it only torch is limited.
    """
    n = DEFAULT_THREADS if n is None else n
    torch.set_num_threads(n)
    try:
        import threadpoolctl
    except ImportError:  # pragma: no cover - installed with mlxtend's scikit-learn
        pass
    else:
        threadpoolctl.threadpool_limits(limits=n, user_api="blas")
    return torch.get_num_threads()


def timed(run: Callable[[], None], device: torch.device | str) -> Callable[[], None]:
    """`run` followed by a synchronize, so the clock read after it sees the work done."""

    def target() -> None:
        run()
        core.synchronize(device)

    return target


def clock_for(device: torch.device | str) -> Callable[[], float]:
    """The clock of every timed round: this thread's CPU time for a 1-thread CPU run, else the wall clock.

    On a shared 2-core machine other processes take the core away mid-round; wall time then
    measures the load (the sgemm peak read 20 GFLOP/s of 86 at load average 12), while
    time.thread_time counts only the time this thread ran. With one torch thread every kernel
    runs in the calling thread, so both clocks agree on a quiet machine. A GPU, or several torch
    threads, need the wall clock. LABCHECK_BENCH_CLOCK=wall|cpu overrides.
    """
    choice = os.environ.get(CLOCK_ENV, "")
    if choice not in ("", "wall", "cpu"):
        raise ValueError(f"{CLOCK_ENV} must be 'wall' or 'cpu', not {choice!r}")
    if not choice:
        choice = "cpu" if torch.device(device).type == "cpu" and torch.get_num_threads() == 1 else "wall"
    return CLOCKS[choice]


def clock_name(clock: Callable[[], float]) -> str:
    return next((name for name, c in CLOCKS.items() if c is clock), getattr(clock, "__name__", "?"))


def time_rounds(run: Callable[[], None], device: torch.device | str, seconds: float,
                min_rounds: int = 3, warmup: int = 1, max_rounds: int = 100_000,
                clock: Callable[[], float] | None = None) -> list[float]:
    """Seconds per call of `run` on `clock` (default clock_for(device)): at least `min_rounds` calls
    and `seconds` of wall time in total, after warm-up."""
    clock = clock or clock_for(device)
    for _ in range(warmup):
        run()
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < max_rounds and (len(times) < min_rounds or time.perf_counter() < end):
        core.synchronize(device)
        t0 = clock()
        run()
        core.synchronize(device)
        times.append(clock() - t0)
    return times


def plan_rounds(round_seconds: float, max_time: float, min_rounds: int, max_rounds: int = 10_000) -> int:
    """Rounds for benchmark.pedantic: fill `max_time`, but never fewer than `min_rounds`."""
    wanted = math.ceil(max_time / round_seconds) if round_seconds > 0 else max_rounds
    return max(min_rounds, min(max_rounds, wanted))


def sgemm_peak(device: torch.device | str = "cpu", sizes: tuple[int, ...] | None = None,
               seconds: float = 0.5, min_rounds: int = 3, clock: Callable[[], float] | None = None
               ) -> tuple[float, int]:
    """(GFLOP/s, n): the best float32 torch.mm rate of n x n matrices over `sizes` (PEAK_SIZES), on `device`."""
    device = torch.device(device)
    sizes = sizes or PEAK_SIZES
    best, best_n = 0.0, sizes[0]
    gen = repro.generator(0)
    for n in sizes:
        a = torch.randn(n, n, generator=gen).to(device)  # (n, n)
        b = torch.randn(n, n, generator=gen).to(device)  # (n, n)
        out = torch.empty(n, n, device=device)  # (n, n)
        fastest = min(time_rounds(lambda: torch.mm(a, b, out=out), device, seconds, min_rounds, clock=clock))
        rate = 2 * n**3 / fastest / 1e9
        if rate > best:
            best, best_n = rate, n
    return best, best_n


