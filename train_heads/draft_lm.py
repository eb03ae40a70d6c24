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

Frequent-token head (`draft_vocab` > 0): the draft's head keeps only the target head's columns of
the `draft_vocab` tokens most frequent in the target's answers (FR-Spec, Zhao et al. 2025; EAGLE-3
drafts over a reduced vocabulary too). With SmolLM2 the full head is 28M of the target's 135M
parameters, so it would dominate a 2-layer draft's cost on a memory-bound CPU; 8192 columns cover
almost every answer token at 1/6 of the bytes. Tokens outside can never be drafted (no loss term).

On disk (`save_draft`): `model.safetensors` with only the draft's own tensors (stacked layers and
final norm, bfloat16, and `head_token_ids` when the head is reduced) and `draft_config.json` with
the config and the target's fingerprint.
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
from models.loading import Model
from models.transformer import LayerParams, ModelParams, init_params, lm_logits, sequence_hidden
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
    lm_head: jax.Array | None = None  # [D, V] (or [D, V'] with head_token_ids)
    pos_embed: jax.Array | None = None  # [max_positions, D]
    head_token_ids: jax.Array | None = None  # int32 [V'] frequent-token head


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


def frequent_tokens(tokens_NxS: np.ndarray, mask_NxS: np.ndarray, n: int, V: int) -> np.ndarray:
    """The n token ids most frequent among answer tokens (ties by id), sorted by id."""
    counts = np.bincount(tokens_NxS[mask_NxS].ravel(), minlength=V)
    top = np.argsort(-counts, kind="stable")[: min(n, V)]
    return np.sort(top).astype(np.int32)


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


def next_token_logits(config: ModelConfig, params: ModelParams, tokens_BxS: jax.Array) -> jax.Array:
    """float32 logits_BxSxV of a causal forward over whole sequences (no cache kept)."""
    return lm_logits(params, sequence_hidden(config, params, tokens_BxS))


def make_loss(config: ModelConfig):
    """loss(own, frozen, batch) -> (mean CE, sums): the TrainLoop contract (see train.py).

    Position s predicts tokens[s+1], counted where mask[s+1] (an answer token). `sums` holds
    count, loss (summed CE) and top1 (draft argmax == the target's token); an all-padding row
    adds nothing. With a frequent-token head, labels outside it add no CE (they cannot be drafted)
    but count as top1 misses, so top1 stays the acceptance proxy; `covered` is the head's share.
    """

    def loss(own: Trainable, frozen: Shared, batch: Batch):
        params = merge(cast(own, frozen.embed.dtype), frozen)  # fp32 master -> compute dtype
        logits_BxSxV = next_token_logits(config, params, batch.tokens[:, :-1])
        labels_BxS = batch.tokens[:, 1:]
        weight_BxS = batch.mask[:, 1:].astype(jnp.float32)
        covered_BxS = jnp.ones_like(weight_BxS)
        if frozen.head_token_ids is not None:  # target id -> head column (-1: not in the head)
            ids = frozen.head_token_ids
            column = jnp.full((config.V,), -1, jnp.int32).at[ids].set(jnp.arange(ids.shape[0]))
            labels_BxS = column[labels_BxS]
            covered_BxS = (labels_BxS >= 0).astype(jnp.float32)
            labels_BxS = jnp.maximum(labels_BxS, 0)
        label_logit_BxS = jnp.take_along_axis(logits_BxSxV, labels_BxS[..., None], axis=-1)[..., 0]
        ce_BxS = (jax.nn.logsumexp(logits_BxSxV, axis=-1) - label_logit_BxS) * covered_BxS
        hit_BxS = (jnp.argmax(logits_BxSxV, axis=-1) == labels_BxS) * covered_BxS
        count = weight_BxS.sum()
        sums = {
            "count": count,
            "loss": (ce_BxS * weight_BxS).sum(),
            "top1": (hit_BxS * weight_BxS).sum(),
            "covered": (covered_BxS * weight_BxS).sum(),
        }
        return sums["loss"] / jnp.maximum(count, 1.0), sums

    return loss


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
    if params.head_token_ids is not None:  # int32 ids, not weights: stored exactly
        tensors["head_token_ids"] = np.asarray(jax.device_get(params.head_token_ids), np.int32)
    tmp = path / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT})
    tmp.replace(path / WEIGHTS_FILE)
    meta = {
        "format": FORMAT,
        "config": config.to_dict(),
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
