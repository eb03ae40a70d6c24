"""train_heads/train.py on a ("data",) mesh: with 2 simulated CPU devices the batch is split over
them, exact resume still holds, and the result matches the single-device run (subprocess, since
the device count is fixed when JAX starts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import with_xla_flag

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys, jax, numpy as np
from tests.test_train_loop import _fit, _hp, _leaves_equal, setup
from train_heads.train import data_mesh
setup = setup._get_wrapped_function()()
assert jax.device_count() == 2 and data_mesh(4) is not None
out = sys.argv[1]
unstopped = _fit(setup, _hp(out + "/a"))
_fit(setup, _hp(out + "/b"), stop_after=3)
resumed = _fit(setup, _hp(out + "/b"), resume=True)
assert _leaves_equal(resumed.params, unstopped.params)
spec = unstopped.params.layers.wqkv.sharding.spec
assert all(s is None for s in spec), spec  # params replicated
np.savez(out + "/params.npz", *[np.asarray(x) for x in jax.tree.leaves(unstopped.params)])
"""


def test_two_devices_resume_exactly_and_match_one_device(tmp_path):
    env = dict(os.environ, XLA_FLAGS=with_xla_flag("--xla_force_host_platform_device_count=2"))
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    import jax
    import numpy as np

    from tests.test_train_loop import _fit, _hp, setup

    one = _fit(setup._get_wrapped_function()(), _hp(tmp_path / "one"))
    with np.load(tmp_path / "params.npz") as f:
        two = [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]
    for a, b in zip(jax.tree.leaves(one.params), two, strict=True):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-4, atol=1e-5)
