"""Multi-controller runs on this machine: 2 processes on localhost, each with 2 simulated CPU
devices, joined by `jax.distributed.initialize` (gloo collectives over loopback).

- Training (train_heads.train.fit on a tiny draft): 2 processes x 2 devices end with the params of
  1 process x 4 devices on the same data; only process 0 writes the metrics log; a checkpoint the
  2-process run wrote resumes in a 1-process, 1-device run with that run's next-step params.
- Decoding (`python -m specjax.decode --distributed ...` on the real stories260K): the target
  sharded over the 4 devices of both processes gives the single-device tokens.

Every process is started and stopped here, with timeouts, and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import with_xla_flag
from tests.test_decode_cli import CHECKPOINT, HAS_DATA, NO_DATA_REASON, TOKENIZER

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240

# One worker: joins the run (when asked), then trains each (directory, stop_after, resume) job.
TRAIN_WORKER = """
import json, sys
args = json.loads(sys.argv[1])
if args["processes"] > 1:
    from specjax.multihost import initialize
    initialize(args["address"], args["processes"], args["process_id"])
import jax, numpy as np
from specjax.multihost import is_primary, tree_to_host
from tests.test_train_loop import _fit, _hp, setup
assert jax.device_count() == args["devices"], jax.devices()
data = setup._get_wrapped_function()()
for out, stop_after, resume in args["jobs"]:
    state = _fit(data, _hp(out), stop_after=stop_after, resume=resume)
    leaves = [tree_to_host(x) for x in jax.tree.leaves(state.params)]
    if is_primary():
        np.savez(out + f"/params_{int(state.step)}.npz", *leaves)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(
        os.environ, XLA_FLAGS=with_xla_flag(f"--xla_force_host_platform_device_count={devices}")
    )
    env["PYTHONPATH"] = str(REPO)
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the runs here compile without the disk cache
    return env


def _run_all(commands: list[list[str]], devices: int) -> list[subprocess.CompletedProcess]:
    """Runs the commands at once (the processes of one run) and waits for all; any that has
    not finished within TIMEOUT_S is killed, and a failure shows its stderr."""
    procs = [
        subprocess.Popen(
            cmd,
            cwd=REPO,
            env=_env(devices),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for cmd in commands
    ]
    done = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT_S)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for d in done:
        assert d.returncode == 0, d.stderr[-3000:]
    return done


def _train(jobs: list, processes: int, devices_per_process: int) -> None:
    address = f"127.0.0.1:{_free_port()}"
    commands = []
    for pid in range(processes):
        args = dict(
            processes=processes,
            process_id=pid,
            address=address,
            devices=processes * devices_per_process,
            jobs=[[str(d), stop, resume] for d, stop, resume in jobs],
        )
        commands.append([sys.executable, "-c", TRAIN_WORKER, json.dumps(args)])
    _run_all(commands, devices_per_process)


def _params(path: Path) -> list[np.ndarray]:
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def _assert_close(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    """Same up to the order of the gradient all-reduce's additions (gloo across processes,
    XLA's own within one)."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runs every training check reads: 6 steps each (checkpoints every 3), on
    - two: 2 processes x 2 devices, whole; and stopped at step 3 (stopped/);
    - one: 1 process x 4 devices, whole;
    - stopped/ resumed for one step by 1 process with 1 device; and that layout's own run to
      step 4 (one_device/)."""
    root = tmp_path_factory.mktemp("multihost_train")
    _train([(root / "two", None, False), (root / "stopped", 3, False)], 2, 2)
    _train([(root / "one", None, False)], 1, 4)
    _train([(root / "stopped", 4, True), (root / "one_device", 4, False)], 1, 1)
    return root


def test_two_processes_train_the_params_of_one_process(trained):
    _assert_close(
        _params(trained / "two" / "params_6.npz"), _params(trained / "one" / "params_6.npz")
    )


def test_only_process_zero_writes_the_metrics_log(trained):
    from train_heads.train import METRICS_FILE

    lines = [json.loads(x) for x in (trained / "two" / METRICS_FILE).read_text().splitlines()]
    keys = [(r["step"], r["split"]) for r in lines]
    assert len(keys) == len(set(keys)) and (6, "eval") in keys, keys


def test_a_two_process_checkpoint_resumes_in_one_process(trained):
    _assert_close(
        _params(trained / "stopped" / "params_4.npz"),
        _params(trained / "one_device" / "params_4.npz"),
    )


@pytest.fixture(scope="module")
def stories_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not HAS_DATA:
        pytest.skip(NO_DATA_REASON)
    from models.llama2c import convert

    return convert(CHECKPOINT, TOKENIZER, tmp_path_factory.mktemp("stories260K_hf"))


def _decode(model: Path, processes: int) -> tuple[dict, list[str]]:
    """The --json result of process 0, and what every process printed on stdout."""
    args = [
        sys.executable, "-m", "specjax.decode", f"--model={model}", "--nochat",
        "--prompt=Once upon a time", "--max_new_tokens=24", "--json", "--method=sd",
        "--draft=self:2", "--nocompile_cache",
    ]  # fmt: skip
    if processes == 1:
        (run,) = _run_all([args], 1)
        return json.loads(run.stdout.splitlines()[-1]), [run.stdout]
    address = f"127.0.0.1:{_free_port()}"
    runs = _run_all(
        [
            args + [f"--coordinator_address={address}", "--num_processes=2", f"--process_id={i}"]
            for i in range(processes)
        ],
        2,
    )
    return json.loads(runs[0].stdout.splitlines()[-1]), [r.stdout for r in runs]


def test_a_two_process_sharded_decode_gives_the_single_device_tokens(stories_dir):
    single, _ = _decode(stories_dir, 1)
    sharded, stdouts = _decode(stories_dir, 2)
    assert sharded["tokens"] == single["tokens"] and len(single["tokens"]) == 24
    assert sharded["target_calls"] == single["target_calls"]
    # Process 1 prints nothing of its own (gloo's C++ announces its connections on stdout).
    assert re.sub(r"\[Gloo\][^\[]*", "", stdouts[1]).strip() == "", stdouts[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--coordinator_address=127.0.0.1:1", "--num_processes=2", "--process_id=2"],
         "--process_id must be in [0, 2)"),
        (["--distributed"], "could not join the multi-process run"),
        (["--mesh=2y2"], "--mesh is auto or DATAxMODEL"),
    ],
    ids=["process_id_out_of_range", "no_coordinator", "malformed_mesh"],
)  # fmt: skip
def test_a_bad_multi_process_setting_is_one_error_line(args, message):
    env = _env(1)
    for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    proc = subprocess.run(
        [sys.executable, "-m", "specjax.decode", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
