"""The decoder forward shared by every supported family: a pure function of params.

Llama-like models (Llama 2/3, Mistral, Qwen2, SmolLM2) and GPT-2 differ only in static choices
(norm, positions, MLP, biases), so one scanned block serves both. The layers' params are stacked on a
leading L axis and run with `lax.scan`, which keeps compile time flat in depth (DESIGN "The spine");
on CPU the decode loop gets them one array per layer instead (see `models.layer_layout`).

Weights are stored pre-laid-out for the dots: `wqkv` is [L, D, (Q+2K)*H] so the projection is one
plain matmul, the MLP input is one [D, 2F] matmul for SwiGLU. The forward does not write the cache:
it reads the cached prefix and returns the new keys and values, and `models.cache` writes them. That
keeps the attention a concatenation of two score blocks (prefix | new tokens) and never copies the
cache.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from models.cache import KVCache, init_cache
from models.config import ModelConfig
from models.errors import SpecjaxError
from models.skinny_matmul import PackedWeight
from models.skinny_matmul import matmul as skinny_matmul


@struct.dataclass
class LayerParams:
    """One transformer block's weights, stacked over layers (leading axis L).

    `ModelParams.layer_list` may hold the same weights again as a tuple of these without the L
    axis, one per layer (`models.layer_layout`): what the CPU decode's 1- and 2-token steps run on.

    GPT-2 uses every optional bias; Llama-like models only `bqkv` (Qwen2) and no norm biases.
    """

    attn_norm: jax.Array  # [L, D]
    wqkv: jax.Array  # [L, D, (Q+2K)*H]
    wo: jax.Array  # [L, Q*H, D]
    mlp_norm: jax.Array  # [L, D]
    w_in: jax.Array  # [L, D, 2F] (SwiGLU gate|up) or [L, D, F] (GPT-2)
    w_out: jax.Array  # [L, F, D]
    bqkv: jax.Array | None = None  # [L, (Q+2K)*H]
    attn_norm_bias: jax.Array | None = None  # [L, D]
    bo: jax.Array | None = None  # [L, D]
    mlp_norm_bias: jax.Array | None = None  # [L, D]
    b_in: jax.Array | None = None  # [L, F]
    b_out: jax.Array | None = None  # [L, D]


@struct.dataclass
class ModelParams:
    """All weights of a decoder. `lm_head` is None when tied to `embed`.

    `head_token_ids` is set only for a draft whose head covers a frequent-token subset of the
    vocabulary (V' columns, FR-Spec style): its logits are over V' and column j means token
    `head_token_ids[j]`. The head is then 1/6 of the full one, which is most of a small draft's cost.
    """

    embed: jax.Array  # [V, D]
    layers: LayerParams  # stacked [L, ...]
    final_norm: jax.Array  # [D]
    lm_head: jax.Array | None = None  # [D, V]
    final_norm_bias: jax.Array | None = None  # [D] (GPT-2)
    pos_embed: jax.Array | None = None  # [max_positions, D] (GPT-2)
    head_token_ids: jax.Array | None = None  # int32 [V'] (frequent-token draft head)
    layer_list: tuple[LayerParams, ...] | None = None  # `layers` one array per layer (CPU decode)
    head_panels: PackedWeight | None = None  # the LM head packed for few-row matmuls (CPU decode)

    @property
    def dtype(self) -> jnp.dtype:
        return self.embed.dtype


def _norm(config: ModelConfig, x, scale, bias=None):
    """RMSNorm (Llama) or LayerNorm (GPT-2), computed in float32 like the reference."""
    x32 = x.astype(jnp.float32)
    if config.is_gpt2:
        x32 = x32 - jnp.mean(x32, axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + config.norm_eps)
    y = y.astype(x.dtype) * scale
    return y if bias is None else y + bias


def _dense(x, w):
    """x @ w over the last axis: the few-row kernel when the CPU decode packed w, else XLA's dot."""
    if isinstance(w, PackedWeight):
        return skinny_matmul(x, w).astype(x.dtype)
    return jnp.einsum("...d,dn->...n", x, w)


def rope_inverse_frequencies(config: ModelConfig) -> np.ndarray:
    """[H/2] inverse frequencies, with Llama 3 / linear scaling applied (static, numpy)."""
    H = config.H
    inv = 1.0 / (config.rope_theta ** (np.arange(0, H, 2, dtype=np.float64) / H))
    s = config.rope_scaling
    if s is None:
        return inv.astype(np.float32)
    if s.rope_type == "linear":
        return (inv / s.factor).astype(np.float32)
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    scaled = np.where(wavelen > low_wavelen, inv / s.factor, inv)
    mid = (wavelen <= low_wavelen) & (wavelen >= high_wavelen)
    scaled = np.where(mid, (1 - smooth) * inv / s.factor + smooth * inv, scaled)
    return scaled.astype(np.float32)


def _apply_rope(x_BTNH, cos_BTH2, sin_BTH2):
    """Half rotation (HF layout): pairs (x[i], x[i + H/2])."""
    h2 = x_BTNH.shape[-1] // 2
    x1, x2 = x_BTNH[..., :h2], x_BTNH[..., h2:]
    c, s = cos_BTH2[:, :, None, :], sin_BTH2[:, :, None, :]
    out = jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
    return out.astype(x_BTNH.dtype)


def _attention(config, q_BTKGH, k_BTKH, v_BTKH, ck_BKSH, cv_BKSH, prefix_mask_BTS, new_mask_BTT):
    """Softmax over [cached prefix | new tokens] without concatenating keys (no cache copy).

    prefix_mask_BTS says which cached slots each new token sees; its T axis is 1 when every new
    token sees the same slots (decoding), and T when they differ (training-time rollouts).

    The prefix dots see the G query heads of a kv head and the T new tokens as one axis of G*T
    rows: a plain batched matmul over (b, k). On XLA:CPU that made a batch-32 decode step 1.3x
    faster than the same contraction with g and t apart (SmolLM2-135M, 322-slot cache, 2 cores).
    """
    B, T, K, G, H = q_BTKGH.shape
    scale = 1.0 / math.sqrt(config.H)
    f32 = jnp.float32
    q_BKQH = jnp.transpose(q_BTKGH, (0, 2, 3, 1, 4)).reshape(B, K, G * T, H)
    s_prefix = jnp.einsum("bkqh,bksh->bkqs", q_BKQH, ck_BKSH, preferred_element_type=f32)
    s_prefix = s_prefix.reshape(B, K, G, T, -1)
    s_new = jnp.einsum("btkgh,bukh->bkgtu", q_BTKGH, k_BTKH, preferred_element_type=f32)
    neg = jnp.finfo(f32).min
    s_prefix = jnp.where(prefix_mask_BTS[:, None, None, :, :], s_prefix * scale, neg)
    s_new = jnp.where(new_mask_BTT[:, None, None, :, :], s_new * scale, neg)
    m = jnp.maximum(s_prefix.max(-1, keepdims=True), s_new.max(-1, keepdims=True))
    p_prefix, p_new = jnp.exp(s_prefix - m), jnp.exp(s_new - m)
    denom = p_prefix.sum(-1, keepdims=True) + p_new.sum(-1, keepdims=True)
    dt = ck_BKSH.dtype
    p_BKQS = (p_prefix / denom).astype(dt).reshape(B, K, G * T, -1)
    out = jnp.einsum("bkqs,bksh->bkqh", p_BKQS, cv_BKSH).reshape(B, K, G, T, H)
    out = jnp.transpose(out, (0, 3, 1, 2, 4))
    out = out + jnp.einsum("bkgtu,bukh->btkgh", (p_new / denom).astype(dt), v_BTKH)
    return out


def hidden_states(
    config: ModelConfig,
    params: ModelParams,
    tokens_BT: jax.Array,
    positions_BT: jax.Array,
    cache: KVCache,
    attn_mask_BTT: jax.Array,
    feature_layers: tuple[int, ...] = (),
    inputs_BTD: jax.Array | None = None,
    prefix_mask_BTS: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array | None]:
    """Runs the blocks over T new tokens that follow each row's cached prefix.

    Args:
      tokens_BT, positions_BT: int32 new tokens and their absolute positions.
      cache: the prefix; row b attends to slots [0, cache.length[b]).
      attn_mask_BTT: bool, which new tokens each new token sees (causal for a chain,
        ancestor-or-self for a tree).
      feature_layers: static layer indices whose outputs are also returned (EAGLE-3-style heads
        read low, middle and high layers); empty: none, and the forward costs what it did.
      inputs_BTD: the blocks' input in place of the tokens' embeddings (tokens_BT may then be
        None): EAGLE-style drafters feed a projection of [next token's embedding, hidden state].
      prefix_mask_BTS: bool, which cached slots each new token sees, in place of every row's
        valid prefix [0, cache.length[b]) (a drafter trained on its own rollouts needs it).

    Returns:
      hidden_BTD after the final norm, the new keys/values k_LBTKH, v_LBTKH for the cache, and
      features_BTFD: the residual stream after each layer of `feature_layers` (before any final
      norm; transformers' `hidden_states[l + 1]`), or None when none were asked for.
    """
    B, T = positions_BT.shape
    Q, K, H, G = config.Q, config.K, config.H, config.G
    x = params.embed[tokens_BT] if inputs_BTD is None else inputs_BTD
    if config.is_gpt2:
        x = x + params.pos_embed[positions_BT]
        cos = sin = None
    else:
        inv = jnp.asarray(rope_inverse_frequencies(config))
        angles = positions_BT.astype(jnp.float32)[..., None] * inv  # [B, T, H/2]
        cos, sin = jnp.cos(angles), jnp.sin(angles)
    S = cache.k.shape[3]
    if prefix_mask_BTS is None:
        prefix_mask_BTS = (jnp.arange(S)[None, :] < cache.length[:, None])[:, None, :]

    def block(x_BTD, layer):
        p, ck_BKSH, cv_BKSH = layer
        h = _norm(config, x_BTD, p.attn_norm, p.attn_norm_bias)
        qkv = _dense(h, p.wqkv)
        if p.bqkv is not None:
            qkv = qkv + p.bqkv
        q = qkv[..., : Q * H].reshape(B, T, Q, H)
        k = qkv[..., Q * H : (Q + K) * H].reshape(B, T, K, H)
        v = qkv[..., (Q + K) * H :].reshape(B, T, K, H)
        if cos is not None:
            q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
        attn = _attention(
            config, q.reshape(B, T, K, G, H), k, v, ck_BKSH, cv_BKSH, prefix_mask_BTS, attn_mask_BTT
        )
        o = _dense(attn.reshape(B, T, Q * H), p.wo)
        if p.bo is not None:
            o = o + p.bo
        x_BTD = x_BTD + o
        h = _norm(config, x_BTD, p.mlp_norm, p.mlp_norm_bias)
        u = _dense(h, p.w_in)
        if config.is_gpt2:
            u = jax.nn.gelu(u + p.b_in, approximate=True)
        else:
            gate, up = u[..., : config.F], u[..., config.F :]
            u = jax.nn.silu(gate) * up
        m = _dense(u, p.w_out)
        if p.b_out is not None:
            m = m + p.b_out
        x_BTD = x_BTD + m
        return x_BTD, (k, v, x_BTD if feature_layers else None)

    for layer in feature_layers:
        if not 0 <= layer < config.L:
            raise SpecjaxError(f"feature layer {layer} is outside the model's {config.L} layers")
    if params.layer_list is not None and T <= per_layer_max_t(params):
        # Per-layer arrays (`models.layer_layout`): a Python loop, each dot reading its weights in
        # place. XLA:CPU copies every slice a scan takes of stacked weights before the dot, which
        # made the 1-token forward 1.4x slower; the price is a longer compile, paid only here.
        outs = []
        for i, p in enumerate(params.layer_list):
            x, out = block(x, (p, cache.k[i], cache.v[i]))
            outs.append(out)
        k_LBTKH = jnp.stack([o[0] for o in outs])
        v_LBTKH = jnp.stack([o[1] for o in outs])
        x_LBTD = jnp.stack([o[2] for o in outs]) if feature_layers else None
    else:
        # A rolled scan keeps compile time flat in depth; statically unrolling it over the stacked
        # weights measured 3-4x slower on XLA:CPU (every static slice is copied too).
        x, (k_LBTKH, v_LBTKH, x_LBTD) = jax.lax.scan(block, x, (params.layers, cache.k, cache.v))
    hidden = _norm(config, x, params.final_norm, params.final_norm_bias)
    features = None
    if feature_layers:
        features = jnp.moveaxis(x_LBTD[jnp.asarray(feature_layers)], 0, 2)  # [B, T, F, D]
    return hidden, k_LBTKH, v_LBTKH, features


# Up to this many new tokens the forward runs on `layer_list` when there is one. Measured on
# SmolLM2-135M, 2-core CPU: 30 vs 43 ms at T = 1, 39 vs 46 at T = 2, alike from T = 4 (the
# matrix-matrix kernel, not the copy, is the cost there), so longer blocks keep the scan's compile.
PER_LAYER_MAX_T = 2
# With the layer list packed for `models.skinny_matmul` the verify blocks of speculative methods
# run on it too: its kernel reads each weight once for any row count (the 120 layer matmuls of
# SmolLM2-135M took 25 vs 42 ms at T = 8, 37 vs 59 at T = 16 against XLA's dot).
PACKED_MAX_T = 32


def per_layer_max_t(params: ModelParams) -> int:
    """The longest block that runs on `params.layer_list` (0 when there is none)."""
    if params.layer_list is None:
        return 0
    packed = isinstance(params.layer_list[0].wqkv, PackedWeight)
    return PACKED_MAX_T if packed else PER_LAYER_MAX_T


def lm_logits(params: ModelParams, hidden_BTD: jax.Array) -> jax.Array:
    """float32 logits [B, T, V]; a tied head reuses the embedding without a transposed copy."""
    f32 = jnp.float32
    if params.head_panels is not None and hidden_BTD.shape[1] <= PACKED_MAX_T:
        return skinny_matmul(hidden_BTD, params.head_panels)
    if params.lm_head is None:
        return jnp.einsum("btd,vd->btv", hidden_BTD, params.embed, preferred_element_type=f32)
    return jnp.einsum("btd,dv->btv", hidden_BTD, params.lm_head, preferred_element_type=f32)


def forward(
    config: ModelConfig,
    params: ModelParams,
    tokens_BT: jax.Array,
    positions_BT: jax.Array,
    cache: KVCache,
    attn_mask_BTT: jax.Array,
) -> tuple[jax.Array, jax.Array, KVCache]:
    """The DESIGN contract: (logits_BTV, hidden_BTD, cache with the T entries appended)."""
    logits, hidden, _, new_cache = forward_with_features(
        config, params, tokens_BT, positions_BT, cache, attn_mask_BTT, ()
    )
    return logits, hidden, new_cache


def forward_with_features(
    config: ModelConfig,
    params: ModelParams,
    tokens_BT: jax.Array,
    positions_BT: jax.Array,
    cache: KVCache,
    attn_mask_BTT: jax.Array,
    feature_layers: tuple[int, ...],
) -> tuple[jax.Array, jax.Array, jax.Array | None, KVCache]:
    """`forward`, plus features_BTFD of `feature_layers` (None when empty; see `hidden_states`)."""
    hidden, k_new, v_new, features = hidden_states(
        config, params, tokens_BT, positions_BT, cache, attn_mask_BTT, feature_layers
    )
    return lm_logits(params, hidden), hidden, features, cache.append(k_new, v_new)


def sequence_hidden(config: ModelConfig, params: ModelParams, tokens_BS: jax.Array) -> jax.Array:
    """hidden_BSD (after the final norm) of a causal forward over whole sequences, no cache kept.

    Training and teacher-forced evaluation read every position of known sequences at once.
    """
    B, S = tokens_BS.shape
    # A 1-slot cache of length 0: the forward attends only among the S tokens.
    cache = init_cache(config.L, B, config.K, 1, config.H, params.dtype)
    positions_BS = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S))
    hidden_BSD, _, _, _ = hidden_states(
        config, params, tokens_BS, positions_BS, cache, causal_mask(B, S)
    )
    return hidden_BSD


