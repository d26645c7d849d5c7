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
import time
from pathlib import Path

import nbformat
import pytest

from labcheck import grade, paths, submission
from labcheck.untrusted import loader
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
    assert set(nb_defs) - set(py_defs) == {"show_predictions"}
    assert "EXPECTED_FAILURES" in nb.source  # the constant is kept like any constant
    # module-level objects run: `model` (which show_predictions reads) is made in the %%time cell
    assert "model = torch.nn.Linear(784, n_class).to(device)" in nb.source and "history = []" in nb.source
    assert nb.missing_globals == {} and nb.validation_errors == []
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


def test_a_global_only_a_left_out_statement_assigns_gets_a_clear_message():
    cells = ["import torch\nn_class = 10",
             "X_train = torch.randn(20, 4)  # the data, computed\nlr = float(input('lr? '))",
             "def predict(x):\n    return (x @ W)[:, :n_class]\n\ndef scaled(x):\n    return x * lr",
             "W = torch.zeros(4, n_class)\nfor _ in range(3):\n    W += 0.1"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c, execution_count=i + 1)
                                         for i, c in enumerate(cells)])
    read = submission.read_notebook(nbformat.writes(nb))
    assert set(read.missing_globals) == {"lr"}  # W and X_train are module-level objects: they run
    namespace: dict = {}
    exec(compile(read.source, "notebook", "exec"), namespace)
    import torch

    assert namespace["predict"](torch.ones(2, 4)).shape == (2, 10)
    with pytest.raises(NameError, match=r"'lr' \(used by scaled\(\)\) is only assigned in notebook cell 2, In \[2\], "
                                        r"line 2 \(`lr = float\(input\('lr\? '\)\)`\), which did not run"):
        namespace["scaled"](torch.ones(2))
    with pytest.raises(NameError, match="'lr'"):  # also when torch is handed the placeholder
        torch.ones(2, 4) * namespace["lr"]


# ---------------------------------------------------------------------------------------------
# The rule: run order, what runs, budgets, cells in tracebacks (in this process: labcheck.untrusted.loader)


def counted(*cells: tuple[str, int | None]) -> str:
    return nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c, execution_count=n)
                                                           for c, n in cells]))


def test_cells_run_in_execution_order_and_the_last_run_definition_wins():
    text = counted(("import torch", 1),
                   ("def step(x):\n    return x - 0.1 * x  # fixed, run last", 9),
                   ("def step(x):\n    return x + 0.1 * x  # older version, below", 4),
                   ("LR = 0.1", None),  # never run in the saved session: right after the cell above it
                   ("def other():\n    return LR", 5))
    read = submission.read_notebook(text)
    assert [s.cell for s in read.statements] == ["cell 1, In [1]", "cell 3, In [4]", "cell 4", "cell 5, In [5]",
                                                 "cell 2, In [9]"]
    assert any("`step` is defined more than once: graded is the one in cell 2, In [9], which you ran last" in n
               for n in read.order_notes), read.order_notes
    module = loader.execute_submission(Path("nb.ipynb"), read, [])
    assert module.step(1.0) == pytest.approx(0.9) and module.other() == 0.1
    # without counts: top to bottom, the lower definition wins, nothing to note
    plain = submission.read_notebook(counted(*[(c, None) for c in ("def f():\n    return 1", "def f():\n    return 2")]))
    assert loader.execute_submission(Path("nb.ipynb"), plain, []).f() == 2 and plain.order_notes == []


TORCHVISION_NOTEBOOK = [
    ("import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"
     "from torchvision import datasets, transforms\nimport matplotlib.pyplot as plt\n"
     "from google.colab import drive\n!pip install torchsummary\ndrive.mount('/content/drive')", 1),
    ("device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')\ncriterion = nn.CrossEntropyLoss()\n"
     "transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])\n"
     "train_set = datasets.MNIST('data', train=True, download=True, transform=transform)\n"
     "loader = torch.utils.data.DataLoader(train_set, batch_size=64)", 2),
    ("class MLP(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(4, 3)\n\n"
     "    def forward(self, x):\n        return self.fc(x)", 3),
    ("model = MLP().to(device)\noptimizer = torch.optim.SGD(model.parameters(), lr=0.1)", 4),
    ("weights = torch.load('/content/drive/MyDrive/weights.pt')  # a cell left with an error\nscale = 2.0", 5),
    ("def loss_of(x, y):\n    return criterion(model(x), y) * scale\n\ndef broken(x):\n    z = x * 2\n"
     "    return z + undefined_name", 6),
    ("def train_forever():\n    while True:\n        pass\n\ntrain_forever()  # a top-level call that trains", 7),
    ("for epoch in range(10):\n    for x, y in loader:\n        pass\nplt.plot([1, 2])\nmodel", 8),
]


