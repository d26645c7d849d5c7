"""The class dashboard (labcheck.dashboard) and the instructor-facing side of `labcheck grade`.

The class here is a folder of results.json files written as labcheck.grade writes them (the
dashboard reads nothing else): seven students of the `sgd` exercise whose failures carry the
contract tests' own diagnoses, with different numbers per student. The page is loaded in a real
headless browser: Debian's chromium driven by playwright (scripts/run installs chromium for the
test command; playwright's own browser download is never used).
"""
import io
import json
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from labcheck import cli, dashboard, grade

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TESTS = {"test_initialize_nn_std": 2.0, "test_sgd_step_trajectory": 3.0, "test_momentum_step_trajectory": 3.0,
         "test_evaluate_every_sample": 2.0}
UNIFORM = ("W0 has std {:.4f}, expected 1/sqrt(784) = 0.03571 (interval [0.03527, 0.03616]): "
           "uniform(-1, 1) init (torch.rand * 2 - 1)?")
ZERO_GRAD = "AssertionError: after step {} the parameters differ by {:.3g}: grads not zeroed after the step?"
MOMENTUM = ("Failed: velocity differs by {:.2g}: the velocity is lr = 0.01 times too small: v = mu * v + lr * g?")
SAME_START = "the parameters after the last mini-batch of the final training epoch differ from the reference "
LONG_LINE = ("the loss history returned by train_sgd holds one entry per epoch instead of one entry per mini-batch, "
             "which means that the training loop appends after its inner loop over the batches has finished")
CLASS = {  # student -> {test: failure output}; every other test passes
    "alice": {},
    "bob": {"test_initialize_nn_std": UNIFORM.format(0.5763)},
    "carol": {"test_initialize_nn_std": UNIFORM.format(0.5771), "test_sgd_step_trajectory": ZERO_GRAD.format(2, 0.013)},
    "dave": {"test_initialize_nn_std": UNIFORM.format(0.5749), "test_momentum_step_trajectory": MOMENTUM.format(0.09)},
    "erin": {"test_sgd_step_trajectory": ZERO_GRAD.format(3, 0.2)},
    "frank": {name: "not graded: the submission exceeded the total grading time of 900 s" for name in TESTS},
    "grace": {"test_evaluate_every_sample": "[load_error] the submission could not be loaded: NameError: name 'np' "
              "is not defined"},
    # two mistakes whose labels agree on their first 60+ characters, and a first line longer than 160
    "heidi": {"test_sgd_step_trajectory": SAME_START + "in the first layer only"},
    "ivan": {"test_sgd_step_trajectory": SAME_START + "in every layer and every bias"},
    "judy": {"test_evaluate_every_sample": LONG_LINE},
}
FILES = {name: f"{name} (v2) é?.py" for name in CLASS}  # the file each handed in, as named
ISOLATION = {name: "whitelist-fs" if i % 2 else "hook-only" for i, name in enumerate(CLASS)}


def results_of(name: str, failures: dict, seconds: float) -> dict:
    tests = [{"name": name, "score": 0.0 if name in failures else points, "max_score": points,
              "status": "failed" if name in failures else "passed", "output": failures.get(name, ""),
              "visibility": "visible"} for name, points in TESTS.items()]
    return {"score": sum(t["score"] for t in tests), "max_score": sum(TESTS.values()), "tests": tests,
            "execution_time": seconds, "extra_data": {"labcheck": {
                "finished": True, "exercise": "sgd", "submission": f"/class/{FILES[name]}",
                "isolation": {"level": ISOLATION[name]}}}}


@pytest.fixture
def graded_class(tmp_path) -> Path:
    out = tmp_path / "grades"
    for i, (name, failures) in enumerate(CLASS.items()):
        (out / name).mkdir(parents=True)
        (out / name / "results.json").write_text(json.dumps(results_of(name, failures, 20.0 + 7 * i)))
    (out / "gradebook.csv").write_text("name,exercise,score,max_score\n")
    (out / "unfinished").mkdir()  # a submission still being graded: no finished results.json yet
    (out / "unfinished" / "results.json").write_text(json.dumps({"score": 0, "tests": []}))
    return out


