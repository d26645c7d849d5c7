"""labcheck.secret: graded inputs drawn per run from a secret (issue #22 item 3), and where the secret comes from."""
import pytest

from labcheck import secret


def test_draws_depend_on_the_secret_and_the_labels_only():
    a, b = secret.Draws("one run"), secret.Draws("another run")
    assert a.seed("sgd", "init") == secret.Draws("one run").seed("sgd", "init")  # reproducible for a fixed secret
    assert a.seed("sgd", "init") != b.seed("sgd", "init")  # another run, other inputs
    assert a.seed("sgd", "init") != a.seed("sgd", "init std")  # independent across labels
    assert a.scoped("sgd").seed("init") == a.seed("sgd", "init")
    assert a.rng("lrs").random() == secret.Draws("one run").rng("lrs").random() != b.rng("lrs").random()
    seeds = {secret.Draws(str(i)).seed("x") for i in range(1000)}
    assert len(seeds) == 1000 and all(0 <= s < 2**31 for s in seeds)


def test_the_secret_comes_from_the_option_then_the_environment_then_is_drawn(monkeypatch):
    monkeypatch.setenv(secret.SECRET_ENV, "from the environment")
    assert secret.resolve("from the option") == ("from the option", "option")
    assert secret.resolve(None) == ("from the environment", "environment")
    monkeypatch.delenv(secret.SECRET_ENV)
    first, source = secret.resolve(None)
    assert source == "drawn" and len(first) == 32 and secret.resolve(None)[0] != first


def test_a_secret_is_named_in_reports_without_being_revealed():
    name = secret.secret_id("one run")
    assert name == secret.secret_id("one run") != secret.secret_id("another run")
    assert len(name) == 12 and "one run" not in name


@pytest.fixture
def contract_file(pytester):
    pytester.makepyfile(test_drawn="""
        import pytest

        pytestmark = pytest.mark.exercise("_selftest")


        @pytest.fixture(scope="module")
        def module_seed(draws):
            return draws.seed("fixture")


        def test_inputs(lab, module_seed):
            print("DRAWN", lab.seed("a"), module_seed, lab.draws.seed("a") == lab.seed("a"))
    """)
    return pytester


def drawn(pytester, *args):
    result = pytester.runpytest("-s", *args)
    result.assert_outcomes(passed=1)
    line = next(line for line in result.outlines if "DRAWN" in line)
    return line[line.index("DRAWN"):].rstrip(".")


def test_graded_tests_draw_from_the_option_or_the_environment(contract_file, monkeypatch):
    monkeypatch.delenv(secret.SECRET_ENV, raising=False)
    fixed = drawn(contract_file, "--labcheck-secret", "s1")
    assert fixed == drawn(contract_file, "--labcheck-secret", "s1") != drawn(contract_file, "--labcheck-secret", "s2")
    assert fixed.endswith("True")
    monkeypatch.setenv(secret.SECRET_ENV, "s1")
    assert drawn(contract_file) == fixed
    monkeypatch.delenv(secret.SECRET_ENV)
    assert drawn(contract_file) != drawn(contract_file)  # no secret given: a new one per session


def test_a_class_run_shares_one_secret_and_the_next_run_draws_another(tmp_path, monkeypatch):
    """`labcheck grade`: every grader of one run draws from the same secret (so they share the reference's
    answers), the next run from a new one; a drawn secret's expected-answer cache is removed after its run."""
    from labcheck import grade, paths
    from labcheck.probes.expected import CACHE_ENV

    monkeypatch.delenv(secret.SECRET_ENV, raising=False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    hostile = paths.tests_dir() / "hostile"
    subs = [grade.Submission(path=hostile / "correct.py", exercise="_selftest", name=name,
                             tests=hostile / "contract_selftest.py") for name in ("a", "b")]

    def run(out):
        opts = grade.Options(out=tmp_path / out, jobs=2, timeout=30.0, memory_mb=2048, total_timeout=240.0,
                             extra_pytest_args=("--labcheck-reference", str(hostile / "reference_selftest.py")))
        results = grade.grade_many(subs, opts)
        assert all(r["score"] == r["max_score"] > 0 for r in results.values())
        return {r["extra_data"]["labcheck"]["inputs"] for r in results.values()}

    first, second = run("first"), run("second")
    assert len(first) == len(second) == 1 and None not in first and first != second
    assert not (tmp_path / "cache" / "runs").exists() or not any((tmp_path / "cache" / "runs").iterdir())
