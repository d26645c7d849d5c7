"""Notebooks as students hand them in (labcheck.submission.read_notebook).

The notebook versions of the bundled examples are built here, from exercises/<id>/examples/*.py: the
module docstring becomes a markdown cell, each top-level definition its own code cell, and the
cells a Colab/Jupyter export carries are added around them: `!pip` and `!nvidia-smi`,
`%matplotlib inline`, `%timeit`, Colab's `from google.colab import drive`, a `%%time` training
cell, a `%%bash` cell, a `device` and an `n_class` global, a top-level training loop,
`display(...)`, plots, `input()`, `x?` help, and a helper function that reads a global (`model`)
which only the training cell assigns.

What is shown:
  - every nbformat version (1-4) reads to the same kept source; schema problems are recorded;
  - for every example of every exercise, the kept source defines each of the .py's functions and
    classes with the identical AST (fast; this is what makes grading equal);
  - graded for real, the notebook and the .py of an example get exactly the same per-test scores:
    the buggy example of CHEAP in the default run (two gradings, about a minute each here); the
    correct and a buggy example of all five exercises with `-m slow`;
  - a function that reads a global only a dropped cell assigns fails with a message naming the
    global and the cell, in-process and when graded (the internal `_selftest` exercise, seconds).
"""
import ast
import json
from pathlib import Path

import nbformat
import pytest

from labcheck import grade, paths, submission
from labcheck.exercises import EXERCISES, REGISTRY

CHEAP = "width"  # the exercise whose grading took least here
HOSTILE = paths.tests_dir() / "hostile"

SETUP_CELL = """!pip install -q torch torchvision
%matplotlib inline
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
n_class = 10
print(f"running on {device}")"""
COLAB_CELLS = [
    "!nvidia-smi\nfrom google.colab import drive\ndrive.mount('/content/drive')",
    "%%time\nmodel = torch.nn.Linear(784, n_class).to(device)\nhistory = []\n"
    "for epoch in range(3):  # the training run\n"
    "    history.append(epoch)\n    print('epoch', epoch)",
    "def show_predictions(x):\n    return model(x.to(device)).argmax(1)[:n_class]",
    "import matplotlib.pyplot as plt\nplt.plot(history)\nplt.title('loss')\nplt.show()",
    "display(history)\n%timeit sum(range(10))\nshow_predictions?",
    "name = input('Your name: ')\nprint('hello', name)",
    "%%bash\necho 'not python'",
]


def statement_cells(path: Path) -> tuple[str, list[str], list[str]]:
    """(module docstring, import lines, one source per other top-level statement) of a .py file."""
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    doc = ast.get_docstring(tree) or ""
    imports, others = [], []
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and node is tree.body[0]:
            continue
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        segment = "\n".join(lines[start - 1:node.end_lineno])
        (imports if isinstance(node, (ast.Import, ast.ImportFrom)) else others).append(segment)
    return doc, imports, others