def test_mistakes_are_grouped_across_numbers_and_ranked(graded_class):
    ranked = dashboard.mistakes(dashboard.collect(graded_class))
    assert [(m.test, len(m.students)) for m in ranked[:2]] == [("test_initialize_nn_std", 3),
                                                               ("test_sgd_step_trajectory", 2)]
    assert [len(m.students) for m in ranked] == sorted((len(m.students) for m in ranked), reverse=True)
    assert ranked[0].text == "uniform(#, #) init (torch.rand * # - #)?" and ranked[0].students == ["bob", "carol",
                                                                                                    "dave"]
    assert ranked[1].text == "grads not zeroed after the step?"
    # frank's time-out and grace's load error are one mistake of the whole submission, not one per test
    assert ("(whole submission)", ["frank"]) in [(m.test, m.students) for m in ranked]
    assert sum(len(m.students) for m in ranked) == 3 + 2 + 1 + 1 + 1 + 3  # each student once per mistake
    # a long first line is cut between two words, never inside one
    judy = next(m.example for m in ranked if m.students == ["judy"])
    assert judy.endswith("…") and len(judy) <= dashboard.MAX_DIAGNOSIS and LONG_LINE[len(judy) - 1] == " "


def test_dashboard_and_feedback_are_built_from_the_results_files_alone(graded_class):
    index = dashboard.write(graded_class)
    page = index.read_text()
    assert len(dashboard.collect(graded_class)) == len(CLASS)  # the unfinished one is left out
    for png in ("scores.png", "failure_rate.png", "grading_time.png"):
        assert (graded_class / dashboard.FIGURES / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"{dashboard.FIGURES}/{png}" in page
    carol = (graded_class / "carol" / "feedback.md").read_text()
    assert "## What failed" in carol and "**Diagnosis:** uniform(-1, 1) init (torch.rand * 2 - 1)?" in carol
    assert "**What to check:** Check: grads not zeroed after the step?" in carol
    assert "Every graded test passed." in (graded_class / "alice" / "feedback.md").read_text()
    carol_page = (graded_class / "carol" / "feedback.html").read_text()
    assert "<b>Diagnosis:</b> uniform(-1, 1) init (torch.rand * 2 - 1)?" in carol_page
    assert "<code>carol (v2) é?.py</code>" in carol_page
    assert "too slow or never returned" in (graded_class / "frank" / "feedback.md").read_text()
    assert "The file must load on its own" in (graded_class / "grace" / "feedback.md").read_text()
    first = page
    index.unlink()
    assert dashboard.write(graded_class).read_text() == first  # a resumed run gets the same page


def column(page, table: str, index: int) -> list[str]:
    """The visible cells of one column of a table, top to bottom."""
    return page.eval_on_selector_all(f"#{table} tbody tr:not([hidden])",
                                     f"rows => rows.map(r => r.cells[{index}].textContent)")


def test_page_loads_sorts_filters_and_shows_whole_mistakes_in_a_headless_browser(graded_class, tmp_path):
    from playwright.sync_api import sync_playwright

    index = dashboard.write(graded_class)
    ranked = dashboard.mistakes(dashboard.collect(graded_class))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        requests = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(index.as_uri())
        page.wait_for_load_state("load")
        assert page.title() == "labcheck class dashboard"
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.src, e.complete, e.naturalWidth])")
        links = page.eval_on_selector_all("a", "els => els.map(e => e.href)")
        bars = page.eval_on_selector_all("#mistake-bars .bar",
                                         "els => els.map(e => [e.title, Number(e.querySelector('.fill').textContent)])")
        files, isolation = column(page, "students", 1), column(page, "students", 6)
        page.click("#students thead th:has-text('score')")
        ascending = column(page, "students", 0)
        page.click("#students thead th:has-text('score')")
        descending = column(page, "students", 0)
        page.fill("input[data-table=students]", "carol")
        filtered = column(page, "students", 0)
        page.fill("input[data-table=mistakes]", "every bias")
        mistakes_left = column(page, "mistakes", 3)
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        page.goto((graded_class / "carol" / "feedback.html").as_uri())
        feedback = page.inner_text("body")
        browser.close()
    assert len(images) == 3 and all(complete and width > 0 for _, complete, width in images), images
    assert len(links) >= 2 * len(CLASS) + 1
    for href in links:
        url = urlparse(href)
        assert url.scheme == "file" and Path(unquote(url.path)).is_file(), href
    assert all(urlparse(url).scheme == "file" for url in requests)  # nothing from the network
    # one bar per mistake, most students first, each with its whole label on hover
    assert [title for title, _ in bars] == [f"{dashboard.mistake_label(m)} ({len(m.students)} students)" for m in ranked]
    assert [n for _, n in bars] == sorted((n for _, n in bars), reverse=True) and len(bars) == len(ranked)
    assert sum(SAME_START in title for title, _ in bars) == 2
    assert files == [FILES[name] for name in sorted(CLASS)] and isolation == [ISOLATION[n] for n in sorted(CLASS)]
    scores = {name: sum(p for t, p in TESTS.items() if t not in failures) for name, failures in CLASS.items()}
    assert [scores[n] for n in ascending] == sorted(scores.values()) and ascending[0] == "frank"
    assert [scores[n] for n in descending] == sorted(scores.values(), reverse=True) and descending[0] == "alice"
    assert filtered == ["carol"] and mistakes_left == [SAME_START + "in every layer and every bias"]
    assert "Diagnosis: uniform(-1, 1) init (torch.rand * 2 - 1)?" in feedback
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000


