"""The verify-cost curve c(T): one target forward over T new tokens, in units of a 1-token forward.

Speedup = tau / (c(T) + draft cost) (DESIGN "Performance model"), and c(T) is a property of the
machine and its kernels, not of the method: near 1 up to tens of tokens on a GPU, 1.3-2 by T = 8 on a
2-core CPU. The curve is measured on the decode's own weight layout (`models.layer_layout`), after a
realistic cached prefix, and kept in a small JSON file per (model shapes, backend, device, layout) under
specjax's cache directory, so a planner (`specjax.block_size`) pays for it once per machine. A
drafter that drafts depth by depth (the CTC module) has its own cost per depth, timed and cached the
same way (`cached_chain_ms`), so an auto tree can weigh what each depth costs to draft.
"""

from __future__ import annotations

import functools
import hashlib
import json
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from models import layer_layout, skinny_matmul
from models.cache import init_cache
from models.config import ModelConfig
from models.ctc_draft import CTCDraftParams, draft_chain
from models.derived_cache import cache_root
from models.transformer import ModelParams, causal_mask, forward

CONTEXT = 256  # cached tokens before the T new ones (a chat turn's prompt plus some answer)
FORMAT = 1  # bump when what a saved curve means changes


def verify_cost_curve(
    config: ModelConfig,
    params: ModelParams,
    Ts=(1, 2, 4, 8, 16, 32),
    context=CONTEXT,
    repeats=10,
    stacked: bool = False,
) -> dict:
    """{"ms": {T: median ms of one jitted forward}, "c": {T: ms[T] / ms[1]}}, on the weights in the
    layout the decode hands the forward on this backend (`stacked`: the scanned layout instead)."""
    from specjax.engine import decode_layout

    params = layer_layout.without_layer_list(params) if stacked else decode_layout(params)
    Ts = tuple(sorted(set(Ts) | {1}))
    cache = init_cache(config.L, 1, config.K, context + max(Ts) + 1, config.H, params.dtype)
    cache = cache.replace(length=jnp.array([context], jnp.int32))
    fwd = jax.jit(forward, static_argnums=0)
    runs = {}
    for T in Ts:
        args = (
            jnp.zeros((1, T), jnp.int32),
            context + jnp.arange(T)[None],
            cache,
            causal_mask(1, T),
        )
        runs[T] = functools.partial(fwd.lower(config, params, *args).compile(), params, *args)
    ms = median_ms(runs, repeats)
    return {"ms": ms, "c": {T: ms[T] / ms[1] for T in Ts}}


def median_ms(runs: dict[int, Callable[[], object]], repeats: int) -> dict[int, float]:
    """{key: median ms of `run()`} over `repeats` rounds, after one untimed call of each (compiling
    and warming it). The runs take turns, so a slow spell of a shared machine lands on every key
    alike instead of on one key's back-to-back timings (which once measured c(4) = 3 and collapsed
    an auto tree)."""
    for run in runs.values():
        jax.block_until_ready(run())
    times = {key: [] for key in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(run())
            times[key].append(time.perf_counter() - t0)
    return {key: 1e3 * statistics.median(t) for key, t in times.items()}


def draft_chain_ms(
    config: ModelConfig, params: CTCDraftParams, depth: int, context=CONTEXT, repeats=7
) -> dict[int, float]:
    """{d: median ms of the CTC module's `draft_chain` d frames deep} for d = 1 ... depth, one row
    after `context` cached pairs: what each depth of a tree costs that drafter on this machine.
    `config` is the module's (`models.ctc_draft.draft_config`)."""
    dtype = params.head.fc_w.dtype
    cache = init_cache(1, 1, config.K, context + depth + 1, config.H, dtype)
    cache = cache.replace(length=jnp.array([context], jnp.int32))
    hidden, root = jnp.zeros((1, config.D), dtype), jnp.zeros((1,), jnp.int32)
    runs = {}
    for d in range(1, depth + 1):
        chain = jax.jit(lambda p, c, d=d: draft_chain(config, p, hidden, root, c, d))
        runs[d] = functools.partial(chain, params, cache)
    return median_ms(runs, repeats)


def _curve_path(config: ModelConfig, params: ModelParams, what: str):
    """This machine's cache file for one measurement (`what`) of a model of these shapes."""
    from specjax.engine import PER_LAYER_ON_CPU

    ident = json.dumps(
        {
            # The cost depends on shapes alone (a frequent-token head has fewer columns).
            "config": repr(config),
            "shapes": [(x.shape, str(x.dtype)) for x in jax.tree.leaves(params)],
            "backend": jax.default_backend(),
            "device": jax.local_devices()[0].device_kind,
            "devices": jax.local_device_count(),
            "per_layer": PER_LAYER_ON_CPU,
            "skinny_matmul": skinny_matmul.available() and skinny_matmul.source_digest(),
            "what": what,
            "format": FORMAT,
        },
        sort_keys=True,
    )
    key = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return cache_root() / "verify_cost" / f"{what}-{key}.json"


def _cached(path, wanted, measure: Callable[[], dict], remeasure: bool) -> dict:
    """{"ms": {key: ms}, ...} from the JSON file at `path` when it has every key in `wanted`, else
    `measure()`, saved there. An unreadable or unwritable cache costs time, not an error."""
    if not remeasure and path.is_file():
        try:
            saved = json.loads(path.read_text())
            saved = {k: {int(key): v for key, v in saved[k].items()} for k in saved}
            if set(wanted) <= set(saved["ms"]):
                return saved
        except (OSError, ValueError, KeyError, AttributeError):
            pass
    measured = measure()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(measured, indent=1))
        tmp.replace(path)
    except OSError:
        pass
    return measured


def cached_cost_curve(
    config: ModelConfig, params: ModelParams, Ts, what: str = "target", remeasure: bool = False
) -> dict:
    """`verify_cost_curve` over `Ts`, read from this machine's cache file when it has them all
    (`remeasure` measures again and overwrites)."""
    path = _curve_path(config, params, what)
    return _cached(path, Ts, lambda: verify_cost_curve(config, params, Ts, repeats=7), remeasure)


def cached_chain_ms(
    config: ModelConfig, params: CTCDraftParams, depth: int, remeasure: bool = False
) -> dict[int, float]:
    """`draft_chain_ms` for depths 1 ... depth, cached on this machine like the target's curve, so
    every `--method=ctc --tree=auto` process after the first starts without timing the module."""

    def measure():
        return {"ms": draft_chain_ms(config, params, depth)}

    path = _curve_path(config, params, "ctc-chain")
    return _cached(path, range(1, depth + 1), measure, remeasure)["ms"]
