"""ReDrafter (Cheng et al. 2024): a recurrent head drafts W beams of L tokens from the target's
hidden state, and the beams, merged into one tree, are verified in a single target forward.

The drafter needs no state of its own: everything it drafts from arrives with the step, namely the
root token and the target's hidden state that predicted it (`DraftContext.hidden`, no extra
forward). Beam search is deterministic (`specjax.beam_search`), so the exact policy's one-hot rule
(`specjax.verify`) keeps greedy output equal to vanilla and sampled output distributed as the
target's. The original's own sampling rule (the best of W per-beam tests, against a target cut to
its top 50) is not exact and is not used.

Two block layouts. By default the block is the uncompacted tree of 1 + W*L slots, as in the
original's MLX port: shared prefixes are merged in place (`dedup_prefixes`), so duplicate nodes
become empty slots that cost their share of the verify forward but never hide a longer
continuation. With `slots` set, the merged tree is packed into that many slots (`pack_tree`): the
distinct nodes in beam order (best beam first), the rest cut, so a verify cost that grows with the
block size pays only for what is drafted.
"""

from __future__ import annotations

import dataclasses

import jax
from flax import struct

from models.recurrent_head import TOP_K, RecurrentHeadParams
from specjax.beam_search import beam_search, beam_tree
from specjax.candidates import (
    Candidates,
    DraftContext,
    Prefill,
    Verified,
    dedup_prefixes,
    pack_tree,
)


@struct.dataclass
class ReDrafterParams:
    """head: the trained recurrent head; embed: the target's input embedding [V, D] (the head's
    token inputs; the same array as the target's, not a copy)."""

    head: RecurrentHeadParams
    embed: jax.Array


@dataclasses.dataclass(frozen=True)
class ReDrafterDrafter:
    """width W beams of length L draft tokens; top_k: the head's logits cut before the
    log-softmax (50, the original's); slots: the packed block size (0: the uncompacted
    1 + W*L)."""

    width: int = 2
    length: int = 4
    top_k: int = TOP_K
    slots: int = 0

    @property
    def block_size(self) -> int:
        return self.slots or 1 + self.width * self.length

    def init(self, params: ReDrafterParams, prefill: Prefill, cache_len: int):
        return None

    def propose(self, params: ReDrafterParams, state, ctx: DraftContext, keys_B, sampling):
        beams = beam_search(
            params.head,
            params.embed,
            ctx.hidden.astype(params.embed.dtype),
            ctx.root,
            self.width,
            self.length,
            self.top_k,
        )
        tokens, parent = beam_tree(ctx.root, beams.tokens_BWL)
        parent = dedup_prefixes(tokens, parent)
        if self.slots:
            tokens, parent = pack_tree(tokens, parent, self.slots)
        return Candidates(tokens=tokens, parent=parent), state

    def update(self, params: ReDrafterParams, state, verified: Verified):
        return state
