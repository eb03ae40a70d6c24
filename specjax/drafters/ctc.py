"""The CTC drafter (Wen et al. 2024): an EAGLE-style one-layer draft module over the target's
hidden states (`models.ctc_draft`) drafts a chain of frames, each frame's top-k guesses fill a
static tree (`specjax.static_tree`, Medusa's layout: node (r_1, ..., r_d) holds frame d's r_d-th
best guess), and CTC's collapse (`specjax.ctc_collapse`) turns every path of frames into the
tokens it stands for before one target forward verifies the tree.

Frame 1 reads (the target's hidden state before the root, the root); frame d + 1 reads frame d's
own feature and its best non-blank token (the released code's `topK_genrate`: top-1 chaining).
The draft keeps its own KV cache over the context: after each verification it is extended with
the accepted path's pairs (target hidden state, next token), the hidden states the target just
computed for the block (`Verified.hidden`), so the draft always attends over the target's own
states and never over its guesses.

The tree's tokens are chosen deterministically (top-k), so the exact policy's one-hot rule keeps
greedy output equal to vanilla and sampled output distributed as the target's, whatever the
collapse did (the released code verifies greedily only). With `collapse=False` the blank is never
proposed and nothing is merged: the EAGLE-1 drafter, trained without the CTC term.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from models.cache import KVCache, init_cache
from models.config import ModelConfig
from models.ctc_draft import CTCDraftParams, column_tokens, draft_chain, frame_features
from models.transformer import causal_mask
from specjax.candidates import Candidates, DraftContext, Prefill, Verified, dedup_prefixes
from specjax.ctc_collapse import collapse_tree
from specjax.static_tree import StaticTree

BLANK_FRAME = -1  # a blank frame's id in the frame table (never a token id)


@struct.dataclass
class CTCState:
    """Attributes:
    cache: the draft's KV cache, one entry per committed pair (h_j, x_{j+1}): every context
      position j before the one whose hidden state predicted the root.
    root_hidden: [B, D] the target's hidden state that predicted the last root (the first pair of
      the next commit).
    """

    cache: KVCache
    root_hidden: jax.Array


@dataclasses.dataclass(frozen=True)
class CTCDrafter:
    """config: the draft layer's (`models.ctc_draft.draft_config`); tree: the static tree (its
    depth is the number of frames drafted); collapse: CTC's blank and repeat collapse (False:
    EAGLE-1, no blank); chain_tokens: K of a prompt-lookup branch sharing the block
    (`specjax.drafters.lookup_branch`), whose accepted paths can be deeper than the tree."""

    config: ModelConfig
    tree: StaticTree
    collapse: bool = True
    chain_tokens: int = 0

    @property
    def block_size(self) -> int:
        return self.tree.size

    def init(self, params: CTCDraftParams, prefill: Prefill, cache_len: int) -> CTCState:
        c = self.config
        B, P = prefill.tokens.shape
        cache = init_cache(1, B, c.K, cache_len, c.H, params.head.fc_w.dtype)
        if P > 1:  # the prompt's pairs (h_j, x_{j+1}), j < P - 1
            positions = jnp.broadcast_to(jnp.arange(P - 1, dtype=jnp.int32), (B, P - 1))
            _, k, v = frame_features(
                c, params, prefill.hidden[:, :-1], prefill.tokens[:, 1:], positions, cache,
                causal_mask(B, P - 1),
            )  # fmt: skip
            cache = cache.append(k, v)
        cache = cache.replace(length=jnp.maximum(prefill.length - 1, 0))
        return CTCState(cache=cache, root_hidden=jnp.zeros((B, c.D), prefill.hidden.dtype))

    def _frames(self, params: CTCDraftParams, state: CTCState, ctx: DraftContext) -> jax.Array:
        """int32 [B, depth, ranks] every frame's top guesses (token ids, BLANK_FRAME for the
        blank), drafted as a top-1 chain (`models.ctc_draft.draft_chain`)."""
        logits = draft_chain(
            self.config, params, ctx.hidden, ctx.root, state.cache, self.tree.max_depth
        )  # [depth, B, V' + 1]
        if not self.collapse:
            logits = logits[..., : params.blank]
        _, columns = jax.lax.top_k(logits, self.tree.max_rank + 1)
        frames = jnp.where(columns == params.blank, BLANK_FRAME, column_tokens(params, columns))
        return jnp.moveaxis(frames, 0, 1).astype(jnp.int32)

    def propose(self, params: CTCDraftParams, state: CTCState, ctx: DraftContext, keys_B, sampling):
        table = self._frames(params, state, ctx)
        depth, rank = self.tree.depth[1:] - 1, self.tree.rank[1:]  # static, per draft node
        root = ctx.root[:, None].astype(jnp.int32)
        frames = jnp.concatenate([root, table[:, depth, rank]], axis=1)  # [B, T]
        parent = jnp.broadcast_to(jnp.asarray(np.asarray(self.tree.parent)), frames.shape)
        tokens = jnp.where(frames == BLANK_FRAME, 0, frames)
        if self.collapse:  # collapse can make twins of siblings: keep the first of each
            collapsed = collapse_tree(frames, parent, BLANK_FRAME, self.tree.max_depth)
            parent = dedup_prefixes(tokens, collapsed)
        return Candidates(tokens=tokens, parent=parent), state.replace(root_hidden=ctx.hidden)

    def update(self, params: CTCDraftParams, state: CTCState, verified: Verified) -> CTCState:
        """Appends the pairs of the accepted path: (hidden before the root, root), then (hidden at
        path node a, path token a + 1) for every accepted draft token."""
        c = self.config
        # the longest accepted path: the tree's deepest, or a lookup chain's within the block
        A = min(self.tree.size, 1 + max(self.tree.max_depth, self.chain_tokens))
        B = verified.n_path.shape[0]
        path = verified.path[:, :A]
        at_path = jnp.take_along_axis(verified.hidden, path[..., None], axis=1)  # [B, A, D]
        hidden = jnp.concatenate([state.root_hidden[:, None], at_path[:, : A - 1]], axis=1)
        tokens = verified.path_tokens[:, :A]
        start = state.cache.length
        positions = start[:, None] + jnp.arange(A, dtype=jnp.int32)[None, :]
        _, k, v = frame_features(
            c, params, hidden, tokens, positions, state.cache, causal_mask(B, A)
        )
        cache = state.cache.append(k, v).replace(length=start + verified.n_path)
        return state.replace(cache=cache)
