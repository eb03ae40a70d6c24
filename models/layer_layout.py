"""The layer weights a second time, one array per layer, for the CPU decode's short forwards.

Stacked [L, ...] weights are the stored, trained and sharded layout: one `lax.scan`, compile time
flat in depth, one sharding rule per weight. But on XLA:CPU a scan's slice of a stacked weight is
copied before the dot reads it, so a 1-token step moves the layer weights three times instead of
once: SmolLM2-135M's T = 1 forward took 43 ms scanned and 30 ms on per-layer arrays (2-core CPU,
fp32). `ModelParams.layer_list` carries those arrays next to the stacked ones, and the forward uses
them for T <= `models.transformer.PER_LAYER_MAX_T` (the vanilla step, a drafter's short forwards);
prefill and longer verify blocks keep the scan and its short compile.

The decode engine adds the list on CPU, once per params object (kept while that object lives): it
costs a second copy of the layer weights in memory. TPU and GPU keep the scan alone.

Where `models.skinny_matmul` builds (x86-64 with AVX2/FMA and a C++ compiler, float32 weights), the
list holds the matmul weights packed for its few-row kernel, and the LM head is packed too
(`ModelParams.head_panels`, one more copy of the head): the forward then runs blocks of up to
`PACKED_MAX_T` tokens, a speculative step's verify, on them.
"""

from __future__ import annotations

import collections
import weakref

import jax
import jax.numpy as jnp

from models import skinny_matmul
from models.transformer import ModelParams

_MATMULS = ("wqkv", "wo", "w_in", "w_out")


def with_layer_list(params: ModelParams, pack: bool | None = None) -> ModelParams:
    """params with `layer_list` set: L LayerParams, each array its own buffer, and the matmul
    weights and LM head packed for `models.skinny_matmul` when `pack` (default: where it builds)."""
    if params.layer_list is not None:
        return params
    if pack is None:
        pack = params.dtype == jnp.float32 and skinny_matmul.available()
    L = params.layers.attn_norm.shape[0]
    layers = []
    for i in range(L):
        # Slicing outside jit gives each layer a buffer of its own (inside jit it would be a view).
        layer = jax.tree.map(lambda a, i=i: jnp.array(a[i]), params.layers)
        if pack:
            packed = {name: skinny_matmul.pack(getattr(layer, name)) for name in _MATMULS}
            layer = layer.replace(**packed)
        layers.append(layer)
    head_panels = None
    if pack:
        head = params.embed.T if params.lm_head is None else params.lm_head  # [D, V]
        head_panels = skinny_matmul.pack(head)
    return params.replace(layer_list=tuple(layers), head_panels=head_panels)


def without_layer_list(params: ModelParams) -> ModelParams:
    """The stacked weights alone (every forward scanned)."""
    return params.replace(layer_list=None, head_panels=None)


# Layer lists by the id of the original's first stacked weight, most recent last. Each entry holds
# a weak reference to that weight and nothing else of the original: when the caller drops its params
# the copy goes too.
_COPIES: collections.OrderedDict = collections.OrderedDict()
MAX_COPIES = 4


def _cached(params: ModelParams) -> ModelParams:
    anchor = params.layers.attn_norm
    key = id(anchor)
    hit = _COPIES.get(key)
    if hit is not None and hit[0]() is anchor:
        _COPIES.move_to_end(key)
        return params.replace(layer_list=hit[1], head_panels=hit[2])
    split = with_layer_list(params)
    layer_list, head_panels = split.layer_list, split.head_panels
    _COPIES[key] = (weakref.ref(anchor), layer_list, head_panels)
    weakref.finalize(anchor, _COPIES.pop, key, None)
    while len(_COPIES) > MAX_COPIES:
        _COPIES.popitem(last=False)
    return params.replace(layer_list=layer_list, head_panels=head_panels)


def for_decode(tree, on_cpu: bool):
    """Every ModelParams in `tree` (a target's params, a drafter's params pytree) as the decode
    runs it: with its layer list on CPU (made once per params object), as given elsewhere."""
    if not on_cpu:
        return tree

    def convert(x):
        if isinstance(x, ModelParams) and x.layer_list is None:
            return _cached(x)
        return x

    return jax.tree.map(convert, tree, is_leaf=lambda x: isinstance(x, ModelParams))
