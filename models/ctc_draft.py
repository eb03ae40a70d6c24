"""The CTC drafter's draft module (Wen et al. 2024, after EAGLE-1: Li et al. 2024): one decoder
layer over the target's own hidden states, drafting the next tokens one frame at a time.

At context position j the input is fc([e(x_{j+1}), h_j]): the target's frozen embedding of the
next token next to the target's final-norm hidden state at j (Linear(2D -> D) with bias). One
Llama decoder layer (causal, its own KV cache over the context) and a final RMSNorm give the
frame's feature f_j, trained to be the target's next hidden state h_{j+1}; the target's frozen LM
head over f_j (or its frequent-token columns) gives the frame's logits, plus one extra class: the
CTC blank, a trainable row of its own (the released code reuses `<unk>` as the blank; this does
not). Drafting feeds a frame's own feature and its best non-blank token back in as the next
input, so the frames are a chain (`specjax.drafters.ctc`).

The trained part (`CTCDraftHead`) is what is saved; the frozen embedding and head columns are
taken from the target when the drafter is built (`attach`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import struct

from models.cache import KVCache
from models.config import ModelConfig
from models.errors import SpecjaxError
from models.medusa_heads import target_head_columns
from models.transformer import LayerParams, ModelParams, causal_mask, hidden_states

# The layer's weights as saved: LayerParams fields with a leading axis of 1.
LAYER_FIELDS = ("attn_norm", "wqkv", "wo", "mlp_norm", "w_in", "w_out")
WEIGHT_NAMES = ("fc_w", "fc_b", *LAYER_FIELDS, "final_norm", "blank_w", "blank_b")


@struct.dataclass
class CTCDraftHead:
    """The trained weights: fc, one decoder layer, the final norm and the blank class."""

    fc_w: jax.Array  # [2D, D], input rows: embedding first, then hidden state
    fc_b: jax.Array  # [D]
    attn_norm: jax.Array  # [1, D]
    wqkv: jax.Array  # [1, D, (Q+2K)*H]
    wo: jax.Array  # [1, Q*H, D]
    mlp_norm: jax.Array  # [1, D]
    w_in: jax.Array  # [1, D, 2F]
    w_out: jax.Array  # [1, F, D]
    final_norm: jax.Array  # [D]
    blank_w: jax.Array  # [D]
    blank_b: jax.Array  # [1]
    head_token_ids: jax.Array | None = None  # int32 [V'] (None: every token is a column)


@struct.dataclass
class CTCDraftParams:
    """A head with the target's frozen parts it reads: the embedding and the LM-head columns."""

    head: CTCDraftHead
    embed: jax.Array  # [V, D]
    head_columns: jax.Array  # [D, V']

    @property
    def blank(self) -> int:
        """The blank's column: after the V' token columns."""
        return self.head_columns.shape[1]


def shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every trained tensor's shape for a target of this config."""
    c = config
    N = (c.Q + 2 * c.K) * c.H
    return {
        "fc_w": (2 * c.D, c.D),
        "fc_b": (c.D,),
        "attn_norm": (1, c.D),
        "wqkv": (1, c.D, N),
        "wo": (1, c.Q * c.H, c.D),
        "mlp_norm": (1, c.D),
        "w_in": (1, c.D, 2 * c.F),
        "w_out": (1, c.F, c.D),
        "final_norm": (c.D,),
        "blank_w": (c.D,),
        "blank_b": (1,),
    }


def draft_config(target_config: ModelConfig) -> ModelConfig:
    """The layer's config: the target's widths, one layer, no biases."""
    if target_config.is_gpt2:
        raise SpecjaxError("the CTC drafter needs a Llama-like target (RMSNorm, RoPE, SwiGLU)")
    return dataclasses.replace(target_config, L=1, qkv_bias=False)


def init_ctc_head(
    target_config: ModelConfig,
    target_params: ModelParams,
    key: jax.Array,
    head_token_ids: jax.Array | None = None,
    scale: float = 0.02,
    matched_token: bool = False,
) -> CTCDraftHead:
    """A fresh head: small random layer weights, fc starting as the identity on the hidden state
    (so the first frame begins as the target's own next-token guess), norms as the target's.

    `matched_token`: fc's token rows start as a random projection that carries the token's
    embedding at the hidden state's scale (about the final norm's weights, RMS 1.8 on SmolLM2
    against the embedding's 0.14), not at `scale`, where the token enters the layer ten times
    smaller than the hidden state it must be read against."""
    c = draft_config(target_config)
    want = shapes(c)
    keys = iter(jax.random.split(key, 8))
    dtype = jnp.float32

    def normal(name):
        return scale * jax.random.normal(next(keys), want[name], dtype)

    D = c.D
    token_rows = normal("fc_w")[:D]
    if matched_token:
        rms = lambda a: jnp.sqrt(jnp.mean(jnp.square(a.astype(dtype))))  # noqa: E731
        gain = rms(target_params.final_norm) / rms(target_params.embed)
        token_rows = token_rows / scale * gain / math.sqrt(D)
    fc_w = jnp.concatenate([token_rows, jnp.eye(D, dtype=dtype)], axis=0)
    last = jax.tree.map(lambda x: x[-1:].astype(dtype), target_params.layers)
    return CTCDraftHead(
        fc_w=fc_w,
        fc_b=jnp.zeros((D,), dtype),
        attn_norm=last.attn_norm,
        wqkv=normal("wqkv"),
        wo=normal("wo"),
        mlp_norm=last.mlp_norm,
        w_in=normal("w_in"),
        w_out=normal("w_out"),
        final_norm=target_params.final_norm.astype(dtype),
        blank_w=jnp.zeros((D,), dtype),
        blank_b=jnp.zeros((1,), dtype),
        head_token_ids=head_token_ids,
    )


