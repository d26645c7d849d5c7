"""The labcheck pytest plugin, tested with pytester: options, markers, selection, results.json."""
import json

import pytest
import torch  # noqa: F401  (before pytester's inline runs: they drop what they import, and torch's C extension
#                           cannot be imported twice; with labcheck's modules already loaded by an earlier test
#                           module, the inline run was the first to import torch, and the next test failed)

GRADED = '''
import pytest

pytestmark = pytest.mark.exercise("_selftest")


@pytest.mark.graded(points=2)
def test_passes(lab):
    assert True


@pytest.mark.graded(points=1)
def test_fails(lab):
    assert 1 == 2, "the likely mistake: off by one"


@pytest.mark.graded(points=4)
def test_partial(lab):
    lab.partial(0.25, "1 of 4 right")
    assert False, "3 of 4 wrong"


@pytest.mark.graded(points=3)
@pytest.mark.parametrize("n", [1, 2])
def test_param(lab, n):
    assert n == 1


def test_not_graded():
    assert True
'''


@pytest.fixture
def graded_file(pytester):
    pytester.makeini("[pytest]\naddopts = --strict-markers\n")
    return pytester.makepyfile(test_graded=GRADED)


def test_options_are_registered(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*labcheck*", "*--labcheck-submission=PATH*", "*--labcheck-exercise=ID*",
                                 "*--labcheck-timeout=S*", "*--labcheck-results=PATH*", "*--labcheck-reference=PATH*"])


def test_markers_are_registered(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.gpu*", "@pytest.mark.graded(points=1)*", "@pytest.mark.exercise(id)*"])


def test_results_json_scores_every_graded_test(pytester, graded_file):
    out = pytester.path / "results.json"
    result = pytester.runpytest(f"--labcheck-results={out}")
    result.assert_outcomes(passed=3, failed=3)
    data = json.loads(out.read_text())
    scores = {t["name"]: (t["score"], t["max_score"], t["status"]) for t in data["tests"]}
    assert scores == {"test_passes": (2.0, 2.0, "passed"), "test_fails": (0.0, 1.0, "failed"),
                      "test_partial": (1.0, 4.0, "failed"), "test_param[1]": (3.0, 3.0, "passed"),
                      "test_param[2]": (0.0, 3.0, "failed")}
    assert data["score"] == 6.0 and data["max_score"] == 13.0
    by_name = {t["name"]: t for t in data["tests"]}
    assert "off by one" in by_name["test_fails"]["output"]
    assert by_name["test_partial"]["output"].startswith("1 of 4 right")
    assert all(t["visibility"] == "visible" for t in data["tests"])


def test_results_json_lists_tests_that_never_ran(pytester, graded_file):
    out = pytester.path / "results.json"
    pytester.runpytest(f"--labcheck-results={out}", "-x")
    data = json.loads(out.read_text())
    assert len(data["tests"]) == 5
    not_run = [t for t in data["tests"] if t["output"].startswith("not run")]
    assert not_run and all(t["score"] == 0 and t["status"] == "failed" for t in not_run)


def test_strict_markers_and_checked_marker_arguments(pytester):
    pytester.makeini("[pytest]\naddopts = --strict-markers\n")
    pytester.makepyfile(test_a="import pytest\n@pytest.mark.gradded\ndef test_x():\n    pass\n")
    assert pytester.runpytest().ret != 0
    pytester.makepyfile(test_a="import pytest\n@pytest.mark.graded(points=1, bonus=2)\ndef test_x():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*graded mark can't have*bonus*keyword arguments*"])
    pytester.makepyfile(test_a="import pytest\n@pytest.mark.exercise('nope')\ndef test_x():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*exercise mark needs one of*"])


def test_gpu_tests_skip_cleanly_without_cuda(pytester):
    import torch

    pytester.makepyfile(test_g="import pytest\n@pytest.mark.gpu\ndef test_cuda():\n    assert False\n")
    result = pytester.runpytest("-rs")
    if torch.cuda.is_available():
        result.assert_outcomes(failed=1)
    else:
        result.assert_outcomes(skipped=1)
        result.stdout.fnmatch_lines(["*needs CUDA*"])


def test_exercise_selection_and_grading_mode(pytester, graded_file):
    pytester.makepyfile(test_other='import pytest\npytestmark = pytest.mark.exercise("width")\n'
                                   "def test_w():\n    pass\n")
    pytester.runpytest("--labcheck-exercise=width").assert_outcomes(passed=1, deselected=6)
    result = pytester.runpytest("--labcheck-exercise=_selftest", "--labcheck-submission=nothing.py")
    result.assert_outcomes(passed=2, failed=3, deselected=2)  # only graded tests of the exercise


def test_submission_needs_an_exercise(pytester):
    result = pytester.runpytest("--labcheck-submission=x.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--labcheck-submission needs --labcheck-exercise*"])


def test_unknown_exercise_is_a_usage_error(pytester):
    result = pytester.runpytest("--labcheck-exercise=nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_expected_answers_are_cached_on_disk_by_content(tmp_path):
    """The reference's raw answers and times, keyed by the files that produce them and the inputs."""
    from labcheck.probes.expected import ExpectedCache

    ref = tmp_path / "ref.py"
    ref.write_text("A = 1\n")
    runs = []

    def compute():
        runs.append(1)
        return {"value": 3.5}

    key = ExpectedCache.key("folder-fingerprint", ref, "call", b"inputs")
    first = ExpectedCache(tmp_path / "cache")
    raw, seconds = first.get_or_compute(key, compute)
    assert raw == {"value": 3.5} and seconds >= 0 and first.computed == 1
    second = ExpectedCache(tmp_path / "cache")  # another grading process of the same class
    assert second.get_or_compute(key, compute) == (raw, seconds) and second.computed == 0 and len(runs) == 1
    assert ExpectedCache.key("folder-fingerprint", ref, "call", b"other inputs") != key
    assert ExpectedCache.key("changed folder", ref, "call", b"inputs") != key  # any file of the exercise changed
    ref.write_text("A = 2\n")  # a changed reference is a different key
    assert ExpectedCache.key("folder-fingerprint", ref, "call", b"inputs") != key
