"""`python -m labcheck.worker`: the entry point of the untrusted worker process.

Everything it runs lives in `labcheck.untrusted` (whose docstring states the trust boundary):
loader.py loads the submission, confine.py confines the process, serve.py answers the grader.
"""
from labcheck.untrusted.serve import SANDBOX_ENV, main  # noqa: F401  (SANDBOX_ENV: the policy's variable)

if __name__ == "__main__":
    main()
