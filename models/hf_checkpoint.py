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
from models.errors import SpecjaxError
from models.transformer import LayerParams, ModelParams


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


def _checked(tensors: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in tensors:
        raise SpecjaxError(f"checkpoint lacks tensor {name}")
    t = tensors[name]
    if tuple(t.shape) != shape:
        raise SpecjaxError(f"tensor {name} has shape {tuple(t.shape)}, config says {shape}")
    return t


def _layers(
    tensors: Mapping[str, np.ndarray],
    prefixes: list[str],
    parts: list[tuple[str, tuple[int, ...]]],
    transpose: bool = False,
) -> np.ndarray:
    """[L, ...]: each layer's `parts` joined along their first axis, optionally transposed.

    Written straight into one array: stacking, concatenating and transposing separately copied
    the weights three times, which was most of a load (fresh host memory is slow to touch).
    """
    rows = sum(shape[0] for _, shape in parts)
    inner = parts[0][1][1:]
    first = _checked(tensors, prefixes[0] + parts[0][0], parts[0][1])
    shape = (len(prefixes), *inner, rows) if transpose else (len(prefixes), rows, *inner)
    out = np.empty(shape, dtype=first.dtype)
    for i, prefix in enumerate(prefixes):
        r = 0
        for suffix, part_shape in parts:
            t = _checked(tensors, prefix + suffix, part_shape)
            if transpose:
                out[i, ..., r : r + part_shape[0]] = t.T
            else:
                out[i, r : r + part_shape[0]] = t
            r += part_shape[0]
    return out


def params_from_hf(
    config: ModelConfig, tensors: Mapping[str, np.ndarray], dtype=jnp.float32
) -> ModelParams:
    """Converts HF-named weights ([out, in] Linear layout) into our stacked, dot-ready layout."""
    if config.is_gpt2:
        return _gpt2_params(config, tensors, dtype)
    c = config
    D, F, Q, K, H = c.D, c.F, c.Q, c.K, c.H
    pre = [f"model.layers.{i}." for i in range(c.L)]

    def per_layer(*parts, transpose=False):
        return _layers(tensors, pre, list(parts), transpose)

    qkv = ("q", Q * H), ("k", K * H), ("v", K * H)
    bqkv = None
    if c.qkv_bias:
        bqkv = per_layer(*[(f"self_attn.{x}_proj.bias", (n,)) for x, n in qkv])
    layers = LayerParams(
        attn_norm=per_layer(("input_layernorm.weight", (D,))),
        wqkv=per_layer(  # [L, D, (Q+2K)H]
            *[(f"self_attn.{x}_proj.weight", (n, D)) for x, n in qkv], transpose=True
        ),
        bqkv=bqkv,
        wo=per_layer(("self_attn.o_proj.weight", (D, Q * H)), transpose=True),
        mlp_norm=per_layer(("post_attention_layernorm.weight", (D,))),
        w_in=per_layer(  # [L, D, 2F]: gate | up
            ("mlp.gate_proj.weight", (F, D)), ("mlp.up_proj.weight", (F, D)), transpose=True
        ),
        w_out=per_layer(("mlp.down_proj.weight", (D, F)), transpose=True),  # [L, F, D]
    )
    embed = _checked(tensors, "model.embed_tokens.weight", (c.V, D))
    lm_head = None
    if not c.tie_word_embeddings:
        lm_head = _checked(tensors, "lm_head.weight", (c.V, D)).T
    params = ModelParams(
        embed=embed,
        layers=layers,
        final_norm=_checked(tensors, "model.norm.weight", (D,)),
        lm_head=lm_head,
    )
    return _to_jax(params, dtype)


def _gpt2_params(c: ModelConfig, tensors: Mapping[str, np.ndarray], dtype) -> ModelParams:
    tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    D, F = c.D, c.F
    pre = [f"h.{i}." for i in range(c.L)]

    def per_layer(suffix, shape):
        return _layers(tensors, pre, [(suffix, shape)])

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
        embed=_checked(tensors, "wte.weight", (c.V, D)),
        pos_embed=_checked(tensors, "wpe.weight", (c.max_positions, D)),
        layers=layers,
        final_norm=_checked(tensors, "ln_f.weight", (D,)),
        final_norm_bias=_checked(tensors, "ln_f.bias", (D,)),
    )
    return _to_jax(params, dtype)


def _to_jax(params: ModelParams, dtype) -> ModelParams:
    import jax

    return jax.tree.map(lambda x: jnp.asarray(np.ascontiguousarray(x), dtype=dtype), params)
