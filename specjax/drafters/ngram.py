"""Prompt lookup / n-gram drafting (Saxena 2023; transformers' `prompt_lookup_num_tokens`).

Match the last n tokens (n = max_ngram down to 1) against the prompt and output so far, and propose
the k tokens that followed the match, as a chain. Everything is on device with static shapes: the
history is a [B, S] buffer, a match is found by comparing n shifted copies of it. Where several
windows match we take the most recent one (transformers takes the earliest); recency follows the
passage being copied. Rows without a match propose nothing (empty slots), and a step where no row
proposes anything costs one single-token target forward, unless the drafter's params are an answer
store (`models.answer_store`, `--answer_store`): then a row with no match in its context proposes
what the target's own answers most often continued its last tokens with.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from models.answer_store import store_lookup
from specjax.candidates import NO_PARENT, Candidates, DraftContext, Prefill, Verified


@struct.dataclass
class NgramState:
    """Attributes:
    history: int32 [B, S] every committed token before the root (prompt included).
    length: int32 [B] valid entries of `history`.
    """

    history: jax.Array
    length: jax.Array


def lookup(seq_S, length, max_ngram: int, k: int):
    """(proposal [k], count) for one row whose sequence (root included) is seq[:length]."""
    S = seq_S.shape[0]
    j = jnp.arange(S)
    best_end, found = jnp.int32(-1), jnp.bool_(False)
    for n in range(max_ngram, 0, -1):
        match = (j >= n - 1) & (j <= length - 2) & (length >= n + 1)
        for t in range(n):
            shifted = jnp.roll(seq_S, t)  # shifted[j] = seq[j - t]
            match &= shifted == seq_S[jnp.maximum(length - 1 - t, 0)]
        end = jnp.max(jnp.where(match, j, -1)).astype(jnp.int32)
        take = ~found & (end >= 0)
        best_end = jnp.where(take, end, best_end)
        found |= take
    idx = best_end + 1 + jnp.arange(k)
    count = jnp.where(found, jnp.clip(length - 1 - best_end, 0, k), 0)
    return seq_S[jnp.clip(idx, 0, S - 1)], count.astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class NgramDrafter:
    """max_ngram: longest suffix to match (transformers default 3 ... vLLM's 1..4);
    num_tokens: k, the chain length proposed (transformers' prompt_lookup default 10).
    params: None, or an `AnswerStore` to draft from where the context has no match."""

    max_ngram: int = 3
    num_tokens: int = 10

    @property
    def block_size(self) -> int:
        return self.num_tokens + 1

    def init(self, params, prefill: Prefill, cache_len: int) -> NgramState:
        B, P = prefill.tokens.shape
        history = jnp.zeros((B, cache_len), jnp.int32).at[:, :P].set(prefill.tokens)
        return NgramState(history=history, length=prefill.length)

    def propose(self, params, state: NgramState, ctx: DraftContext, keys, sampling):
        B = ctx.root.shape[0]
        rows = jnp.arange(B)
        seq = state.history.at[rows, state.length].set(ctx.root, mode="drop")
        k = self.num_tokens
        drafts, count = jax.vmap(lambda s, n: lookup(s, n, self.max_ngram, k))(
            seq, state.length + 1
        )
        if params is not None:  # an answer store: where the context has no match
            stored, stored_count = jax.vmap(lambda s, n: store_lookup(params, s, n, k))(
                seq, state.length + 1
            )
            unmatched = count == 0
            drafts = jnp.where(unmatched[:, None], stored, drafts)
            count = jnp.where(unmatched, stored_count, count)
        slot = jnp.arange(1, k + 1)
        parent = jnp.where(slot[None, :] <= count[:, None], slot[None, :] - 1, NO_PARENT)
        tokens = jnp.concatenate([ctx.root[:, None], drafts], axis=1)
        parent = jnp.concatenate([jnp.full((B, 1), -1, jnp.int32), parent.astype(jnp.int32)], 1)
        return Candidates(tokens=tokens, parent=parent), state

    def update(self, params, state: NgramState, verified: Verified) -> NgramState:
        """Appends the root and the accepted drafts (the new root is appended next step)."""
        history = append_path(state.history, state.length, verified)
        return NgramState(history=history, length=state.length + verified.n_path)


def append_path(history_BS, length_B, verified: Verified) -> jax.Array:
    """history with each row's root and accepted drafts (path_tokens[:n_path]) written at
    [length, length + n_path); drafters that keep the committed text share it."""
    B, T = verified.path_tokens.shape
    a = jnp.arange(T)[None, :]
    slots = jnp.where(a < verified.n_path[:, None], length_B[:, None] + a, history_BS.shape[1])
    return history_BS.at[jnp.arange(B)[:, None], slots].set(verified.path_tokens, mode="drop")
