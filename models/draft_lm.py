"""A small draft LM for two-model speculative decoding: the target's own architecture made
shallow, sharing the target's frozen embedding and LM head, and its on-disk format.

The draft has the target's width, heads and vocabulary and `num_layers` blocks; sharing the
embedding and head keeps the vocabulary identical by construction and leaves only the blocks and
the final norm to learn (`train_heads.draft_lm` trains them). A frequent-token head
(`head_token_ids`) keeps only the columns of the tokens the target uses most (FR-Spec, Zhao et al.
2025).

On disk (`save_draft`): `model.safetensors` with only the draft's own tensors (stacked layers and
final norm, bfloat16, and `head_token_ids` when the head is reduced) and `draft_config.json` with
the config and the target's fingerprint (`models.fingerprint`). It lives with the models because
decoding loads it (`--draft=DIR`, the shipped draft) as much as training writes it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import struct

from models.config import ModelConfig
from models.errors import SpecjaxError
from models.fingerprint import check_fingerprint, target_fingerprint
from models.loading import Model
from models.params_file import write_weights_dir
from models.transformer import LayerParams, ModelParams, init_params

CONFIG_FILE = "draft_config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "specjax-draft-lm-v1"
SHARED_FROM_TARGET = ("embed", "lm_head", "pos_embed")


@struct.dataclass
class Trainable:
    """What the optimizer sees: the draft's blocks and final norm (bias for GPT-2)."""

    layers: LayerParams
    final_norm: jax.Array  # [D]
    final_norm_bias: jax.Array | None = None  # [D]


@struct.dataclass
class Shared:
    """The target's frozen tensors the draft reads: embedding, untied head, GPT-2 positions."""

    embed: jax.Array  # [V, D]
    lm_head: jax.Array | None = None  # [D, V] (or [D, V'] with head_token_ids)
    pos_embed: jax.Array | None = None  # [max_positions, D]
    head_token_ids: jax.Array | None = None  # int32 [V'] frequent-token head


def init_draft(
    target_config: ModelConfig,
    target_params: ModelParams,
    num_layers: int,
    key: jax.Array,
    from_target: bool = True,
    head_token_ids: np.ndarray | None = None,
) -> tuple[ModelConfig, ModelParams]:
    """(draft_config, draft_params): the target's first `num_layers` blocks and final norm, or
    random blocks (`from_target=False`); embedding and head are the target's own arrays (the head
    cut to `head_token_ids`' columns when given)."""
    if not 1 <= num_layers < target_config.L:
        raise SpecjaxError(
            f"draft_layers must be in [1, {target_config.L - 1}] (the target has "
            f"{target_config.L} layers), got {num_layers}"
        )
    config = dataclasses.replace(target_config, L=num_layers)
    if from_target:
        own = Trainable(
            layers=jax.tree.map(lambda x: x[:num_layers], target_params.layers),
            final_norm=target_params.final_norm,
            final_norm_bias=target_params.final_norm_bias,
        )
    else:
        fresh = init_params(config, key, dtype=target_params.dtype)
        own = trainable(fresh)
    frozen = shared(target_params)
    if head_token_ids is not None:
        frozen = reduce_head(frozen, head_token_ids)
    return config, merge(own, frozen)


def reduce_head(frozen: Shared, head_token_ids) -> Shared:
    """The head restricted to `head_token_ids` (int32 [V']), materialised once as [D, V']."""
    ids = jnp.asarray(head_token_ids, jnp.int32)
    full = frozen.embed.T if frozen.lm_head is None else frozen.lm_head  # [D, V]
    return frozen.replace(lm_head=jnp.take(full, ids, axis=1), head_token_ids=ids)


def trainable(params: ModelParams) -> Trainable:
    return Trainable(params.layers, params.final_norm, params.final_norm_bias)


def shared(params: ModelParams) -> Shared:
    return Shared(params.embed, params.lm_head, params.pos_embed, params.head_token_ids)


def merge(own: Trainable, frozen: Shared) -> ModelParams:
    """The full ModelParams the forward takes."""
    return ModelParams(
        embed=frozen.embed,
        layers=own.layers,
        final_norm=own.final_norm,
        lm_head=frozen.lm_head,
        final_norm_bias=own.final_norm_bias,
        pos_embed=frozen.pos_embed,
        head_token_ids=frozen.head_token_ids,
    )