# ---------------------------------------------------------------------------------------------
# `labcheck grade`: progress and the instructor's mistakes


def test_a_submission_path_that_does_not_exist_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "grades"
    (tmp_path / "alice.py").write_text("")
    code = cli.main(["grade", str(tmp_path / "alice.py"), str(tmp_path / "bob_typo.py"), "--exercise", "sgd",
                     "--out", str(out)])
    assert code == 2 and not out.exists()
    assert f"no such submission: {tmp_path / 'bob_typo.py'} (nothing graded)" in capsys.readouterr().err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream, quiet", [(Terminal(), False), (io.StringIO(), False), (io.StringIO(), True)])
def test_progress_is_a_bar_on_a_terminal_lines_in_a_log_and_nothing_when_quiet(stream, quiet, capsys):
    subs = [grade.Submission(Path(f"{n}.py"), "sgd", n, Path("t.py")) for n in ("a", "b", "c")]
    progress = grade.Progress(len(subs), quiet=quiet, stream=stream)
    for sub in subs:
        progress(sub, {"score": 1, "max_score": 2}, resumed=False)
    progress.close()
    printed = capsys.readouterr().out
    if isinstance(stream, Terminal):
        assert "3/3" in stream.getvalue() and "submission" in stream.getvalue() and printed == ""
    elif quiet:
        assert printed == "" and stream.getvalue() == ""
    else:
        assert printed.count("graded") == 3 and "1/2" in printed


@pytest.mark.parametrize("output, advice", [
    ("[contract] train: the submission does not define `train` (see CONTRACT.md: `train(model, X, Y, X_test, "
     "Y_test, n_epochs=20, batch_size=64, lr=0.01, momentum=0.9)`)", "The contract's name is missing"),
    ("[error] scale: the submission raised ImportError: `from torchsummary import summary` (line 9) failed at "
     "grading time: No module named 'torchsummary'", "cannot be imported where grading runs"),
    ("[contract] train_epochs: `train_one_epoch(train_loader, model, device, optimizer, epoch)` cannot take the "
     "call the grader makes (missing a required argument: 'epoch'): the contract's signature is `train_one_epoch("
     "train_loader, model, device, optimizer, epoch=None)`", "parameters differ from the contract's"),
    ("MLP() has MLP4's architecture (four Linear layers, two BatchNorm1d): is `class MLP` defined a second time "
     "with the extra layer? The later definition replaces the first when the file runs.",
     "A later definition with the same name replaced this one"),
    ("[load_error] the submission could not be loaded: RuntimeError: Dataset not found. You can use "
     "download=True to download it", "reads or downloads data when it is loaded"),
    ("[load_error] the submission could not be loaded: SyntaxError: invalid syntax (sgd.py, line 3)",
     "not valid Python"),
    ("W0 has std 0.5763: uniform(-1, 1) init (torch.rand * 2 - 1)?", "Check: uniform(-1, 1) init"),
])
def test_what_to_check_fits_the_failure(output, advice):
    """Issue #28: "compare your function with the contract's description" was shown for an import error and a
    missing function alike; each kind of failure now gets its own next step."""
    text = dashboard.what_to_check({"output": output})
    assert advice in text and "Compare your function" not in text, text
