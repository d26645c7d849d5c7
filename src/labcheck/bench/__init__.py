"""Throughput of each exercise's training core, against the seeds' own loops and this machine's sgemm.

Used by `labcheck bench` (a table; saved runs and their comparison) and by tests/benchmarks/
(pytest-benchmark, `pytest -m benchmark`). One module per concern:

    harness    the timing harness: threads, the clock of a round, rounds after a synchronize, sgemm peak
    workload   what a case is (Case, Workload, Loop), FLOP counts, the seeds' way of feeding data, and the
               assembly of a mini-batch case's loops
    builders   one builder per exercise (from the contract names of exercises/<id>/reference.py) and CASES
    fallbacks  minimal copies of the contract names, for a missing reference
    results    one case's measurement and its figures (ratio, %peak, PASS/MISS), the table
    grading    the grading benchmark: submissions per minute, old way vs new way

    history    saved runs, their comparison (REGRESSION / same / faster) and history plots
    command    `labcheck bench` itself
"""
