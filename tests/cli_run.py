"""`python -m MODULE ARGS` as a user runs it from the repository root, for the CLI tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_module(
    module: str, *args: str, env: dict | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """The finished process, stdout and stderr captured as text (`env` None: this one's)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
