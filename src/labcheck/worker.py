"""`python -m labcheck.worker`: the entry point of the untrusted worker process.

Everything it runs lives in `labcheck.untrusted` (whose docstring states the trust boundary):
loader.py loads the submission, confine.py confines the process, serve.py answers the grader.
"""
import sys

from labcheck.untrusted.serve import SANDBOX_ENV  # noqa: F401  (the policy's variable)


def main() -> None:
    """`--zygote`: a worker zygote (labcheck.untrusted.zygote); else one worker (labcheck.untrusted.serve)."""
    if sys.argv[1:] == ["--zygote"]:
        from labcheck.untrusted import zygote

        zygote.main()
    else:
        from labcheck.untrusted import serve

        serve.main()


if __name__ == "__main__":
    main()
