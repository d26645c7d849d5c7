"""Writes with torch's own file code (C++, no audit event): what the audit hook cannot see, only the
zygote's clean-up can remove. Then it tries to reach into the zygote's memory, past the hook too.
(tests/test_zygote.py, and as user nobody tests/test_isolation.py)"""
import os
import torch

def add(a, b):
    made = []
    for path in ("/tmp/left", "/dev/shm/left", "/dev/left", "left", os.environ["HOME"] + "/../../left-up"):
        torch.from_file(path, shared=True, size=8)
        made.append(path)
    os.mkdir("locked")
    torch.from_file("locked/inside", shared=True, size=8)
    os.chmod("locked", 0)
    try:
        torch.from_file(f"/proc/{os.getppid()}/mem", shared=False, size=8)
        reached = "read the zygote's memory"
    except RuntimeError as e:
        reached = str(e)
    return [made, reached]
