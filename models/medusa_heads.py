"""Medusa's draft heads (Cai et al. 2024): K small heads on the target's final-norm hidden state h,
head k predicting the token k + 2 places after h's position, all at once from the same h.

Head k is one residual block x + SiLU(A_k x + c_k) on h, then its own Linear(D -> V') LM head. The
block starts at zero (A = 0, c = 0) and the LM head as the target's own (its columns for a
frequent-token head), so an untrained head is exactly the target's next-token head: training
moves it from there to the tokens further ahead. V' < V keeps the `head_token_ids[j]` columns
only, as the other learned drafters may.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from models.transformer import ModelParams


@struct.dataclass
class MedusaHeadsParams:
    """K heads over width D with V' columns each."""

    res_w: jax.Array  # [K, D, D]
    res_b: jax.Array  # [K, D]
    lm_head: jax.Array  # [K, D, V']
    head_token_ids: jax.Array | None = None  # int32 [V'] (None: V' = V, column j is token j)

    @property
    def num_heads(self) -> int:
        return self.res_w.shape[0]

    @property
    def num_columns(self) -> int:
        return self.lm_head.shape[-1]


def target_head_columns(target: ModelParams, head_token_ids: jax.Array | None) -> jax.Array:
    """[D, V'] the target's LM head (its tied embedding when it has none), cut to the columns."""
    head_DV = target.embed.T if target.lm_head is None else target.lm_head
    return head_DV if head_token_ids is None else head_DV[:, head_token_ids]


def init_heads(
    target: ModelParams, num_heads: int = 4, head_token_ids: jax.Array | None = None
) -> MedusaHeadsParams:
    """K heads that each equal the target's next-token head (zero residual blocks)."""
    head_DV = target_head_columns(target, head_token_ids)
    D = head_DV.shape[0]
    return MedusaHeadsParams(
        res_w=jnp.zeros((num_heads, D, D), head_DV.dtype),
        res_b=jnp.zeros((num_heads, D), head_DV.dtype),
        lm_head=jnp.broadcast_to(head_DV, (num_heads, *head_DV.shape)).copy(),
        head_token_ids=head_token_ids,
    )


def heads_logits(params: MedusaHeadsParams, hidden_ND: jax.Array) -> jax.Array:
    """float32 [..., K, V']: every head's logits from the same hidden states (any leading N)."""
    K, D = params.num_heads, hidden_ND.shape[-1]
    x = jnp.broadcast_to(hidden_ND[..., None, :], (*hidden_ND.shape[:-1], K, D))
    x = x + jax.nn.silu(jnp.einsum("...kd,kde->...ke", x, params.res_w) + params.res_b)
    return jnp.einsum("...kd,kdv->...kv", x, params.lm_head, preferred_element_type=jnp.float32)


def column_tokens(params: MedusaHeadsParams, columns: jax.Array) -> jax.Array:
    """Target token ids of head columns."""
    return columns if params.head_token_ids is None else params.head_token_ids[columns]
