"""Ouroboros (Zhao et al. 2024): phrase-level drafting by a small model, lengthened by pool phrases.

One step, all on device with static shapes:
1. Draft. The draft model runs lookahead decoding on itself (`drafters.lookahead`): each draft
   forward feeds [last token | Jacobi window | C pool phrases keyed by that token] and keeps the
   longest phrase its own argmax agrees with, so one forward yields 1 + hits tokens and the draft is
   exactly the draft model's greedy output. Forwards repeat until gamma tokens are drafted (the last
   one may overshoot; the trunk keeps up to gamma + N - 2).
2. Lengthen. The newest `topk_suffixes` pool phrases keyed by the trunk's last token hang after it
   as parallel branches: the target verifies trunk + branches in one forward (§3.2).
3. Learn from verification (§3.3). After a rejection inside the trunk, the target's argmax tokens
   from there on become phrases keyed by the draft tokens at those slots (continued by the first
   branch's argmax where they run past the trunk). When the trunk was accepted whole, the target's
   argmax over each branch overwrites that branch's pool entry in place.
The pool persists across calls (warm start): pass it in `OuroborosParams.pool`; after a
`generate(..., keep_state=True)`, `specjax.methods.pool_after` folds the rows' pools into one.

The paper's algorithm is greedy and batch 1. Here verification is the engine's: drafts are
deterministic, so q is one-hot and sampling at temperature > 0 stays exact; batch rows keep their
own pools and windows, so a row's drafts never depend on the rest of the batch.

The draft's KV cache: before each step the last N tokens before the root and the root are fed again
(positions r-N..r). Every token older than that is already in the draft cache at its position,
whatever the last verification accepted (at most the last trunk token and N-1 branch tokens were
never fed to the draft), so one static-shape catch-up replaces any rollback bookkeeping.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from configs.phrase_drafting import PhraseDrafting
from models.cache import KVCache, init_cache
from models.config import ModelConfig
from models.transformer import ModelParams, causal_mask, forward, hidden_states
from specjax.candidates import NO_PARENT, Candidates, DraftContext, Prefill, Verified, tree_mask
from specjax.drafters.lookahead import (
    JacobiWindow,
    init_window,
    lookahead_tree,
    pool_for_rows,
    window_step,
)
from specjax.drafters.ngram import append_path
from specjax.phrase_pool import PhrasePool, insert_many, lookup, overwrite, seed_from_tokens
from specjax.verify import greedy_walk


@struct.dataclass
class OuroborosParams:
    """draft: the draft model's weights; pool: a warm phrase pool (unbatched) or None."""

    draft: ModelParams
    pool: PhrasePool | None = None


@struct.dataclass
class OuroborosState:
    """Attributes:
    cache: the draft model's KV cache.
    history: int32 [B, S] committed tokens before the root; length: int32 [B] how many.
    window: the draft model's Jacobi window.
    pool: per-row phrase pools [B, ...].
    trunk_len: int32 [B] draft tokens in the last proposal's trunk.
    branch_slot: int32 [B, k] pool entry of each suffix branch; branch_valid: bool [B, k].
    active: bool [B] rows still generating at the last propose.
    """

    cache: KVCache
    history: jax.Array
    length: jax.Array
    window: JacobiWindow
    pool: PhrasePool
    trunk_len: jax.Array
    branch_slot: jax.Array
    branch_valid: jax.Array
    active: jax.Array


