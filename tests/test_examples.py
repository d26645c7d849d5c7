"""Every bundled example submission loses points exactly on the tests its EXPECTED_FAILURES names.

Parametrized over whatever examples/<id>/*.py exist (for exercises with a contract test file)
at collection time. All examples are graded once, in parallel, by labcheck.grade (one grader
process per example, as `labcheck grade --examples` does); each test then checks one example.
"""
import json

import pytest

from labcheck import grade, report

EXAMPLES = grade.discover_examples()
IDS = [s.name for s in EXAMPLES]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    out = tmp_path_factory.mktemp("examples")
    opts = grade.Options(out=out, jobs=2, timeout=60.0, total_timeout=600.0)
    return out, grade.grade_many(EXAMPLES, opts)


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_example_loses_points_exactly_where_expected(graded, example):
    out, results = graded
    res = results[example.name]
    assert example.expected_failures is not None, f"{example.path} has no EXPECTED_FAILURES constant"
    assert res["tests"], f"{example.name}: no graded test ran: {res.get('output', '')}"
    lost = {report.base_name(t["name"]) for t in report.lost_points(res)}
    messages = "\n".join(f"  {t['name']}: {t['output'][:300]}" for t in report.lost_points(res))
    assert lost == set(example.expected_failures), (
        f"{example.name}: lost points on {sorted(lost)}, expected {sorted(example.expected_failures)}\n{messages}")
    if example.path.stem == "correct":
        assert res["score"] == res["max_score"] > 0
    else:
        assert res["score"] < res["max_score"]
    assert json.loads((out / example.name / "results.json").read_text())["score"] == res["score"]


def test_every_exercise_with_examples_has_a_correct_one():
    exercises = {s.exercise for s in EXAMPLES}
    correct = {s.exercise for s in EXAMPLES if s.path.stem == "correct"}
    assert exercises == correct