def notebook_of(path: Path, version: int = 4) -> str:
    """The example as a Colab-style notebook (nbformat `version`), with the usual extra cells."""
    doc, imports, others = statement_cells(path)
    v4 = nbformat.v4
    cells = [v4.new_markdown_cell(f"# {path.stem}\n\n{doc}"),
             v4.new_code_cell("\n".join(imports) + "\n" + SETUP_CELL)]
    for i, segment in enumerate(others):
        cells.append(v4.new_code_cell(segment, execution_count=i + 2))
        if i < len(COLAB_CELLS):
            cells.append(v4.new_code_cell(COLAB_CELLS[i]))
    cells += [v4.new_code_cell(c) for c in COLAB_CELLS[len(others):]]
    nb = v4.new_notebook(cells=cells, metadata={"colab": {"provenance": []}, "kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    return nbformat.writes(nb, version=version)


def definitions(source: str) -> dict[str, str]:
    """AST dump of every top-level def and class (the last one of a name wins, as when run)."""
    return {n.name: ast.dump(n) for n in ast.parse(source).body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


ALL_EXAMPLES = [pytest.param(p, id=f"{p.parent.parent.name}/{p.stem}")
                for ex in EXERCISES for p in sorted(REGISTRY[ex].examples_dir.glob("*.py"))]


@pytest.mark.parametrize("example", ALL_EXAMPLES)
def test_notebook_version_keeps_every_definition_unchanged(example):
    py_defs = definitions(example.read_text())
    nb = submission.read_notebook(notebook_of(example))
    nb_defs = definitions(nb.source)
    assert {k: nb_defs.get(k) for k in py_defs} == py_defs
    assert set(nb_defs) - set(py_defs) == {"show_predictions", "_LabcheckMissingGlobal"}
    assert "EXPECTED_FAILURES" in nb.source  # the constant is kept like any constant
    assert set(nb.missing_globals) == {"model"} and nb.validation_errors == []
    # kept: an import that fails at grading time binds a stand-in at load (a note, not a lost function)
    assert "from google.colab import drive" in nb.source
    for dropped in ("nvidia-smi", "drive.mount", "plt.show", "input(", "display(history)", "# the training run", "echo 'not",
                    "timeit", "print('hello'", "pip install"):
        assert dropped not in nb.source


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_every_nbformat_version_reads_to_the_same_source(version):
    example = REGISTRY[CHEAP].examples_dir / "correct.py"
    v4 = submission.read_notebook(notebook_of(example, 4))
    if version >= 3:
        text = notebook_of(example, version)
    else:  # nbformat writes 3 and 4 only: build the older layouts with its own v1/v2 modules
        _, imports, others = statement_cells(example)
        codes = ["\n".join(imports) + "\n" + SETUP_CELL, *others]
        if version == 2:
            text = nbformat.v2.writes_json(nbformat.v2.new_notebook(worksheets=[nbformat.v2.new_worksheet(
                cells=[nbformat.v2.new_code_cell(input=c) for c in codes])]))
        else:
            text = nbformat.v1.writes_json(nbformat.v1.new_notebook(
                cells=[nbformat.v1.new_code_cell(code=c) for c in codes]))
    nb = submission.read_notebook(text)
    assert nb.nbformat[0] == version
    assert definitions(nb.source).keys() >= definitions(example.read_text()).keys()
    assert {k: v for k, v in definitions(nb.source).items() if k in definitions(example.read_text())} == \
        {k: v for k, v in definitions(v4.source).items() if k in definitions(example.read_text())}


def test_schema_problems_are_recorded_not_fatal():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("def f():\n    return 1")])
    nb.cells[0]["colour"] = "red"  # not in the schema
    read = submission.read_notebook(json.dumps(nb))
    assert read.validation_errors and "colour" in read.validation_errors[0]
    assert "def f" in read.source
    hand_made = {"cells": [{"cell_type": "code", "source": ["N = 3\n", "def g():\n", "    return N\n"]}]}
    read = submission.read_notebook(json.dumps(hand_made))
    assert "def g" in read.source and "N = 3" in read.source and "read as nbformat 4" in read.validation_errors[0]


def test_magics_shell_lines_and_cell_magics():
    cells = ["import torch\n%load_ext autoreload\n!pip install x\nfiles = !ls\nLR = 0.1",
             "%%time\ndef timed():\n    return LR",
             "%%capture\nclass Captured:\n    pass",
             "%%writefile helper.py\ndef not_python_here():\n    pass",
             "def uses_magic():\n    get_ipython().system('ls')\n    return 1",
             "this is ( not python"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    read = submission.read_notebook(nbformat.writes(nb))
    assert set(definitions(read.source)) == {"timed", "Captured", "uses_magic"}
    assert "LR = 0.1" in read.source and "files" not in read.source and "pip" not in read.source
    reasons = {d.code.split("(")[0]: d.reason for d in read.dropped}
    assert any("IPython magic" in d.reason for d in read.dropped)
    assert any("non-Python cell magic" in d.reason and d.cell == "cell 4" for d in read.dropped)
    assert any("syntax error" in d.reason and d.cell == "cell 6" for d in read.dropped), reasons


def test_a_global_only_a_dropped_cell_assigns_gets_a_clear_message():
    cells = ["import torch\nn_class = 10",
             "X_train = torch.randn(20, 4)  # the data, computed\nlr = float(input('lr? '))",
             "def predict(x):\n    return (x @ W)[:, :n_class]\n\ndef scaled(x):\n    return x * lr",
             "W = torch.zeros(4, n_class)\nfor _ in range(3):\n    W += 0.1"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c, execution_count=i + 1)
                                         for i, c in enumerate(cells)])
    read = submission.read_notebook(nbformat.writes(nb))
    assert set(read.missing_globals) == {"W", "lr"}  # X_train is not read by any function: no placeholder
    namespace: dict = {}
    exec(compile(read.source, "notebook", "exec"), namespace)
    import torch

    with pytest.raises(NameError, match=r"'W' is read by predict\(\) but only assigned in notebook cell 4 \(In \[4\]\)"
                                        r", line 1 \(`W = torch.zeros\(4, n_class\)`\)"):
        namespace["predict"](torch.ones(2, 4))
    with pytest.raises(NameError, match=r"'lr' is read by scaled\(\).*cell 2 \(In \[2\]\), line 2"):
        namespace["scaled"](torch.ones(2))
    with pytest.raises(NameError, match="'W'"):  # also when torch is handed the placeholder
        torch.ones(2, 4) @ namespace["W"]