@dataclasses.dataclass(frozen=True)
class OuroborosDrafter:
    """config: the draft model; phrase: the settings (`configs.phrase_drafting`): gamma draft
    tokens per step (at least), window W, ngram N, guess_set C (phrases the draft checks per
    forward), topk_suffixes k (branches after the trunk), pool_capacity G, buckets NB (see
    specjax.phrase_pool)."""

    config: ModelConfig
    phrase: PhraseDrafting = PhraseDrafting()

    gamma = property(lambda self: self.phrase.gamma)
    window = property(lambda self: self.phrase.window)
    ngram = property(lambda self: self.phrase.ngram)
    guess_set = property(lambda self: self.phrase.guess_set)
    topk_suffixes = property(lambda self: self.phrase.topk_suffixes)
    pool_capacity = property(lambda self: self.phrase.pool_capacity)
    buckets = property(lambda self: self.phrase.buckets)

    @property
    def phrase_len(self) -> int:
        return self.ngram - 1

    @property
    def trunk_capacity(self) -> int:
        return self.gamma + self.ngram - 2

    @property
    def catch_up(self) -> int:
        return self.ngram + 1

    @property
    def block_size(self) -> int:
        return 1 + self.trunk_capacity + self.topk_suffixes * self.phrase_len

    @property
    def pool_shape(self) -> tuple[int, int, int]:
        return (self.buckets, self.pool_capacity, self.phrase_len)

    def init(self, params: OuroborosParams, prefill: Prefill, cache_len: int):
        prompt_BP, prompt_len_B = prefill.tokens, prefill.length
        c = self.config
        B, P = prompt_BP.shape
        cache = init_cache(c.L, B, c.K, cache_len, c.H, params.draft.dtype)
        positions = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32), (B, P))
        _, k, v, _ = hidden_states(c, params.draft, prompt_BP, positions, cache, causal_mask(B, P))
        cache = cache.append(k, v).replace(length=prompt_len_B)
        history = jnp.zeros((B, cache_len), jnp.int32).at[:, :P].set(prompt_BP)
        pool = pool_for_rows(params.pool, B, self.pool_shape)
        pool = jax.vmap(seed_from_tokens)(pool, prompt_BP, prompt_len_B)
        k_sfx = self.topk_suffixes
        return OuroborosState(
            cache=cache,
            history=history,
            length=prompt_len_B,
            window=init_window(prompt_BP, prompt_len_B, self.ngram - 1, self.window),
            pool=pool,
            trunk_len=jnp.zeros((B,), jnp.int32),
            branch_slot=jnp.zeros((B, k_sfx), jnp.int32),
            branch_valid=jnp.zeros((B, k_sfx), bool),
            active=jnp.ones((B,), bool),
        )

    def _draft_forward(self, draft: ModelParams, cache, window, pool, prefix_BA, root_slot_B, go_B):
        """One lookahead forward of the draft model from `root_slot`.

        Returns (cache, window, pool, new tokens [B, 1+M'] , how many of them) where the new tokens
        are the accepted phrase tokens then the draft's own next token.
        """
        B, A = prefix_BA.shape
        rows = jnp.arange(B)
        key = prefix_BA[rows, root_slot_B]
        phrases, valid, _ = jax.vmap(lambda p, t: lookup(p, t, self.guess_set))(pool, key)
        tokens, parent = lookahead_tree(
            prefix_BA, root_slot_B, window.levels[:, -1], phrases, valid
        )
        T = tokens.shape[1]
        depth, mask = tree_mask(parent)
        logits, _, cache = forward(
            self.config, draft, tokens, cache.length[:, None] + depth, cache, mask
        )
        argmax = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        if draft.head_token_ids is not None:  # frequent-token head: column -> token id
            argmax = draft.head_token_ids[argmax]
        walk, n_walk, bonus = greedy_walk(argmax, tokens, parent, root_slot_B)
        # Commit the prefix chain up to the root slot, then the accepted phrase nodes.
        a = jnp.arange(T)[None, :]
        from_walk = jnp.take_along_axis(walk, jnp.clip(a - root_slot_B[:, None], 0, T - 1), 1)
        path = jnp.where(a < root_slot_B[:, None], a, from_walk)
        n_keep = jnp.where(go_B, root_slot_B + n_walk, 0)
        cache = cache.commit(T, path, n_keep)
        # New draft tokens: accepted phrase tokens (walk[1:n]) then the bonus.
        M1 = max(self.window, self.phrase_len) + 1  # the longest chain after the root, + bonus
        j = jnp.arange(M1)[None, :]
        taken = tokens[rows[:, None], jnp.take_along_axis(walk, jnp.clip(j + 1, 0, T - 1), 1)]
        new = jnp.where(j < n_walk[:, None] - 1, taken, bonus[:, None])
        # The next Jacobi iterate: argmax after the root and after window slots 0..W-2.
        iterate = jnp.concatenate(
            [argmax[rows, root_slot_B][:, None], argmax[:, A : A + self.window - 1]], axis=1
        )[:, : self.window]
        window, keys, grams, ok = window_step(window, iterate, go_B)
        pool = jax.vmap(insert_many)(pool, keys, grams, ok)
        return cache, window, pool, new, jnp.where(go_B, n_walk, 0)

    def propose(
        self, params: OuroborosParams, state: OuroborosState, ctx: DraftContext, keys_B, sampling
    ):
        B = ctx.root.shape[0]
        rows = jnp.arange(B)
        N, A, Tt = self.ngram, self.catch_up, self.trunk_capacity
        r = ctx.root_position
        active = ~ctx.done
        # Catch-up chain: tokens at positions s..r (the root last), s = max(r - N, 0).
        s = jnp.maximum(r - N, 0)
        seq = state.history.at[rows, r].set(ctx.root, mode="drop")
        pos = jnp.minimum(s[:, None] + jnp.arange(A)[None, :], seq.shape[1] - 1)
        prefix = jnp.take_along_axis(seq, pos, axis=1)
        cache = state.cache.replace(length=s)
        cap = Tt + max(self.window, self.phrase_len) + 1
        buf = jnp.zeros((B, cap), jnp.int32)

        def append(buf, count, new, n):
            j = jnp.arange(new.shape[1])[None, :]
            slots = jnp.where(j < n[:, None], count[:, None] + j, cap)
            return buf.at[rows[:, None], slots].set(new, mode="drop"), count + n

        cache, window, pool, new, n = self._draft_forward(
            params.draft, cache, state.window, state.pool, prefix, r - s, active
        )
        buf, count = append(buf, jnp.zeros((B,), jnp.int32), new, n)

        def more(carry):
            it, _, _, _, _, count = carry
            return (it < self.gamma) & jnp.any(active & (count < self.gamma))

        def step(carry):
            it, cache, window, pool, buf, count = carry
            go = active & (count < self.gamma)
            last = buf[rows, jnp.maximum(count - 1, 0)]
            cache, window, pool, new, n = self._draft_forward(
                params.draft, cache, window, pool, last[:, None], jnp.zeros((B,), jnp.int32), go
            )
            buf, count = append(buf, count, new, n)
            return it + 1, cache, window, pool, buf, count

        carry = (jnp.int32(1), cache, window, pool, buf, count)
        _, cache, window, pool, buf, count = jax.lax.while_loop(more, step, carry)
        count = jnp.minimum(count, Tt)
        trunk = buf[:, :Tt]
        # Lengthen: the newest pool phrases keyed by the trunk's last token, as branches after it.
        last = trunk[rows, count - 1]
        k_sfx, M = self.topk_suffixes, self.phrase_len
        branches, valid, slots = jax.vmap(lambda p, t: lookup(p, t, k_sfx))(pool, last)
        t = jnp.arange(1, Tt + 1)[None, :]
        trunk_parent = jnp.where(t <= count[:, None], t - 1, NO_PARENT)
        j = jnp.arange(M)[None, None, :]
        base = 1 + Tt + jnp.arange(k_sfx)[None, :, None] * M
        branch_parent = jnp.where(j == 0, count[:, None, None], base + j - 1)
        branch_parent = jnp.where(valid[:, :, None], branch_parent, NO_PARENT)
        tokens = jnp.concatenate([ctx.root[:, None], trunk, branches.reshape(B, k_sfx * M)], 1)
        parent = jnp.concatenate(
            [jnp.full((B, 1), -1, jnp.int32), trunk_parent, branch_parent.reshape(B, k_sfx * M)],
            axis=1,
        ).astype(jnp.int32)
        state = state.replace(
            cache=cache,
            window=window,
            pool=pool,
            trunk_len=count,
            branch_slot=slots,
            branch_valid=valid,
            active=active,
        )
        return Candidates(tokens=tokens, parent=parent), state

    def update(self, params, state: OuroborosState, verified: Verified) -> OuroborosState:
        B, T = verified.path_tokens.shape
        rows = jnp.arange(B)
        Tt, M, k_sfx = self.trunk_capacity, self.phrase_len, self.topk_suffixes
        # History: the root and the accepted tokens (the new root is added at the next propose).
        history = append_path(state.history, state.length, verified)
        length = state.length + jnp.where(state.active, verified.n_path, 0)

        argmax = verified.target_argmax
        tokens = verified.candidates.tokens
        count = state.trunk_len
        accepted = verified.n_path - 1
        rejected = state.active & (accepted < count)
        whole = state.active & (accepted >= count)
        first_branch = 1 + Tt  # block index of branch 0's first node
        branch_ok = state.branch_valid[:, 0]

        # Phrases from a rejection: key = draft token at trunk slot j (j = first rejected .. count),
        # phrase = target argmax at slots j, j+1, ... (past the trunk, along branch 0).
        p = jnp.arange(1, Tt + M)[None, :]  # 1-based trunk positions, with room past the end
        on_trunk = p <= count[:, None]
        branch_idx = first_branch + (p - count[:, None] - 1)
        in_branch = (~on_trunk) & (p - count[:, None] - 1 < M) & branch_ok[:, None]
        seq_idx = jnp.where(on_trunk, p, jnp.clip(branch_idx, 0, T - 1))
        seq = jnp.where(on_trunk | in_branch, argmax[rows[:, None], seq_idx], -1)  # [B, Tt+M-1]
        jj = jnp.arange(1, Tt + 1)[None, :]
        keys = jnp.where(
            (jj >= verified.n_path[:, None]) & (jj <= count[:, None]), tokens[:, 1 : Tt + 1], -1
        )
        window_idx = (jj - 1)[:, :, None] + jnp.arange(M)[None, None, :]  # into seq (0-based)
        phrases = seq[:, jnp.clip(window_idx[0], 0, seq.shape[1] - 1)]  # [B, Tt, M]
        ok = rejected[:, None] & (keys >= 0)
        pool = jax.vmap(insert_many)(state.pool, keys, phrases, ok)

        # Suffix refresh: after a whole-trunk accept, branch b's entry becomes the target's argmax
        # after the trunk's last token and along the branch.
        head = argmax[rows, count]  # the target's token after the trunk
        parent = verified.candidates.parent
        for b in range(k_sfx):
            base = first_branch + b * M
            body = argmax[:, base : base + M - 1]
            live = jnp.all(parent[:, base : base + M - 1] != NO_PARENT, axis=1)
            phrase = jnp.concatenate([head[:, None], body], axis=1)
            ok_b = whole & state.branch_valid[:, b] & live
            pool = jax.vmap(overwrite)(
                pool, tokens[rows, count], state.branch_slot[:, b], phrase, ok_b
            )
        return state.replace(history=history, length=length, pool=pool)
