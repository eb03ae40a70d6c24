"""Many command lines of one absl CLI module, run one after another in a single process.

The CLI tests' bad-input cases are dozens of short runs, and as processes of their own each paid
for Python's and JAX's imports again (3-10 s a case on the 2-core CI machine, most of the run).
Here each case gets absl's flags reset to their defaults (`FLAGS.unparse_flags`), is parsed by the
module's own `parse_flags` and runs its `main`, with file descriptors 1 and 2 pointed at files of
its own, so its stdout, stderr (a C++ warning included) and exit code read as a subprocess's would.
What this cannot show, a separate process per case can: Python warnings shown once per process.
The happy paths and a few bad-input cases still run as real processes (`tests.cli_run`).

    python -m tests.cli_batch MODULE CASES.json RESULTS.json

CASES.json is a list of argument lists; RESULTS.json gets one {"returncode", "stdout", "stderr"}
per case, in order.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

from tests.cli_run import REPO


def run_batch(module: str, cases: list[list[str]], timeout: int = 600) -> list[dict]:
    """Each case's {"returncode", "stdout", "stderr"}, from one `python -m tests.cli_batch`."""
    with tempfile.TemporaryDirectory() as tmp:
        cases_file, results_file = Path(tmp, "cases.json"), Path(tmp, "results.json")
        cases_file.write_text(json.dumps(cases))
        proc = subprocess.run(
            [sys.executable, "-m", "tests.cli_batch", module, str(cases_file), str(results_file)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"tests.cli_batch failed:\n{proc.stderr}")
        return json.loads(results_file.read_text())


def _run_case(cli_module, args: list[str], out_dir: Path) -> dict:
    from absl import flags

    from specjax.cli import parse_flags

    flags.FLAGS.unparse_flags()
    files = {name: (out_dir / name).open("w+b") for name in ("stdout", "stderr")}
    saved = {1: os.dup(1), 2: os.dup(2)}
    returncode = 0
    try:
        os.dup2(files["stdout"].fileno(), 1)
        os.dup2(files["stderr"].fileno(), 2)
        try:
            cli_module.main(parse_flags([cli_module.__name__, *args]))
        except SystemExit as e:
            returncode = e.code if isinstance(e.code, int) else int(e.code is not None)
        except BaseException:  # an uncaught error ends a real process with a traceback and 1
            traceback.print_exc()
            returncode = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[1], 1)
        os.dup2(saved[2], 2)
        for fd in saved.values():
            os.close(fd)
    result = {"returncode": returncode}
    for name, f in files.items():
        f.seek(0)
        result[name] = f.read().decode("utf-8", errors="replace")
        f.close()
    return result


def main() -> None:
    module_name, cases_file, results_file = sys.argv[1:]
    cli_module = importlib.import_module(module_name)
    if callable(getattr(cli_module, "define_flags", None)):
        cli_module.define_flags()  # a CLI that defines its flags only when run as a program
    cases = json.loads(Path(cases_file).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        results = [_run_case(cli_module, args, Path(tmp)) for args in cases]
    Path(results_file).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
