"""scripts/gpu-check, run on the CPU (`--device cpu`), as the suite can on every machine: its data pack, the
reference-against-bands part and the bench part for one exercise (default run), every part (slow)."""
import os
import subprocess
import sys

import pytest

from labcheck import gpucheck, paths

SCRIPT = paths.repo_root() / "scripts" / "gpu-check"


def _gpu_check(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu-pack")
    made = _gpu_check("--pack", "--pack-dir", str(folder))
    assert made.returncode == 0, made.stderr[-2000:]
    return folder


def test_the_pack_holds_each_data_set_as_found_here_and_tqdm(pack):
    from labcheck import data

    for name in (data.MNIST, data.FASHION):
        here, packed = data.load(name), data.load(name, pack)
        assert packed.source == here.source and packed.location.startswith(str(pack))
        assert data.sha256_of(packed.train) == data.sha256_of(here.train)
    assert (pack / "site" / "tqdm" / "__init__.py").is_file()


def test_gpu_test_files_are_the_ones_that_mark_a_test_gpu():
    names = {p.name for p in gpucheck.gpu_test_files()}
    assert {"test_core.py", "test_training_core.py", "test_repro.py", gpucheck.SEMANTICS_TESTS} <= names
    assert "test_plugin.py" not in names  # its gpu marks are inside strings (pytester's files)


def test_gpu_check_on_the_cpu_checks_bands_and_bench_of_one_exercise(pack):
    done = _gpu_check("--device", "cpu", "--part", "bands", "--part", "bench", "--exercise", "gradnorms",
                      "--bench-seconds", "0.05", "--pack-dir", str(pack))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    table = done.stdout[done.stdout.index("gpu-check, "):]
    assert "bands  gradnorms" in table and "quick bands of mnist-5k hold" in table
    assert "bench  gradnorms-sensing" in table and table.rstrip().endswith("rows passed or skipped")


@pytest.mark.slow
def test_gpu_check_on_the_cpu_passes_every_part(pack):
    done = _gpu_check("--device", "cpu", "--pack-dir", str(pack), timeout=1800)
    assert done.returncode == 0, done.stdout[-5000:]
