"""An instructor adds an exercise: `labcheck new ID` writes a folder that grades its own examples as expected,
and a grade is reused only while the exercise's folder and labcheck's code are unchanged."""
import json
import os
import subprocess
import sys

from labcheck import exercises, grade


def run_labcheck(*args, env):
    return subprocess.run([sys.executable, "-m", "labcheck.cli", *args], capture_output=True, text=True,
                          timeout=600, env=env)


def test_a_new_exercise_grades_its_own_examples_and_a_tolerance_change_regrades(tmp_path, monkeypatch):
    root = tmp_path / "my-course"
    env = {**os.environ, "LABCHECK_EXERCISES": str(root)}
    root.mkdir()
    made = run_labcheck("new", "demo", "--root", str(root), env=env)
    assert made.returncode == 0, made.stdout + made.stderr
    assert (root / "demo" / "CONTRACT.md").is_file() and (root / "demo" / "examples" / "correct.py").is_file()
    assert run_labcheck("new", "demo", "--root", str(root), env=env).returncode == 2  # never overwrites

    out = tmp_path / "out"
    graded = run_labcheck("grade", "--examples", "--exercise", "demo", "--out", str(out), "--quiet", env=env)
    assert graded.returncode == 0, graded.stdout[-3000:] + graded.stderr[-3000:]
    assert "2/2 examples lost points exactly where expected" in graded.stdout
    scores = {name: json.loads((out / "demo" / name / "results.json").read_text())["score"]
              for name in ("correct", "buggy_softmax_dim0")}
    assert scores == {"correct": 1.0, "buggy_softmax_dim0": 0.0}

    # The grades are reused while nothing changes; a changed tolerance in bands.json regrades (it did not:
    # the fingerprint listed files by hand and left the bands file out).
    monkeypatch.setenv("LABCHECK_EXERCISES", str(root))
    exercises.refresh()
    try:
        subs = grade.discover_examples("demo")
        assert all(grade.is_finished(s, out) for s in subs)
        bands_file = root / "demo" / "bands.json"
        content = json.loads(bands_file.read_text())
        content["tolerances"]["softmax"]["rtol"] = 2e-5
        bands_file.write_text(json.dumps(content))
        exercises.refresh()
        assert not any(grade.is_finished(s, out) for s in grade.discover_examples("demo"))
    finally:
        monkeypatch.delenv("LABCHECK_EXERCISES")
        exercises.refresh()


def test_mutants_cover_the_kinds_students_make_and_are_reproducible():
    from labcheck import mutants

    correct = exercises.get("sgd").examples_dir / "correct.py"
    everything = mutants.mutants_of(correct.read_text())
    assert {m.kind for m in everything} == set(mutants.KINDS)
    assert len({m.source for m in everything}) == len(everything)  # no duplicates, no no-op
    assert mutants.sample(everything, 7, seed=3) == mutants.sample(everything, 7, seed=3)
    assert {m.kind for m in mutants.sample(everything, 7, seed=3)} == set(mutants.KINDS)  # one of each kind first


def test_labcheck_mutants_prints_a_score_and_each_survivor(tmp_path):
    """A small sample of sgd's mutants graded as a class: the score line, and a diff for every survivor."""
    out = run_labcheck("mutants", "sgd", "--max", "3", "--seed", "1", "--out", str(tmp_path), env=dict(os.environ))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    score = next(line for line in lines if line.startswith("mutation score: "))
    caught, total = map(int, score.split()[2].split("/"))
    assert total == 3 and out.stdout.count("SURVIVED (") == total - caught
    assert len(list((tmp_path / "grades").glob("*/results.json"))) == 3


def test_the_templates_contract_is_one_the_handout_reads():
    """`labcheck new` writes a CONTRACT.md that labcheck.contracts parses (the handout's starter is made from it)."""
    from labcheck import contracts
    from labcheck.new_exercise import template_files

    text = dict(template_files())["CONTRACT.md"].replace("@ID@", "demo")
    contract = contracts.parse(text, "demo")
    assert [e.name for e in contract.entries] == ["softmax"] and contract.entries[0].args == "logits"