def cast(own: Trainable, dtype) -> Trainable:
    return jax.tree.map(lambda x: x.astype(dtype), own)


def _named_tensors(own: Trainable) -> dict:
    """Flat safetensors names ("layers.wqkv", "final_norm") of the draft's own leaves."""
    out = {f"layers.{k}": v for k, v in vars(own.layers).items() if v is not None}
    out["final_norm"] = own.final_norm
    if own.final_norm_bias is not None:
        out["final_norm_bias"] = own.final_norm_bias
    return out


def save_draft(
    path: str | Path, config: ModelConfig, params: ModelParams, *, target_source: str = ""
) -> Path:
    """Writes the draft's own tensors (bfloat16) and its config + target identity to `path/`.

    `params` are the full draft params (as `merge` gives): the shared embedding/head identify the
    target in the fingerprint and are not written.
    """
    path = Path(path)
    tensors = {
        k: np.asarray(jax.device_get(v)).astype(ml_dtypes.bfloat16)
        for k, v in _named_tensors(trainable(params)).items()
    }
    if params.head_token_ids is not None:  # int32 ids, not weights: stored exactly
        tensors["head_token_ids"] = np.asarray(jax.device_get(params.head_token_ids), np.int32)
    meta = {
        "format": FORMAT,
        "config": config.to_dict(),
        "dtype": "bfloat16",
        "tensors": sorted(tensors),
        "shared_from_target": [n for n in SHARED_FROM_TARGET if getattr(params, n) is not None],
        "target": {"source": target_source, "fingerprint": target_fingerprint(config, params)},
    }
    return write_weights_dir(path, WEIGHTS_FILE, tensors, FORMAT, CONFIG_FILE, meta)


def is_draft_dir(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def load_draft(path: str | Path, target: Model) -> Model:
    """The draft saved at `path`, completed with `target`'s embedding and head.

    A missing or corrupt file, or a target other than the one the draft was trained for, is one
    SpecjaxError line. The draft's tensors take the target's dtype.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    cfg_file, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not cfg_file.is_file():
        raise SpecjaxError(f"{path} is not a saved draft: {CONFIG_FILE} is missing")
    if not weights.is_file():
        raise SpecjaxError(f"draft {path} is incomplete: {WEIGHTS_FILE} is missing")
    try:
        meta = json.loads(cfg_file.read_text())
        if meta.get("format") != FORMAT:
            raise SpecjaxError(f"{cfg_file} is not a specjax draft config (format {FORMAT})")
        config = ModelConfig.from_dict(meta["config"])
        recorded = meta["target"]["fingerprint"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise SpecjaxError(f"corrupt draft config {cfg_file}: {type(e).__name__}: {e}") from None
    check_fingerprint(recorded, target.config, target.params, f"draft {path}")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise SpecjaxError(f"corrupt or truncated draft weights {weights}: {e}") from None
    dtype = target.params.dtype
    abstract = jax.eval_shape(lambda: trainable(init_params(config, jax.random.key(0))))
    want = _named_tensors(abstract)

    def get(name):
        if name not in tensors:
            raise SpecjaxError(f"draft weights {weights} lack tensor {name}")
        if tuple(tensors[name].shape) != tuple(want[name].shape):
            raise SpecjaxError(
                f"draft tensor {name} has shape {tuple(tensors[name].shape)}, its config says "
                f"{tuple(want[name].shape)}"
            )
        return jnp.asarray(tensors[name], dtype=dtype)

    layer_names = [n.split(".", 1)[1] for n in want if n.startswith("layers.")]
    own = Trainable(
        layers=LayerParams(**{n: get(f"layers.{n}") for n in layer_names}),
        final_norm=get("final_norm"),
        final_norm_bias=get("final_norm_bias") if "final_norm_bias" in want else None,
    )
    frozen = shared(target.params)
    if "head_token_ids" in tensors:
        ids = np.asarray(tensors["head_token_ids"])
        if ids.ndim != 1 or ids.dtype != np.int32 or ids.min() < 0 or ids.max() >= config.V:
            raise SpecjaxError(f"draft weights {weights}: head_token_ids are not valid token ids")
        frozen = reduce_head(frozen, ids)
    params = merge(own, frozen)
    return Model(config=config, params=params, tokenizer=target.tokenizer, source=str(path))