def test_module_level_objects_exist_and_failures_cost_nothing_else(tmp_path):
    read = submission.read_notebook(counted(*TORCHVISION_NOTEBOOK))
    left_out = {d.code: d.reason for d in read.dropped}
    download = "train_set = datasets.MNIST('data', train=True, download=True, transform=transform)"
    assert set(left_out) == {"!pip install torchsummary", "drive.mount('/content/drive')", download,
                             "loader = torch.utils.data.DataLoader(train_set, batch_size=64)",
                             "for epoch in range(10):", "plt.plot([1, 2])", "model"}, left_out
    assert "downloads data" in left_out[download]
    assert "uses `train_set`, which only a left-out statement assigns (cell 2, In [2], line 4)" in \
        left_out["loader = torch.utils.data.DataLoader(train_set, batch_size=64)"]
    notes: list[str] = []
    start = time.process_time()
    entry = tmp_path / "student.ipynb"
    module = loader.execute_submission(entry, read, notes)
    assert time.process_time() - start < loader.NOTEBOOK_CPU_SECONDS  # the top-level training call was cut short
    import torch

    x, y = torch.ones(5, 4), torch.zeros(5, dtype=torch.long)
    assert module.loss_of(x, y).item() == pytest.approx(2 * torch.nn.CrossEntropyLoss()(module.model(x), y).item())
    assert type(module.transform).__name__ == "Compose" and str(module.device) == "cpu"
    assert any(n.startswith("cell 5, In [5], line 1: `weights = torch.load(") and "left out" in n for n in notes), notes
    assert any(n.startswith("cell 7, In [7], line 5: `train_forever()") and "was stopped after" in n for n in notes)
    assert any("`from google.colab import drive` failed at grading time" in n for n in notes)
    with pytest.raises(NameError, match=r"'weights' .* cell 5, In \[5\], line 1"):
        module.weights.sum()
    with pytest.raises(NameError) as info:  # the traceback names the cell and quotes it, never the JSON
        module.broken(x)
    shown = loader.student_traceback(info.value, str(entry), "student.ipynb")
    assert 'File "student.ipynb, cell 6, In [6]", line 6, in broken' in shown
    assert "return z + undefined_name" in shown and "execution_count" not in shown


SELFTEST_NOTEBOOK = [
    ("import torch\nimport matplotlib.pyplot as plt\nfrom google.colab import drive\n!pip install torchsummary\n"
     "drive.mount('/content/drive')", 1),
    ("zero = torch.zeros(())  # a module-level object add() uses", 2),
    ("def add(a, b):\n    return a + b + zero.item()  # fixed: placed above the old one, run last", 7),
    ("def add(a, b):\n    return a - b  # the older version", 3),
    ("data = torch.load('/content/drive/MyDrive/data.pt')  # left with an error\nfactor = 1.0", 4),
    ("def matmul(a, b):\n    return torch.matmul(a, b)\n\ndef scale(x, s):\n    return factor * s * x", 5),
    ("def means(rows):\n    out = []\n    for r in rows:\n        out.append(sum(r) / len(r) + undefined_offset)\n"
     "    return out", 6),
    ("losses = []\nfor step in range(1000):\n    losses.append(add(step, 1))\nplt.plot(losses)\nplt.show()", 8),
]


