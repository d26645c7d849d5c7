"""The untrusted side of labcheck: everything that runs in the worker process next to a submission.

THE TRUST BOUNDARY (the one place it is written down)
-----------------------------------------------------
A student's code is hostile until proven otherwise. It runs in its own worker process, started by
`labcheck.sandbox.Sandbox` (`python -m labcheck.worker`), and shares that process only with the
modules of this package, `labcheck.wire` (the data-only codec and its framing) and `labcheck.repro`
(seeding). The worker

  - receives, over a pipe, the name of a *call* and its inputs, which the grader chose and built
    (tensors, numbers, lists; never pickle);
  - calls the submission's contract functions on those inputs (`labcheck.untrusted.calls.<exercise>`);
  - sends back raw results: outputs, parameters, histories, the batches it saw, a traceback.

It computes no metric, no replay, no expected value, no comparison and no score: whatever runs in
this process is in the student's hands (a submission may patch torch, builtins or any module here),
so nothing here is believed. The grader process (`labcheck.probes.<exercise>` to build inputs and
derive metrics from raw results, `labcheck.plugin` for `lab.call`/`lab.expect`, the contract tests in
exercises/<id>/test_contract.py for verdicts and scores) never imports a submission and never trusts a number from
this side beyond "this is what the student's code returned". tests/test_trust.py checks that importing
the worker's modules pulls in no grader-side module.

Modules, by what they do:
  loader.py   reads the one submission file and executes it as a fresh module (never on sys.path);
  confine.py  OS confinement from inside: mount hiding (fallback without bubblewrap), seccomp, the
              audit hook;
  serve.py    the serve loop: private protocol descriptors, one request -> one reply;
  zygote.py   a worker that imported torch once and forks one such serving child per submission, in
              turn, and puts the sandbox's writable folders back after each;
  calls/      per exercise, what the grader may ask the worker to call.
"""
