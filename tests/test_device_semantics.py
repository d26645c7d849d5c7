"""What a GPU changes, decided (issue #25) and tested here; scripts/gpu-check runs this whole file.

- Grading never uses a GPU: graders and workers get CUDA_VISIBLE_DEVICES="" (labcheck.grade.NO_GPU_ENV), so
  a student's `device = 'cuda' if torch.cuda.is_available() else 'cpu'` picks the CPU, as the expected answers
  and their tolerances do. Tested on every machine (the variable reaches the worker); on a GPU machine the
  same test also sees torch.cuda.is_available() answer False in the worker.
- `--deterministic` runs of a reference are bit-identical from run to run on the same device (the CUDA cases
  carry `gpu`); across devices nothing is promised but the bands (scripts/gpu-check: the CPU's bands, one
  new run on the GPU, see labcheck.gpucheck).
"""
import json
import os
import subprocess
import sys

import pytest

from labcheck import grade, paths
from labcheck.exercises import REGISTRY, get

# A submission that fails to load, and so scores nothing, when its worker could use a GPU.
SEES_NO_GPU = '''import os
import torch
assert os.environ.get("CUDA_VISIBLE_DEVICES") == "", "the worker was handed the grader's CUDA_VISIBLE_DEVICES"
assert not torch.cuda.is_available(), "the worker sees a GPU"
'''
DETERMINISTIC_RUN = '''import json, sys
from labcheck import exercises
exercise, device = sys.argv[1], sys.argv[2]
ref = exercises.get(exercise).load_reference()
argv = ["--dry-run", "--deterministic", "--seed", "0", "--device", device]
result = ref.main(ref.get_args_parser().parse_args(argv + (["--no-progress"] if exercise == "hyperparams" else [])))
print(json.dumps(ref.band_metrics(result), sort_keys=True))
'''
GPU_EXERCISES = [ex.id for ex in REGISTRY.values() if "cuda" in ex.devices]  # width trains on the CPU only


def _env(**extra: str) -> dict[str, str]:
    """This environment with the working tree's labcheck first on the path and no autoloaded pytest plugin."""
    src = str(paths.repo_root() / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
            **grade.GRADER_ENV, **extra}


def test_without_gpu_empties_cuda_visible_devices_and_restores_it(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with grade.without_gpu():
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with grade.without_gpu():
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_a_graded_worker_sees_no_gpu_whatever_the_grader_was_given(tmp_path):
    """The pytest route of grading (the one `labcheck grade` runs per submission) at whatever isolation this
    machine has: the correct sgd example, preceded by SEES_NO_GPU, scores every point although the grader
    was started with CUDA_VISIBLE_DEVICES=0."""
    submission = tmp_path / "sgd.py"
    submission.write_text(SEES_NO_GPU + (get("sgd").examples_dir / "correct.py").read_text())
    results = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", str(get("sgd").contract_tests),
                           *grade.GRADER_PYTEST_ARGS, "--labcheck-exercise", "sgd", "--labcheck-submission",
                           str(submission), "--labcheck-results", str(results), "--labcheck-min-isolation", "none"],
                          env=_env(CUDA_VISIBLE_DEVICES="0"), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    graded = json.loads(results.read_text())
    failed = [t["name"] for t in graded["tests"] if t["status"] != "passed"]
    assert not failed and graded["score"] == graded["max_score"] > 0, (failed, proc.stdout[-3000:])


def _deterministic_metrics(exercise: str, device: str, tmp_path) -> dict:
    proc = subprocess.run([sys.executable, "-c", DETERMINISTIC_RUN, exercise, device], env=_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("exercise", "device"), [
    ("gradnorms", "cpu"),  # the test's own check, on every machine
    *[pytest.param(exercise, "cuda", marks=pytest.mark.gpu, id=f"{exercise}-cuda") for exercise in GPU_EXERCISES],
])
def test_deterministic_runs_are_bit_identical(exercise, device, tmp_path):
    """Two processes, each a --deterministic dry run of the reference with seed 0 (a fresh CUDA context each,
    so cuBLAS reads CUBLAS_WORKSPACE_CONFIG as repro.deterministic sets it): every band metric equal."""
    first, second = (_deterministic_metrics(exercise, device, tmp_path) for _ in range(2))
    assert first and first == second