def test_a_graded_notebook_runs_as_the_student_ran_it(tmp_path):
    """End to end through the grader and its sandboxed worker (the `_selftest` exercise): the fixed `add` placed
    above its older version but run last is graded, with a note; `zero`, a module-level object, exists; the
    cell left with an error costs nothing else; `means`' traceback names its cell; results.json's output and
    feedback.md say what ran, what was left out and why."""
    from labcheck import dashboard

    path = tmp_path / "student.ipynb"
    path.write_text(counted(*SELFTEST_NOTEBOOK))
    subs = grade.discover([path], "_selftest", tests=HOSTILE / "contract_selftest.py")
    out = tmp_path / "out"
    opts = grade.Options(out=out, jobs=1, timeout=30.0, total_timeout=240.0, extra_pytest_args=(
        "--labcheck-reference", str(HOSTILE / "reference_selftest.py"), "--labcheck-startup-timeout", "60"))
    results = grade.grade_many(subs, opts)["student"]
    scores = {t["name"]: t["score"] for t in results["tests"]}
    assert scores == {"test_add": 1.0, "test_matmul": 2.0, "test_scale": 1.0, "test_means": 0.0}, results
    means = next(t["output"] for t in results["tests"] if t["name"] == "test_means")
    assert 'student.ipynb, cell 7, In [6]", line 4, in means' in means and "undefined_offset" in means
    assert '"source"' not in means and "execution_count" not in means  # the cell, never the JSON
    output = results["output"]
    for said in ("graded as you ran it", "!pip install torchsummary", "drive.mount('/content/drive')",
                 "for step in range(1000):", "plt.plot(losses)",
                 "`add` is defined more than once: graded is the one in cell 3, In [7], which you ran last",
                 "cell 5, In [4], line 1: `data = torch.load(", "`from google.colab import drive` failed"):
        assert said in output, (said, output)
    assert results["extra_data"]["labcheck"]["notebook"]["ran"] == {"import": 3, "definition": 5, "code": 4}
    dashboard.write(out)
    assert "cell 5, In [4], line 1: `data = torch.load(" in (out / "student" / "feedback.md").read_text()


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


CRITERION_OBJECTS = """import torch.nn as nn

device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
criterion = nn.CrossEntropyLoss()
summed = nn.CrossEntropyLoss(reduction='sum')
transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
"""
DATA_CELLS = [  # as the seed loads and trains: a download, a loader over it, a training run, a plot
    "train_set = datasets.MNIST('data', train=True, download=True, transform=transform)\n"
    "train_loader = torch.utils.data.DataLoader(train_set, batch_size=64, shuffle=True)",
    "params = {k: torch.empty(s) for k, s in [('W0', (784, 100)), ('b0', (100,)), ('W1', (100, 100)), "
    "('b1', (100,)), ('W2', (100, 10)), ('b2', (10,))]}\ninitialize_nn(params)",
    "losses, accs = train_sgd(params, train_loader, lr=0.01, epochs=20)\nplt.plot(losses)",
]


def test_a_notebook_with_module_level_objects_grades_like_its_py_twin(tmp_path):
    """sgd's correct example with the functions using a module-level `criterion` (and `summed`, `device`,
    `transform`): 26/26 as a .py and, with the seed's data-loading and training cells added, as a notebook
    (before: 17/26 as a notebook, where only imports, defs and constants ran)."""
    example = REGISTRY["sgd"].examples_dir / "correct.py"
    text = example.read_text()
    imports_end = text.index("EXPECTED_FAILURES")
    twin = (text[:imports_end] + CRITERION_OBJECTS + "\n" + text[imports_end:]).replace(
        'F.cross_entropy(output, targets, reduction="sum")', "summed(output, targets)").replace(
        "F.cross_entropy(output, target)", "criterion(output, target)")
    assert "criterion(output, target)" in twin and "summed(output, targets)" in twin
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "twin_py.py").write_text(twin)
    py = folder / "twin_py.py"
    cells = nbformat.reads(notebook_of(py), 4)
    cells.cells[1:1] = [nbformat.v4.new_code_cell("import matplotlib.pyplot as plt")]
    cells.cells += [nbformat.v4.new_code_cell(c) for c in DATA_CELLS]
    (folder / "twin_nb.ipynb").write_text(nbformat.writes(cells))
    results = grade.grade_many(grade.discover([folder], "sgd"), grade.Options(out=tmp_path / "out", jobs=2))
    by = {name: {t["name"]: t["score"] for t in res["tests"]} for name, res in results.items()}
    assert by["twin_nb"] == by["twin_py"] and results["twin_py"]["score"] == results["twin_py"]["max_score"] == 26
    left_out = {d["code"]: d for d in results["twin_nb"]["extra_data"]["labcheck"]["notebook"]["left_out"]}
    assert "downloads data" in left_out[DATA_CELLS[0].splitlines()[0]]["reason"]
    assert "initialize_nn(params)" not in left_out and "plt.plot(losses)" in left_out
    assert left_out["for epoch in range(3):  # the training run"]["line"] == 4  # (%%time's cell: its own lines)


@pytest.mark.slow
@pytest.mark.parametrize("exercise", EXERCISES)
@pytest.mark.parametrize("which", ["correct", "buggy"])
def test_notebooks_of_every_exercise_grade_exactly_like_the_py(tmp_path, exercise, which):
    example = REGISTRY[exercise].examples_dir / "correct.py" if which == "correct" else first_buggy(exercise)
    as_py, as_nb = graded_pair(tmp_path, example)
    assert as_nb == as_py and as_py
