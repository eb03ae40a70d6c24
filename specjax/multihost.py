"""Multi-controller runs: one Python process per host, every process running the same program.

JAX's multi-controller model (a Cloud TPU VM slice, several GPU hosts, or processes on one machine):
each process calls `jax.distributed.initialize()` before any computation, then sees the devices of
every process in `jax.devices()` and only its own in `jax.local_devices()`. Arrays laid out over a
mesh of all devices are *global*: a process holds only its shards. So three things differ from a
one-process run, and this module is where they live:

- joining: `initialize` (from the CLI flags, JAX's environment variables, or nothing on Cloud TPU);
- reading a global array on the host (`to_host`): shards on other hosts are gathered;
- building a global batch (`global_rows`): each process contributes only the rows its own devices
  hold (`jax.make_array_from_process_local_data`), so no process reads another's part of a batch.

Writes to the file system (logs, final weights, printed answers) happen on process 0 only
(`is_primary`); orbax coordinates its own checkpoint writes across processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding

from models.errors import SpecjaxError

# How long a process waits for the others to join before giving up (seconds).
JOIN_TIMEOUT_S = 300


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int = JOIN_TIMEOUT_S,
) -> None:
    """Joins this process to a multi-process JAX run; must come before any JAX computation.

    With no arguments JAX detects the cluster itself (Cloud TPU, Slurm, Open MPI); elsewhere give
    all three. CPU processes talk over gloo (JAX's default CPU collectives), which is how the
    localhost tests run. A failure to join is one SpecjaxError line.
    """
    if jax.distributed.is_initialized():
        return
    if num_processes is not None and process_id is not None:
        if not 0 <= process_id < num_processes:
            raise SpecjaxError(f"--process_id must be in [0, {num_processes}), got {process_id}")
    try:
        jax.distributed.initialize(
            coordinator_address, num_processes, process_id, initialization_timeout=timeout_s
        )
    except (ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise SpecjaxError(f"could not join the multi-process run: {first}") from None


def initialize_from_flags(flag_values) -> None:
    """`initialize` when --distributed or --coordinator_address asks for it (see specjax.cli);
    unset flags fall back to JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID."""
    if not (flag_values.distributed or flag_values.coordinator_address):
        return

    def given(value, env: str, kind=str):
        if value is not None and value != "":
            return value
        if not os.environ.get(env):
            return None
        try:
            return kind(os.environ[env])
        except ValueError:
            raise SpecjaxError(f"{env}={os.environ[env]!r} is not a number") from None

    initialize(
        given(flag_values.coordinator_address, "JAX_COORDINATOR_ADDRESS"),
        given(flag_values.num_processes, "JAX_NUM_PROCESSES", int),
        given(flag_values.process_id, "JAX_PROCESS_ID", int),
    )


def is_primary() -> bool:
    """Process 0: the one that writes files and prints (any process outside a multi-process run;
    asked without starting JAX's backends)."""
    return not jax.distributed.is_initialized() or jax.process_index() == 0


def to_host(x: Any) -> np.ndarray:
    """A numpy copy of `x`, gathering the shards other processes hold when it spans them."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def tree_to_host(tree: Any) -> Any:
    return jax.tree.map(to_host, tree)


def put_global(tree: Any, shardings: Any) -> Any:
    """`jax.device_put(tree, shardings)`, also where a sharding spans other processes' devices:
    there JAX takes only host values (or uncommitted arrays) that every process holds alike, so a
    local array goes through the host first (a PRNG key array as its key data)."""

    def one(x, sharding):
        if sharding.is_fully_addressable or (isinstance(x, jax.Array) and x.sharding == sharding):
            return jax.device_put(x, sharding)
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = one(np.asarray(jax.random.key_data(x)), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return jax.device_put(np.asarray(x), sharding)

    return jax.tree.map(one, tree, shardings)


def local_row_range(sharding: NamedSharding, num_rows: int) -> tuple[int, int]:
    """[lo, hi): the rows of a `num_rows`-row array sharded on its first axis by `sharding` that
    this process's devices hold (contiguous: a mesh lists each process's devices together)."""
    slices = [idx[0] for idx in sharding.addressable_devices_indices_map((num_rows,)).values()]
    lo = min(s.start or 0 for s in slices)
    hi = max(num_rows if s.stop is None else s.stop for s in slices)
    return lo, hi


def global_rows(take: Callable[[np.ndarray], Any], idx: np.ndarray, sharding: NamedSharding) -> Any:
    """The global batch of rows `idx` (a pytree of arrays with a leading row axis), built from
    `take(local idx)` on each process: only the rows its own devices hold are read."""
    lo, hi = local_row_range(sharding, len(idx))
    local = take(idx[lo:hi])
    return jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(
            sharding, a, (len(idx),) + tuple(a.shape[1:])
        ),
        local,
    )
