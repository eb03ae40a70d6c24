"""The verify-cost curve c(T): one target forward over T new tokens, in units of a 1-token forward.

Speedup = tau / (c(T) + draft cost) (DESIGN "Performance model"), and c(T) is a property of the
machine and its kernels, not of the method: near 1 up to tens of tokens on a GPU, 1.3-2 by T = 8 on a
2-core CPU. The curve is measured on the decode's own weight layout (`models.layer_layout`), after a
realistic cached prefix, and kept in a small JSON file per (model shapes, backend, device, layout) under
specjax's cache directory, so a planner (`specjax.block_size`) pays for it once per machine.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time

import jax
import jax.numpy as jnp

from models import layer_layout, skinny_matmul
from models.cache import init_cache
from models.config import ModelConfig
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
        run = fwd.lower(config, params, *args).compile()
        jax.block_until_ready(run(params, *args))
        runs[T] = (run, args)
    # The T's take turns, so a slow spell of a shared machine lands on every T alike instead of on
    # one T's back-to-back timings (which once measured c(4) = 3 and collapsed an auto tree).
    times = {T: [] for T in Ts}
    for _ in range(repeats):
        for T, (run, args) in runs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(run(params, *args))
            times[T].append(time.perf_counter() - t0)
    ms = {T: 1e3 * statistics.median(times[T]) for T in Ts}
    return {"ms": ms, "c": {T: ms[T] / ms[1] for T in Ts}}


def _curve_path(config: ModelConfig, params: ModelParams, what: str):
    """This machine's cache file for the curve of a model of these shapes."""
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


def cached_cost_curve(
    config: ModelConfig, params: ModelParams, Ts, what: str = "target", remeasure: bool = False
) -> dict:
    """`verify_cost_curve` over `Ts`, read from this machine's cache file when it has them all
    (`remeasure` measures again and overwrites). An unreadable or unwritable cache costs time."""
    path = _curve_path(config, params, what)
    if not remeasure and path.is_file():
        try:
            saved = json.loads(path.read_text())
            curve = {k: {int(T): v for T, v in saved[k].items()} for k in ("ms", "c")}
            if set(Ts) <= set(curve["ms"]):
                return curve
        except (OSError, ValueError, KeyError, AttributeError):
            pass
    curve = verify_cost_curve(config, params, Ts, repeats=7)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(curve, indent=1))
        tmp.replace(path)
    except OSError:
        pass
    return curve