def attach(head: CTCDraftHead, target_params: ModelParams) -> CTCDraftParams:
    """The drafter's params: the head with the target's embedding and LM-head columns."""
    dtype = head.fc_w.dtype
    return CTCDraftParams(
        head=head,
        embed=target_params.embed,
        head_columns=target_head_columns(target_params, head.head_token_ids).astype(dtype),
    )


def _layer_model(params: CTCDraftParams) -> ModelParams:
    h = params.head
    layers = LayerParams(**{n: getattr(h, n) for n in LAYER_FIELDS})
    return ModelParams(embed=params.embed, layers=layers, final_norm=h.final_norm)


def frame_features(
    config: ModelConfig,
    params: CTCDraftParams,
    hidden_BTD: jax.Array,
    next_tokens_BT: jax.Array,
    positions_BT: jax.Array,
    cache: KVCache,
    attn_mask_BTT: jax.Array,
    prefix_mask_BTS: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(features_BTD, k, v): the frames after the cached context for inputs (h_j, x_{j+1}).

    config is `draft_config(target)`; hidden_BTD the target's hidden states (or the draft's own
    features, when drafting ahead), next_tokens_BT the tokens that follow them; prefix_mask_BTS
    (optional) which cached slots each frame sees (`models.transformer.hidden_states`).
    """
    h = params.head
    dtype = h.fc_w.dtype
    x = jnp.concatenate(
        [params.embed[next_tokens_BT].astype(dtype), hidden_BTD.astype(dtype)], axis=-1
    )
    x = jnp.einsum("bte,ed->btd", x, h.fc_w) + h.fc_b
    features, k, v, _ = hidden_states(
        config,
        _layer_model(params),
        None,
        positions_BT,
        cache,
        attn_mask_BTT,
        inputs_BTD=x,
        prefix_mask_BTS=prefix_mask_BTS,
    )
    return features, k, v


def frame_logits(params: CTCDraftParams, features_BTD: jax.Array) -> jax.Array:
    """float32 [B, T, V' + 1]: the token columns, then the blank (column `params.blank`)."""
    f32 = jnp.float32
    f = features_BTD.astype(params.head_columns.dtype)
    tokens = jnp.einsum("btd,dv->btv", f, params.head_columns, preferred_element_type=f32)
    blank = jnp.einsum("btd,d->bt", f, params.head.blank_w, preferred_element_type=f32)
    blank = blank + params.head.blank_b[0].astype(f32)
    return jnp.concatenate([tokens, blank[..., None]], axis=-1)


def column_tokens(params: CTCDraftParams, columns: jax.Array) -> jax.Array:
    """Target token ids of token columns (the blank column maps past the table: callers mask it)."""
    ids = params.head.head_token_ids
    safe = jnp.minimum(columns, params.blank - 1)
    return safe if ids is None else ids[safe]


def draft_chain(
    config: ModelConfig,
    params: CTCDraftParams,
    hidden_BD: jax.Array,
    root_B: jax.Array,
    cache: KVCache,
    depth: int,
) -> jax.Array:
    """float32 [depth, B, V' + 1]: the logits of `depth` frames drafted after the cached context
    from (the hidden state before the root, the root), each next frame reading the last one's
    feature and its best non-blank token (top-1 chaining). The cache is extended only locally."""
    B = root_B.shape[0]
    hidden, token, out = hidden_BD[:, None], root_B[:, None], []
    for _ in range(depth):
        f, k, v = frame_features(
            config, params, hidden, token, cache.length[:, None], cache, causal_mask(B, 1)
        )
        cache = cache.append(k, v)
        out.append(frame_logits(params, f)[:, 0])
        hidden = f
        token = column_tokens(params, jnp.argmax(out[-1][:, : params.blank], axis=-1))[:, None]
    return jnp.stack(out)
