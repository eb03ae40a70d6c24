"""The per-layer copy of the layer weights: lossless, one copy per params object, and the engine's
CPU decode on it giving the stacked scan's tokens."""

from __future__ import annotations

import gc

import jax
import numpy as np
import pytest

from models import layer_layout
from models.config import ModelConfig
from models.layer_layout import for_decode, with_layer_list, without_layer_list
from models.skinny_matmul import PackedWeight, unpack
from models.transformer import LayerParams, init_params
from specjax import engine

CONFIG = ModelConfig(model_type="llama", V=96, D=32, L=3, Q=4, K=2, H=8, F=48, max_positions=128)


@pytest.mark.parametrize("pack", [False, True], ids=["plain", "packed"])
def test_the_layer_list_holds_each_layers_own_weights(pack):
    params = init_params(CONFIG, jax.random.key(0))
    split = with_layer_list(params, pack=pack)
    assert len(split.layer_list) == CONFIG.L and split.layers is params.layers
    assert split.layer_list[1].wqkv.shape == params.layers.wqkv.shape[1:]
    for i, layer in enumerate(split.layer_list):
        for name in LayerParams.__dataclass_fields__:
            a, b = getattr(layer, name), getattr(params.layers, name)
            assert isinstance(a, PackedWeight) == (pack and name in ("wqkv", "wo", "w_in", "w_out"))
            a = unpack(a) if isinstance(a, PackedWeight) else a
            np.testing.assert_array_equal(
                np.asarray(a), np.asarray(b[i]) if b is not None else None
            )
    if pack:
        head = params.embed.T if params.lm_head is None else params.lm_head
        np.testing.assert_array_equal(unpack(split.head_panels), np.asarray(head))
    else:
        assert split.head_panels is None
    assert with_layer_list(split) is split
    stacked = without_layer_list(split)
    assert stacked.layer_list is None and stacked.head_panels is None


def test_the_decode_copy_is_made_once_per_params_object_and_freed_with_it():
    params = init_params(CONFIG, jax.random.key(1))
    draft = {"model": init_params(CONFIG, jax.random.key(2)), "steps": np.int32(3)}
    first = for_decode((params, draft), on_cpu=True)
    again = for_decode((params, draft), on_cpu=True)
    assert first[0].layer_list is not None and first[1]["model"].layer_list is not None
    assert again[0].layer_list is first[0].layer_list
    assert again[1]["model"].layer_list is first[1]["model"].layer_list
    assert for_decode(params, on_cpu=False) is params
    held = len(layer_layout._COPIES)
    del params, draft, first, again
    gc.collect()
    assert len(layer_layout._COPIES) == held - 2


def test_cpu_decode_on_per_layer_weights_gives_the_scans_tokens(monkeypatch):
    params = init_params(CONFIG, jax.random.key(3))
    prompts = [[5, 9, 2, 7], [11, 3]]
    runs = {}
    for per_layer_on_cpu in (True, False):
        monkeypatch.setattr(engine, "PER_LAYER_ON_CPU", per_layer_on_cpu)
        runs[per_layer_on_cpu] = engine.generate(CONFIG, params, prompts, max_new_tokens=12).tokens
    assert runs[True] == runs[False]
    assert all(len(t) == 12 for t in runs[True])
