"""ReDrafter's draft head (Cheng et al. 2024): a small recurrent network on the target's own hidden
state, so it predicts the target's next tokens from what the target already computed.

The head has three parts:
- The RNN state after draft token x is s = SiLU(W e(x) + U s_prev + b), with s_0 = 0. W has no bias,
  U has the bias b, and e is the target's frozen input embedding: the head owns no embedding table.
- The input [h, s] (2D wide), where h is the target's final-norm hidden state at the last accepted
  position, goes through R residual blocks x + SiLU(A x + c) at width 2D.
- A bias-free Linear(2D -> V') gives the logits. V' < V is a frequent-token head whose column j means
  token `head_token_ids[j]`; V' is a trade of acceptance for speed, the same as the shipped draft
  LM's head.

Before the log-softmax the logits are cut to their top `top_k` (50 in the original): beam search only
ever extends a beam by a few of its best tokens. The cut only shapes the drafts. Verification
judges them against the target itself, so it never changes what is emitted.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

LOG_ZERO = -50000.0  # a filtered-out token's logit: finite, so sums of scores stay ordered
TOP_K = 50


@struct.dataclass
class RecurrentHeadParams:
    """Weights of one head (D: the target's width, V': its head's columns, R: residual blocks)."""

    rnn_w: jax.Array  # [D, D] embedding of the previous draft token -> state (no bias)
    rnn_u: jax.Array  # [D, D] previous state -> state
    rnn_b: jax.Array  # [D]
    res_w: jax.Array  # [R, 2D, 2D]
    res_b: jax.Array  # [R, 2D]
    lm_head: jax.Array  # [2D, V']
    head_token_ids: jax.Array | None = None  # int32 [V'] (None: V' = V, column j is token j)

    @property
    def num_columns(self) -> int:
        return self.lm_head.shape[1]


def init_head(
    key: jax.Array,
    D: int,
    V: int,
    num_res: int = 2,
    head_token_ids: jax.Array | None = None,
    dtype=jnp.float32,
) -> RecurrentHeadParams:
    """A fresh head with small random weights. The residual blocks start near the identity, so the
    untrained head is already a plain linear head on [h, s]."""
    cols = V if head_token_ids is None else int(head_token_ids.shape[0])
    k = jax.random.split(key, 4)

    def normal(key, shape, scale):
        return (scale * jax.random.normal(key, shape)).astype(dtype)

    return RecurrentHeadParams(
        rnn_w=normal(k[0], (D, D), D**-0.5),
        rnn_u=normal(k[1], (D, D), D**-0.5),
        rnn_b=jnp.zeros((D,), dtype),
        res_w=normal(k[2], (num_res, 2 * D, 2 * D), 0.02),
        res_b=jnp.zeros((num_res, 2 * D), dtype),
        lm_head=normal(k[3], (2 * D, cols), (2 * D) ** -0.5),
        head_token_ids=head_token_ids,
    )


def rnn_step(params: RecurrentHeadParams, state_ND: jax.Array, token_embed_ND: jax.Array):
    """The state after one more draft token (any leading shape N)."""
    return jax.nn.silu(token_embed_ND @ params.rnn_w + state_ND @ params.rnn_u + params.rnn_b)


def head_logits(params: RecurrentHeadParams, hidden_ND: jax.Array, state_ND: jax.Array):
    """float32 logits [..., V'] of the token after the state's last one."""
    x = jnp.concatenate([hidden_ND, state_ND.astype(hidden_ND.dtype)], axis=-1)

    def block(x, wb):
        w, b = wb
        return x + jax.nn.silu(x @ w + b), None

    x, _ = jax.lax.scan(block, x, (params.res_w, params.res_b))
    return jnp.einsum("...d,dv->...v", x, params.lm_head, preferred_element_type=jnp.float32)


def head_log_probs(
    params: RecurrentHeadParams, hidden_ND, state_ND, top_k: int = TOP_K
) -> jax.Array:
    """log-softmax over V' of the logits cut to their `top_k` best (the rest LOG_ZERO)."""
    logits = head_logits(params, hidden_ND, state_ND)
    logits = logits - jnp.max(logits, axis=-1, keepdims=True)
    k = min(top_k, logits.shape[-1])
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    logits = jnp.where(logits < kth, LOG_ZERO, logits)
    return jax.nn.log_softmax(logits, axis=-1)


def column_tokens(params: RecurrentHeadParams, columns: jax.Array) -> jax.Array:
    """Target token ids of head columns."""
    return columns if params.head_token_ids is None else params.head_token_ids[columns]
