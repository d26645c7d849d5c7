"""Hostile `_selftest` submission: `add` writes 1 GB into /tmp, /dev/shm and its own folder, in 32 MB files
(under the 64 MB per-file limit; issue #22: 3 GB into the sandbox's /tmp, 2 GB onto the host's disk). With
bubblewrap every writable place is a size-limited in-memory file system: it runs out of space (ENOSPC),
`add` returns the right sum and every test keeps its marks. Below that level nothing bounds the total."""
import os

import torch

EXPECTED = {}
EXPECTED_BELOW_WHITELIST = {'test_add': 'wrote'}


def add(a, b):
    chunk = b"\0" * (32 << 20)
    written = 0
    for folder in ("/tmp", "/dev/shm", os.getcwd()):
        for i in range(11):  # 352 MB a folder: more than any of them may hold
            try:
                with open(os.path.join(folder, f"fill-{i}"), "wb") as f:
                    f.write(chunk)
                written += len(chunk)
            except OSError:
                break
    if written >= (1 << 30):
        return f"wrote {written >> 20} MB"
    return a + b


def matmul(a, b):
    return a @ b


def scale(x, s):
    return s * x


def means(rows):
    return [float(sum(r)) / len(r) for r in rows]
