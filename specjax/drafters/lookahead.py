"""Lookahead decoding (Fu et al. 2024): the target drafts for itself with a Jacobi window and a
phrase pool, no draft model. Also the window and tree layout Ouroboros runs on its draft model.

Each step feeds one block: [root | Jacobi window (W tokens, a chain after the root) | C pool
phrases keyed by the root (N-1 tokens each, branches after the root)]. The model's argmax over the
window is the next Jacobi iterate; the window's last N-1 iterates, read along diagonals, give
W-N+1 fresh N-grams per step (each token was predicted right after the one before it), which go
into the pool. Verification sees window and phrases as ordinary tree branches, so the step is
exact: greedy output equals vanilla, sampling keeps the target's distribution (one-hot q).

Where we differ from the paper, and why: the paper feeds all N-1 window levels with a diagonal mask
(W*(N-1) tokens); we feed only the newest level (plain Jacobi iteration, W tokens) and keep the
older levels to read the same diagonal N-grams. On hardware where a forward's cost grows with its
tokens (any CPU; DESIGN "Performance model") that is (N-1)x fewer window tokens per step.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from configs.phrase_drafting import PhraseDrafting
from specjax.candidates import (
    NO_PARENT,
    ROOT_PARENT,
    Candidates,
    DraftContext,
    Prefill,
    Verified,
    dedup_prefixes,
)
from specjax.phrase_pool import (
    PhrasePool,
    broadcast_rows,
    empty_pool,
    insert_many,
    lookup,
    seed_from_tokens,
)


@struct.dataclass
class JacobiWindow:
    """Attributes:
    levels: int32 [B, N-1, W] the last N-1 Jacobi iterates, oldest first; levels[:, -1] is fed.
    filled: int32 [B] iterates the model has produced (N-grams are read once it reaches N-1).
    """

    levels: jax.Array
    filled: jax.Array


def init_window(prompt_BP, prompt_len_B, n_levels: int, W: int) -> JacobiWindow:
    """Levels filled with prompt tokens (the paper starts from random prompt tokens too): a
    cheap first guess that the iterations then replace."""
    B = prompt_BP.shape[0]
    offsets = jnp.arange(n_levels)[:, None] * 3 + jnp.arange(W)[None, :]  # [N-1, W]
    idx = offsets[None] % jnp.maximum(prompt_len_B, 1)[:, None, None]
    levels = jnp.take_along_axis(prompt_BP[:, None, :], idx.reshape(B, 1, -1), axis=2)
    return JacobiWindow(
        levels=levels.reshape(B, n_levels, W).astype(jnp.int32),
        filled=jnp.zeros((B,), jnp.int32),
    )


def window_step(window: JacobiWindow, new_BW, active_B):
    """Shifts in the new iterate; returns (window, keys [B, E], phrases [B, E, N-1], ok [B, E])
    with E = W-N+1 diagonal N-grams: (level0[i], level1[i+1], ..., new[i+N-1])."""
    levels = window.levels
    B, n_levels, W = levels.shape
    E = max(W - n_levels, 0)
    rows = jnp.concatenate([levels, new_BW[:, None, :]], axis=1)  # [B, N, W]
    i = jnp.arange(E)[:, None]
    lvl = jnp.arange(n_levels + 1)[None, :]
    grams = rows[:, lvl, i + lvl]  # [B, E, N]
    ok = jnp.broadcast_to((window.filled >= n_levels)[:, None] & active_B[:, None], (B, E))
    shifted = jnp.where(active_B[:, None, None], rows[:, 1:], levels)
    filled = window.filled + active_B.astype(jnp.int32)
    return JacobiWindow(levels=shifted, filled=filled), grams[:, :, 0], grams[:, :, 1:], ok


def lookahead_tree(prefix_BA, root_slot_B, window_BW, phrases_BCM, valid_BC):
    """(tokens [B, T], parent [B, T]) of [prefix chain | window chain | C phrase branches].

    The prefix is a chain up to `root_slot` (slots after it are empty); the window and every
    valid phrase hang under the root slot. Repeated prefixes are merged (`dedup_prefixes`).
    """
    B, A = prefix_BA.shape
    W = window_BW.shape[1]
    C, M = phrases_BCM.shape[1:]
    a = jnp.arange(A)[None, :]
    root = root_slot_B[:, None]
    prefix_parent = jnp.where(a == 0, ROOT_PARENT, jnp.where(a <= root, a - 1, NO_PARENT))
    w = jnp.arange(W)[None, :]
    window_parent = jnp.where(w == 0, root, A + w - 1)
    j = jnp.arange(M)[None, None, :]
    base = A + W + jnp.arange(C)[None, :, None] * M
    phrase_parent = jnp.where(j == 0, root[:, :, None], base + j - 1)
    phrase_parent = jnp.where(valid_BC[:, :, None], phrase_parent, NO_PARENT)
    tokens = jnp.concatenate([prefix_BA, window_BW, phrases_BCM.reshape(B, C * M)], axis=1)
    parent = jnp.concatenate(
        [
            jnp.broadcast_to(prefix_parent, (B, A)),
            jnp.broadcast_to(window_parent, (B, W)),
            phrase_parent.reshape(B, C * M),
        ],
        axis=1,
    ).astype(jnp.int32)
    return tokens.astype(jnp.int32), dedup_prefixes(tokens.astype(jnp.int32), parent)


def pool_for_rows(pool: PhrasePool | None, B: int, shape: tuple[int, int, int]) -> PhrasePool:
    """The session's pool (or an empty one) copied to every row."""
    return broadcast_rows(pool if pool is not None else empty_pool(*shape), B)


