"""labcheck.bench.memory: a process tree's peak memory as a container counts it, and the grading-memory row's
verdict (issue #26 item 3). The row itself grades through a package (a minute or more): `labcheck bench`."""
import os
import sys
import textwrap

from labcheck.bench import grading, memory

HOLD = "import time; b = bytearray({mib} * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep({seconds})"


def test_the_peak_counts_a_grandchild_its_parent_left_behind(tmp_path):
    """A child that starts a process and ends at once: the orphan is still the tree's (child subreaper)."""
    script = tmp_path / "leave.py"
    script.write_text(textwrap.dedent(f"""
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", {HOLD.format(mib=120, seconds=1.5)!r}], start_new_session=True)
    """))
    peak = memory.measure([sys.executable, str(script)], interval=0.05)
    assert peak.returncode == 0
    assert peak.anon_mib >= 110 and peak.total_mib > peak.anon_mib  # the bytes it holds, and its libraries
    assert any("bytearray" in p["command"] for p in peak.processes)


def test_mapped_files_count_once_however_many_processes_map_them():
    mine = memory.file_mappings(os.getpid())
    assert mine and all(path.startswith("/") and kib >= 0 for (path, _, _), kib in mine.items())
    twice = {}
    for pid in (os.getpid(), os.getpid()):  # the same mappings seen in two processes
        for key, kib in memory.file_mappings(pid).items():
            twice[key] = max(twice.get(key, 0), kib)
    assert sum(twice.values()) == sum(mine.values())


def test_grading_memory_verdict_and_its_miss_line():
    peak = memory.Peak(total_mib=579.0, anon_mib=470.0, file_mib=109.0, processes=[{}] * 3, seconds=40.0)
    ok = grading.MemoryResult("sgd", "python", "2.14.1+cpu", "cpu", peak, 26.0, 26.0, 0)
    assert ok.verdict == "PASS" and ok.misses() == []
    assert "peak 579 MiB (470 anon + 109 mapped files, 3 processes)" in grading.format_memory(ok)
    assert "warm cache" in grading.format_memory(ok) and "target <=768 MB PASS" in grading.format_memory(ok)
    big = memory.Peak(total_mib=1388.0, anon_mib=817.0, file_mib=571.0)
    miss = grading.MemoryResult("sgd", "python", "2.14.1+cu130", "cuda", big, 26.0, 26.0, 0)
    assert miss.verdict == "MISS" and "CPU build" in miss.misses()[0] and grading.PYTHON_ENV in miss.misses()[0]
    wrong = grading.MemoryResult("sgd", "python", "2.14.1+cpu", "cpu", peak, 0.0, 26.0, 0)
    assert wrong.verdict == "MISS" and "scored 0/26" in wrong.misses()[0]  # a grade that failed measures nothing