def causal_mask(B: int, T: int) -> jax.Array:
    """[B, T, T] lower-triangular mask: a chain of new tokens."""
    return jnp.broadcast_to(jnp.tril(jnp.ones((T, T), bool)), (B, T, T))


def init_params(
    config: ModelConfig, key: jax.Array, dtype=jnp.float32, scale: float = 0.02
) -> ModelParams:
    """Random params in our layout: tiny test models and fresh draft models start here."""
    c = config
    keys = iter(jax.random.split(key, 16))

    def normal(*shape):
        return (scale * jax.random.normal(next(keys), shape)).astype(dtype)

    def near_one(*shape):
        return (1.0 + 0.1 * jax.random.normal(next(keys), shape)).astype(dtype)

    L, D, F, N = c.L, c.D, c.F, (c.Q + 2 * c.K) * c.H
    gpt2 = c.is_gpt2
    layers = LayerParams(
        attn_norm=near_one(L, D),
        wqkv=normal(L, D, N),
        wo=normal(L, c.Q * c.H, D),
        mlp_norm=near_one(L, D),
        w_in=normal(L, D, F if gpt2 else 2 * F),
        w_out=normal(L, F, D),
        bqkv=normal(L, N) if c.qkv_bias else None,
        attn_norm_bias=normal(L, D) if gpt2 else None,
        bo=normal(L, D) if gpt2 else None,
        mlp_norm_bias=normal(L, D) if gpt2 else None,
        b_in=normal(L, F) if gpt2 else None,
        b_out=normal(L, D) if gpt2 else None,
    )
    return ModelParams(
        embed=normal(c.V, D) * 50,  # unit-scale embeddings, as trained models have
        layers=layers,
        final_norm=near_one(D),
        lm_head=None if c.tie_word_embeddings else normal(D, c.V) * 50,
        final_norm_bias=normal(D) if gpt2 else None,
        pos_embed=normal(c.max_positions, D) if gpt2 else None,
    )
