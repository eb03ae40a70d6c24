"""Medusa (Cai et al. 2024): K heads guess the next K tokens from the target's hidden state at once,
and their top-k guesses fill a static tree that one target forward verifies.

Node (r_1, ..., r_d) of the tree (`specjax.static_tree`) holds head d-1's r_d-th best token: every
head reads the same hidden state, so a node's token does not depend on its parent's, only its
place does. The drafter has no state: the root and the hidden state that predicted it arrive with
the step (`DraftContext`). Top-k guesses are deterministic, so the exact policy's one-hot rule
keeps greedy output equal to vanilla and sampled output distributed as the target's; Medusa's own
typical acceptance is the engine's `--accept=typical` (approximate).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from models.medusa_heads import MedusaHeadsParams, column_tokens, heads_logits
from specjax.candidates import Candidates, DraftContext, Prefill, Verified
from specjax.static_tree import StaticTree


@dataclasses.dataclass(frozen=True)
class MedusaDrafter:
    """tree: the static tree (its depth at most the heads' number)."""

    tree: StaticTree

    @property
    def block_size(self) -> int:
        return self.tree.size

    def init(self, params: MedusaHeadsParams, prefill: Prefill, cache_len: int):
        return None

    def propose(self, params: MedusaHeadsParams, state, ctx: DraftContext, keys_B, sampling):
        logits = heads_logits(params, ctx.hidden.astype(params.lm_head.dtype))  # [B, K, V']
        _, columns = jax.lax.top_k(logits, self.tree.max_rank + 1)  # [B, K, R]
        guesses = column_tokens(params, columns)
        depth, rank = self.tree.depth[1:] - 1, self.tree.rank[1:]  # static, per draft node
        nodes = guesses[:, depth, rank].astype(jnp.int32)  # [B, T - 1]
        tokens = jnp.concatenate([ctx.root[:, None].astype(jnp.int32), nodes], axis=1)
        parent = jnp.broadcast_to(jnp.asarray(np.asarray(self.tree.parent)), tokens.shape)
        return Candidates(tokens=tokens, parent=parent), state

    def update(self, params: MedusaHeadsParams, state, verified: Verified):
        return state