@struct.dataclass
class LookaheadParams:
    """pool: a warm phrase pool (unbatched) carried from earlier calls, or None for a cold start."""

    pool: PhrasePool | None = None


@struct.dataclass
class LookaheadState:
    """Attributes: pool: per-row phrase pools [B, ...]; window: the Jacobi window; active: bool
    [B] rows that were still generating at the last propose (others leave the pool alone)."""

    pool: PhrasePool
    window: JacobiWindow
    active: jax.Array


@dataclasses.dataclass(frozen=True)
class LookaheadDrafter:
    """phrase: the settings (`configs.phrase_drafting`; gamma and topk_suffixes are Ouroboros's
    and unused here): window W; ngram N (phrases are N-1 tokens); guess_set C phrases verified
    per step; pool_capacity G phrases per bucket; buckets NB (see specjax.phrase_pool)."""

    phrase: PhraseDrafting = PhraseDrafting()

    window = property(lambda self: self.phrase.window)
    ngram = property(lambda self: self.phrase.ngram)
    guess_set = property(lambda self: self.phrase.guess_set)
    pool_capacity = property(lambda self: self.phrase.pool_capacity)
    buckets = property(lambda self: self.phrase.buckets)

    @property
    def block_size(self) -> int:
        return 1 + self.window + self.guess_set * (self.ngram - 1)

    @property
    def pool_shape(self) -> tuple[int, int, int]:
        return (self.buckets, self.pool_capacity, self.ngram - 1)

    def init(self, params: LookaheadParams, prefill: Prefill, cache_len: int):
        prompt_BP, prompt_len_B = prefill.tokens, prefill.length
        B = prompt_BP.shape[0]
        pool = pool_for_rows(params.pool, B, self.pool_shape)
        pool = jax.vmap(seed_from_tokens)(pool, prompt_BP, prompt_len_B)
        window = init_window(prompt_BP, prompt_len_B, self.ngram - 1, self.window)
        return LookaheadState(pool=pool, window=window, active=jnp.ones((B,), bool))

    def propose(self, params, state: LookaheadState, ctx: DraftContext, keys_B, sampling):
        phrases, valid, _ = jax.vmap(lambda p, k: lookup(p, k, self.guess_set))(
            state.pool, ctx.root
        )
        B = ctx.root.shape[0]
        tokens, parent = lookahead_tree(
            ctx.root[:, None],
            jnp.zeros((B,), jnp.int32),
            state.window.levels[:, -1],
            phrases,
            valid,
        )
        return Candidates(tokens=tokens, parent=parent), state.replace(active=~ctx.done)

    def update(self, params, state: LookaheadState, verified: Verified) -> LookaheadState:
        # The target's argmax after the root and after window slots 0..W-2 is the next iterate.
        new = verified.target_argmax[:, : self.window]
        window, keys, phrases, ok = window_step(state.window, new, state.active)
        pool = jax.vmap(insert_many)(state.pool, keys, phrases, ok)
        return state.replace(pool=pool, window=window)
