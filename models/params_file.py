"""A model's dot-ready params as one safetensors file of named leaves, and back.

Why: the weights cache (`models.derived_cache`) keeps the params exactly as `params_from_hf` lays
them out (stacked layers, fused and transposed projections), so a cached load is one read and one
copy to the device instead of the transposes that made loading slow. `LAYOUT` names that layout:
it is part of the cache key, so a change to `params_from_hf`'s output must bump it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from models.config import ModelConfig
from models.errors import SpecjaxError
from models.transformer import LayerParams, ModelParams, init_params

# The layout of `params_from_hf`'s output; bump with any change to it (shapes, fusions, names).
LAYOUT = "stacked-fused-v1"


def named_leaves(params: ModelParams) -> dict[str, jax.Array]:
    """{"embed": ..., "layers.wqkv": ..., ...}: every non-None leaf by its field path."""
    out = {}
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if isinstance(value, LayerParams):
            for g in dataclasses.fields(value):
                if getattr(value, g.name) is not None:
                    out[f"layers.{g.name}"] = getattr(value, g.name)
        elif value is not None:
            out[f.name] = value
    return out


def save_params(path: Path, params: ModelParams) -> None:
    """Writes the leaves as they are (host copies, their own dtypes)."""
    from safetensors.numpy import save_file

    arrays = {k: np.asarray(jax.device_get(v)) for k, v in named_leaves(params).items()}
    save_file(arrays, str(path), metadata={"layout": LAYOUT})


def load_params(path: Path, config: ModelConfig, dtype) -> ModelParams:
    """Reads what `save_params` wrote; floating leaves take `dtype`. Shapes are checked against
    `config` (a SpecjaxError names the first mismatch)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    try:
        with safe_open(str(path), "np") as f:
            layout = (f.metadata() or {}).get("layout")
        arrays = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise SpecjaxError(f"corrupt or truncated params file {path}: {e}") from None
    if layout != LAYOUT:
        raise SpecjaxError(f"{path} holds params in layout {layout!r}, not {LAYOUT!r}")
    want = named_leaves(_abstract_params(config))
    if set(arrays) != set(want):
        raise SpecjaxError(f"{path} has tensors {sorted(set(arrays) ^ set(want))} out of place")
    for name, spec in want.items():
        if arrays[name].shape != spec.shape:
            raise SpecjaxError(
                f"{path}: {name} has shape {arrays[name].shape}, the config says {spec.shape}"
            )

    def put(name):
        a = arrays.get(name)
        if a is None:
            return None
        return jnp.asarray(a, dtype=dtype if np.issubdtype(a.dtype, np.floating) else a.dtype)

    layers = LayerParams(
        **{g.name: put(f"layers.{g.name}") for g in dataclasses.fields(LayerParams)}
    )
    top = {f.name: put(f.name) for f in dataclasses.fields(ModelParams) if f.name != "layers"}
    return ModelParams(layers=layers, **top)


def _abstract_params(config: ModelConfig) -> ModelParams:
    """The shapes `params_from_hf` produces for `config`, without building any weights."""
    return jax.eval_shape(lambda: init_params(config, jax.random.key(0)))


def write_weights_dir(
    path: Path, weights_file: str, tensors: dict, fmt: str, config_file: str, meta: dict
) -> Path:
    """`tensors` (numpy) as safetensors and `meta` as JSON in directory `path`, each written
    under a temporary name and then renamed, the weights first: a config on disk always names
    finished weights (how trained drafts and heads are saved)."""
    import json

    from safetensors.numpy import save_file

    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (weights_file + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": fmt})
    tmp.replace(path / weights_file)
    tmp = path / (config_file + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(path / config_file)
    return path