def test_graded_notebook_names_the_missing_global(tmp_path):
    """End to end through the grader (the `_selftest` exercise): the student reads the message."""
    cells = ["import torch\nOFFSET = 0", "shift = torch.tensor(0.0)  # computed: dropped",
             (HOSTILE / "correct.py").read_text().replace("return a + b", "return a + b + shift")]
    path = tmp_path / "nb.ipynb"
    path.write_text(nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])))
    subs = grade.discover([path], "_selftest", tests=HOSTILE / "contract_selftest.py")
    opts = grade.Options(out=tmp_path / "out", jobs=1, timeout=30.0, total_timeout=240.0, extra_pytest_args=(
        "--labcheck-reference", str(HOSTILE / "reference_selftest.py"), "--labcheck-startup-timeout", "60"))
    results = grade.grade_many(subs, opts)["nb"]
    add = next(t for t in results["tests"] if t["name"] == "test_add")
    assert add["score"] == 0 and "'shift' is read by add() but only assigned in notebook cell 2" in add["output"]
    assert {t["name"]: t["score"] for t in results["tests"] if t["name"] != "test_add"} == {
        "test_matmul": 2.0, "test_scale": 1.0, "test_means": 2.0}


def graded_pair(tmp_path: Path, example: Path) -> tuple[dict, dict]:
    """The per-test (score, status) of the example graded as .py and as its notebook version."""
    exercise = example.parent.parent.name  # exercises/<id>/examples/<file>
    folder = tmp_path / "class"
    folder.mkdir(exist_ok=True)
    py = folder / f"{example.stem}_py.py"
    py.write_text(example.read_text())
    (folder / f"{example.stem}_nb.ipynb").write_text(notebook_of(example))
    subs = grade.discover([folder], exercise)
    results = grade.grade_many(subs, grade.Options(out=tmp_path / "out", jobs=2))
    by = {name: {t["name"]: (t["score"], t["status"]) for t in res["tests"]} for name, res in results.items()}
    return by[f"{example.stem}_py"], by[f"{example.stem}_nb"]


def first_buggy(exercise: str) -> Path:
    return next(f for f in sorted(REGISTRY[exercise].examples_dir.glob("buggy_*.py")) if grade.expected_failures(f))


def test_notebook_grades_exactly_like_the_py(tmp_path):
    example = first_buggy(CHEAP)
    as_py, as_nb = graded_pair(tmp_path, example)
    assert as_nb == as_py
    assert {name for name, (score, status) in as_py.items() if status == "failed"} >= set(
        grade.expected_failures(example))


@pytest.mark.slow
@pytest.mark.parametrize("exercise", EXERCISES)
@pytest.mark.parametrize("which", ["correct", "buggy"])
def test_notebooks_of_every_exercise_grade_exactly_like_the_py(tmp_path, exercise, which):
    example = REGISTRY[exercise].examples_dir / "correct.py" if which == "correct" else first_buggy(exercise)
    as_py, as_nb = graded_pair(tmp_path, example)
    assert as_nb == as_py and as_py
