"""A small draft LM for two-model speculative decoding, trained against a frozen target.

The draft is the target's own architecture made shallow: same width, heads and vocabulary,
`num_layers` blocks, and the target's embedding and LM head *shared and frozen* (tied for SmolLM2).
Sharing them keeps the vocabulary identical by construction, leaves only the blocks and the final
norm to learn (a 2-layer SmolLM2 draft saves in about 14 MB of bfloat16), and starts the draft in
the target's token space.

Loss: cross-entropy on the target's own greedy answers (self-distillation). Greedy speculative
decoding accepts a drafted token iff it equals the target's argmax, so hard labels from the
target's greedy output train exactly what is tested, at the cost of one stored token per position
instead of a V-wide distribution; ReDrafter (Cheng et al. 2024, §4) found self-distilled data
about 10 % better for acceptance than the human text the target was trained on. The metric `top1`
(draft argmax == label) is the greedy acceptance proxy.

On disk (`save_draft`): `model.safetensors` with only the draft's own tensors (stacked layers and
final norm, bfloat16) and `draft_config.json` with the config and the target's fingerprint.
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

from models.config import ModelConfig, RopeScaling
from models.loading import Model
from models.transformer import LayerParams, ModelParams, hidden_states, init_params, lm_logits
from specjax.cache import init_cache
from specjax.errors import SpecjaxError
from train_heads.target import check_fingerprint, target_fingerprint

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
    lm_head: jax.Array | None = None  # [D, V]
    pos_embed: jax.Array | None = None  # [max_positions, D]


@struct.dataclass
class Batch:
    """tokens: int32 [B, S] prompt + answer, padded; mask: bool [B, S] True on answer tokens."""

    tokens: jax.Array
    mask: jax.Array


def init_draft(
    target_config: ModelConfig,
    target_params: ModelParams,
    num_layers: int,
    key: jax.Array,
    from_target: bool = True,
) -> tuple[ModelConfig, ModelParams]:
    """(draft_config, draft_params): the target's first `num_layers` blocks and final norm, or
    random blocks (`from_target=False`); embedding and head are the target's own arrays."""
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
    return config, merge(own, shared(target_params))


def trainable(params: ModelParams) -> Trainable:
    return Trainable(params.layers, params.final_norm, params.final_norm_bias)


def shared(params: ModelParams) -> Shared:
    return Shared(params.embed, params.lm_head, params.pos_embed)


def merge(own: Trainable, frozen: Shared) -> ModelParams:
    """The full ModelParams the forward takes."""
    return ModelParams(
        embed=frozen.embed,
        layers=own.layers,
        final_norm=own.final_norm,
        lm_head=frozen.lm_head,
        final_norm_bias=own.final_norm_bias,
        pos_embed=frozen.pos_embed,
    )


def cast(own: Trainable, dtype) -> Trainable:
    return jax.tree.map(lambda x: x.astype(dtype), own)


def next_token_logits(config: ModelConfig, params: ModelParams, tokens_BxS: jax.Array) -> jax.Array:
    """float32 logits_BxSxV of a causal forward over whole sequences (no cache kept)."""
    B, S = tokens_BxS.shape
    # A 1-slot cache of length 0: the forward attends only among the S tokens.
    cache = init_cache(config.L, B, config.K, 1, config.H, params.dtype)
    positions_BxS = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S))
    causal_BxSxS = jnp.broadcast_to(jnp.tril(jnp.ones((S, S), bool)), (B, S, S))
    hidden_BxSxD, _, _ = hidden_states(
        config, params, tokens_BxS, positions_BxS, cache, causal_BxSxS
    )
    return lm_logits(params, hidden_BxSxD)


def make_loss(config: ModelConfig):
    """loss(own, frozen, batch) -> (mean CE, sums): the TrainLoop contract (see train.py).

    Position s predicts tokens[s+1], counted where mask[s+1] (an answer token). `sums` holds
    count, loss (summed CE) and top1 (draft argmax == the target's token); an all-padding row
    adds nothing.
    """

    def loss(own: Trainable, frozen: Shared, batch: Batch):
        params = merge(cast(own, frozen.embed.dtype), frozen)  # fp32 master -> compute dtype
        logits_BxSxV = next_token_logits(config, params, batch.tokens[:, :-1])
        labels_BxS = batch.tokens[:, 1:]
        weight_BxS = batch.mask[:, 1:].astype(jnp.float32)
        label_logit_BxS = jnp.take_along_axis(logits_BxSxV, labels_BxS[..., None], axis=-1)[..., 0]
        ce_BxS = jax.nn.logsumexp(logits_BxSxV, axis=-1) - label_logit_BxS
        hit_BxS = (jnp.argmax(logits_BxSxV, axis=-1) == labels_BxS).astype(jnp.float32)
        count = weight_BxS.sum()
        sums = {
            "count": count,
            "loss": (ce_BxS * weight_BxS).sum(),
            "top1": (hit_BxS * weight_BxS).sum(),
        }
        return sums["loss"] / jnp.maximum(count, 1.0), sums

    return loss


def _config_to_json(config: ModelConfig) -> dict:
    return dataclasses.asdict(config)


def _config_from_json(d: dict) -> ModelConfig:
    d = dict(d)
    if d.get("rope_scaling") is not None:
        d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
    d["eos_token_ids"] = tuple(d.get("eos_token_ids", ()))
    return ModelConfig(**d)


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
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: np.asarray(jax.device_get(v)).astype(ml_dtypes.bfloat16)
        for k, v in _named_tensors(trainable(params)).items()
    }
    tmp = path / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT})
    tmp.replace(path / WEIGHTS_FILE)
    meta = {
        "format": FORMAT,
        "config": _config_to_json(config),
        "dtype": "bfloat16",
        "tensors": sorted(tensors),
        "shared_from_target": [n for n in SHARED_FROM_TARGET if getattr(params, n) is not None],
        "target": {"source": target_source, "fingerprint": target_fingerprint(config, params)},
    }
    tmp = path / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(path / CONFIG_FILE)
    return path


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
        config = _config_from_json(meta["config"])
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
    params = merge(own, shared(target.params))
    return Model(config=config, params=params, tokenizer=target.tokenizer, source=str(path))
