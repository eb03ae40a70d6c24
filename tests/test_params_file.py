"""Params written by `save_params` read back exactly, and a file that does not fit its config is
one SpecjaxError."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from models.config import ModelConfig
from models.errors import SpecjaxError
from models.params_file import LAYOUT, load_params, named_leaves, save_params
from models.transformer import init_params

LLAMA = ModelConfig("qwen2", V=64, D=16, L=2, F=24, Q=4, K=2, H=4, qkv_bias=True)
GPT2 = ModelConfig(
    "gpt2",
    V=64,
    D=16,
    L=2,
    F=32,
    Q=4,
    K=4,
    H=4,
    qkv_bias=True,
    max_positions=32,
    tie_word_embeddings=True,
)


@pytest.mark.parametrize("config", [LLAMA, GPT2], ids=["qwen2_untied", "gpt2"])
def test_round_trip(tmp_path, config):
    params = init_params(config, jax.random.key(0))
    save_params(tmp_path / "p.safetensors", params)
    back = load_params(tmp_path / "p.safetensors", config, jnp.float32)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for name, leaf in named_leaves(params).items():
        np.testing.assert_array_equal(named_leaves(back)[name], leaf, err_msg=name)


def test_loads_in_another_dtype(tmp_path):
    params = init_params(LLAMA, jax.random.key(0))
    save_params(tmp_path / "p.safetensors", params)
    back = load_params(tmp_path / "p.safetensors", LLAMA, jnp.bfloat16)
    assert {leaf.dtype for leaf in jax.tree.leaves(back)} == {jnp.dtype(jnp.bfloat16)}


def test_wrong_config_is_one_line(tmp_path):
    save_params(tmp_path / "p.safetensors", init_params(LLAMA, jax.random.key(0)))
    with pytest.raises(SpecjaxError, match="has shape"):
        load_params(tmp_path / "p.safetensors", dataclasses.replace(LLAMA, D=32), jnp.float32)
    with pytest.raises(SpecjaxError, match="out of place"):
        load_params(tmp_path / "p.safetensors", GPT2, jnp.float32)


def test_other_layout_is_refused(tmp_path):
    arrays = {
        k: np.asarray(v) for k, v in named_leaves(init_params(LLAMA, jax.random.key(0))).items()
    }
    save_file(arrays, str(tmp_path / "p.safetensors"), metadata={"layout": "something-else"})
    with pytest.raises(SpecjaxError, match=f"not '{LAYOUT}'"):
        load_params(tmp_path / "p.safetensors", LLAMA, jnp.float32)


def test_truncated_file(tmp_path):
    save_params(tmp_path / "p.safetensors", init_params(LLAMA, jax.random.key(0)))
    data = (tmp_path / "p.safetensors").read_bytes()
    (tmp_path / "p.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(SpecjaxError, match="corrupt or truncated"):
        load_params(tmp_path / "p.safetensors", LLAMA, jnp.float32)
