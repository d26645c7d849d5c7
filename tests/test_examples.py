"""Every bundled example submission loses points exactly on the tests its EXPECTED_FAILURES names.

Parametrized over whatever exercises/<id>/examples/*.py exist at collection time (grade.discover_examples;
tests/test_graded_tests_bite.py checks that this is every file there, that the names are real graded
tests, and that together the buggy examples lose every graded test). All examples are graded once,
`jobs` at a time, by labcheck.grade (one grader process per example, as `labcheck grade --examples`
does); each test then checks one example's results. This is the expensive half of the bite proof:
about 10-25 s of CPU per example, so it runs once per session and nothing here grades twice.
"""
import json

import pytest

from labcheck import grade, report

EXAMPLES = grade.discover_examples()
IDS = [s.name for s in EXAMPLES]
JOBS = 2  # grader processes at once: one per core of the 2-core machines; more only queue for CPU


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    out = tmp_path_factory.mktemp("examples")
    opts = grade.Options(out=out, jobs=JOBS, timeout=60.0, total_timeout=600.0)
    return out, grade.grade_many(EXAMPLES, opts)


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_example_loses_points_exactly_where_expected(graded, example):
    out, results = graded
    res = results[example.name]
    assert example.expected_failures is not None, f"{example.path} has no EXPECTED_FAILURES constant"
    planned = {t["name"] for t in grade.planned_tests(example.tests)}
    ran = {report.base_name(t["name"]) for t in res["tests"]}
    assert ran == planned, (f"{example.name}: results hold {sorted(ran)}, the contract grades {sorted(planned)}: "
                            f"{res.get('output', '')}")
    lost_tests = report.lost_points(res)
    messages = "\n".join(f"  {t['name']}: {t['output'][:300]}" for t in lost_tests)
    unfinished = [t["name"] for t in lost_tests if t["output"].startswith(("not graded", "not run"))]
    assert not unfinished, f"{example.name}: grading did not finish, so these prove nothing:\n{messages}"
    lost = {report.base_name(t["name"]) for t in lost_tests}
    assert lost == set(example.expected_failures), (
        f"{example.name}: lost points on {sorted(lost)}, expected {sorted(example.expected_failures)}\n{messages}")
    if example.path.stem == "correct":
        assert res["score"] == res["max_score"] > 0
    else:
        assert res["score"] < res["max_score"]
    assert report.rows([example], results)[0]["expectation_met"]  # what `labcheck grade --examples` reports
    assert json.loads((out / example.name / "results.json").read_text())["score"] == res["score"]
