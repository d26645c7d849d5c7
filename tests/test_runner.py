"""labcheck.runner: independent runs on a process pool (one thread each) or a Dask cluster, in order."""
import os
from collections import Counter

import pytest

from labcheck import runner

PROBE = "labcheck.runner:describe_worker"


def test_executor_strings_parse():
    assert runner.ExecutorSpec.parse(None) == runner.ExecutorSpec("local")
    assert runner.ExecutorSpec.parse("local:3") == runner.ExecutorSpec("local", workers=3)
    assert runner.ExecutorSpec.parse("dask://127.0.0.1:8786").address == "tcp://127.0.0.1:8786"
    for bad in ("local:0", "dask://", "threads", "dask://nohostport"):
        with pytest.raises(ValueError):
            runner.ExecutorSpec.parse(bad)


def test_targets_must_be_importable_module_functions():
    assert runner.resolve("labcheck.runner:describe_worker") is runner.describe_worker
    for bad in ("labcheck.runner", "__main__:f", ":f"):
        with pytest.raises(ValueError):
            runner.resolve(bad)
    with pytest.raises(AttributeError):
        runner.resolve("labcheck.runner:no_such_function")


def test_local_pool_runs_in_order_one_thread_one_fresh_process_each():
    before = {k: os.environ.get(k) for k in runner.THREAD_ENV}
    outcomes = runner.run_outcomes(PROBE, [{"i": i} for i in range(3)], "local:2")
    assert {k: os.environ.get(k) for k in runner.THREAD_ENV} == before, "this process's environment is restored"
    assert [o.value["echo"]["i"] for o in outcomes] == [0, 1, 2]
    assert all(o.value["torch_threads"] == 1 and o.torch_threads == 1 for o in outcomes)
    assert all(set(o.value["blas_threads"]) <= {1} for o in outcomes)
    assert all(o.value["env"]["OMP_NUM_THREADS"] == "1" for o in outcomes)
    pids = {o.value["pid"] for o in outcomes}
    assert len(pids) == 3 and os.getpid() not in pids, "one fresh process per run"


def test_serial_runs_here_and_a_failing_run_is_named():
    values = runner.run_all(PROBE, [{"i": 7}], "serial")
    assert values[0]["pid"] == os.getpid() and values[0]["echo"] == {"i": 7}
    with pytest.raises(runner.RunError, match=r"run 1 \(\{'target': 'nope'\}\) failed: ValueError"):
        runner.run_all("labcheck.runner:resolve", [{"target": "labcheck.runner:machine"}, {"target": "nope"}],
                       "serial")


def test_a_failing_run_in_the_pool_raises_run_error():
    with pytest.raises(runner.RunError, match="ValueError"):
        runner.run_all("labcheck.runner:resolve", [{"target": "nope"}], "local:1")


def test_dask_cluster_runs_the_same_calls():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, worker_dashboard_address=None) as cluster:
        address = cluster.scheduler_address.removeprefix("tcp://")
        outcomes = runner.run_outcomes(PROBE, [{"i": i} for i in range(4)], f"dask://{address}")
    assert [o.value["echo"]["i"] for o in outcomes] == [0, 1, 2, 3]
    assert all(o.value["torch_threads"] == 1 for o in outcomes)
    assert os.getpid() not in {o.value["pid"] for o in outcomes}, "ran on the cluster's worker processes"


def test_runs_per_process_reuses_a_worker_for_that_many_runs():
    outcomes = runner.run_outcomes(PROBE, [{"i": i} for i in range(4)], "local:2", runs_per_process=2)
    assert [o.value["echo"]["i"] for o in outcomes] == [0, 1, 2, 3]
    per_pid = Counter(o.value["pid"] for o in outcomes)
    assert max(per_pid.values()) <= 2 and len(per_pid) < 4, "a process serves up to 2 runs"
