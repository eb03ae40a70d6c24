"""Hugging Face checkpoints: config.json + safetensors (single file or sharded index) -> params.

`params_from_hf` is the one place that knows HF parameter names and layouts; the GGUF reader produces
the same names, so both formats go through it. Never unpickles: `.bin`/`.pt` weights are refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from models.config import ModelConfig
from models.transformer import LayerParams, ModelParams
from specjax.errors import SpecjaxError


def read_hf_dir(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Reads config.json and every safetensors shard of a directory into numpy (bf16 kept as bf16)."""
    path = Path(path)
    if not path.is_dir():
        raise SpecjaxError(f"checkpoint directory not found: {path}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise SpecjaxError(f"{path} has no config.json")
    try:
        hf_config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SpecjaxError(f"{config_file} is not valid JSON: {e}") from None
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError) as e:
            raise SpecjaxError(f"{index} is not a valid safetensors index: {e}") from None
        files = [path / s for s in shards]
    elif (path / "model.safetensors").is_file():
        files = [path / "model.safetensors"]
    else:
        pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = f" (found {pickled[0]}: pickled weights are never loaded)" if pickled else ""
        raise SpecjaxError(f"{path} has no model.safetensors or model.safetensors.index.json{hint}")
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        tensors.update(_read_safetensors(f))
    return hf_config, tensors


def _read_safetensors(file: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.flax import load_file

    if not file.is_file():
        raise SpecjaxError(f"missing safetensors shard: {file}")
    try:
        # The flax backend keeps bfloat16 (numpy has no bf16); convert to host numpy at once.
        return {k: np.asarray(v) for k, v in load_file(str(file)).items()}
    except (SafetensorError, OSError, ValueError) as e:
        raise SpecjaxError(f"corrupt or truncated safetensors file {file}: {e}") from None


def _stack(
    tensors: Mapping[str, np.ndarray], names: list[str], shape: tuple[int, ...]
) -> np.ndarray:
    """Stacks one named tensor per layer, checking every shape against the config."""
    out = []
    for n in names:
        if n not in tensors:
            raise SpecjaxError(f"checkpoint lacks tensor {n}")
        t = tensors[n]
        if tuple(t.shape) != shape:
            raise SpecjaxError(f"tensor {n} has shape {tuple(t.shape)}, config says {shape}")
        out.append(t)
    return np.stack(out)


def _get(tensors: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    return _stack(tensors, [name], shape)[0]


def params_from_hf(
    config: ModelConfig, tensors: Mapping[str, np.ndarray], dtype=jnp.float32
) -> ModelParams:
    """Converts HF-named weights ([out, in] Linear layout) into our stacked, dot-ready layout."""
    if config.is_gpt2:
        return _gpt2_params(config, tensors, dtype)
    c = config
    D, F, Q, K, H = c.D, c.F, c.Q, c.K, c.H
    pre = [f"model.layers.{i}." for i in range(c.L)]

    def per_layer(suffix, shape):
        return _stack(tensors, [p + suffix for p in pre], shape)

    wq = per_layer("self_attn.q_proj.weight", (Q * H, D))
    wk = per_layer("self_attn.k_proj.weight", (K * H, D))
    wv = per_layer("self_attn.v_proj.weight", (K * H, D))
    wqkv = np.concatenate([wq, wk, wv], axis=1).transpose(0, 2, 1)  # [L, D, (Q+2K)H]
    bqkv = None
    if c.qkv_bias:
        bqkv = np.concatenate(
            [
                per_layer("self_attn.q_proj.bias", (Q * H,)),
                per_layer("self_attn.k_proj.bias", (K * H,)),
                per_layer("self_attn.v_proj.bias", (K * H,)),
            ],
            axis=1,
        )
    gate = per_layer("mlp.gate_proj.weight", (F, D))
    up = per_layer("mlp.up_proj.weight", (F, D))
    layers = LayerParams(
        attn_norm=per_layer("input_layernorm.weight", (D,)),
        wqkv=wqkv,
        bqkv=bqkv,
        wo=per_layer("self_attn.o_proj.weight", (D, Q * H)).transpose(0, 2, 1),
        mlp_norm=per_layer("post_attention_layernorm.weight", (D,)),
        w_in=np.concatenate([gate, up], axis=1).transpose(0, 2, 1),  # [L, D, 2F]
        w_out=per_layer("mlp.down_proj.weight", (D, F)).transpose(0, 2, 1),  # [L, F, D]
    )
    embed = _get(tensors, "model.embed_tokens.weight", (c.V, D))
    lm_head = None
    if not c.tie_word_embeddings:
        lm_head = _get(tensors, "lm_head.weight", (c.V, D)).T
    params = ModelParams(
        embed=embed,
        layers=layers,
        final_norm=_get(tensors, "model.norm.weight", (D,)),
        lm_head=lm_head,
    )
    return _to_jax(params, dtype)


def _gpt2_params(c: ModelConfig, tensors: Mapping[str, np.ndarray], dtype) -> ModelParams:
    tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    D, F = c.D, c.F
    pre = [f"h.{i}." for i in range(c.L)]

    def per_layer(suffix, shape):
        return _stack(tensors, [p + suffix for p in pre], shape)

    layers = LayerParams(
        attn_norm=per_layer("ln_1.weight", (D,)),
        attn_norm_bias=per_layer("ln_1.bias", (D,)),
        wqkv=per_layer("attn.c_attn.weight", (D, 3 * D)),  # Conv1D is already [in, out]
        bqkv=per_layer("attn.c_attn.bias", (3 * D,)),
        wo=per_layer("attn.c_proj.weight", (D, D)),
        bo=per_layer("attn.c_proj.bias", (D,)),
        mlp_norm=per_layer("ln_2.weight", (D,)),
        mlp_norm_bias=per_layer("ln_2.bias", (D,)),
        w_in=per_layer("mlp.c_fc.weight", (D, F)),
        b_in=per_layer("mlp.c_fc.bias", (F,)),
        w_out=per_layer("mlp.c_proj.weight", (F, D)),
        b_out=per_layer("mlp.c_proj.bias", (D,)),
    )
    params = ModelParams(
        embed=_get(tensors, "wte.weight", (c.V, D)),
        pos_embed=_get(tensors, "wpe.weight", (c.max_positions, D)),
        layers=layers,
        final_norm=_get(tensors, "ln_f.weight", (D,)),
        final_norm_bias=_get(tensors, "ln_f.bias", (D,)),
    )
    return _to_jax(params, dtype)


def _to_jax(params: ModelParams, dtype) -> ModelParams:
    import jax

    return jax.tree.map(lambda x: jnp.asarray(np.ascontiguousarray(x), dtype=dtype), params)
