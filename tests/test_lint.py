"""ruff over the project (STYLE 11): lint failures fail the suite, in seconds."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command", [["check", "."], ["format", "--check", "."]], ids=["check", "format"]
)
def test_ruff_finds_nothing(command):
    """Lint and format, notebooks included: the code a reader copies out of colab/ is held to the
    same rules as the rest."""
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (it comes with the test extra)")
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", *command], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:]


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.skip("import-linter is not installed (it comes with the test extra)")
    return subprocess.run(
        [str(exe), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300
    )


def test_imports_run_one_way():
    """models <- configs <- specjax <- train_heads, function-local imports included."""
    proc = _lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The contract has teeth: a copy of the tree with one upward import fails it."""
    import shutil

    for package in ("models", "configs", "specjax", "train_heads"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.safetensors")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "models" / "upward.py").write_text("def f():\n    from specjax import engine\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode != 0
    assert "models.upward -> specjax.engine" in proc.stdout, proc.stdout[-3000:]
