"""SPRINTER (Zhong, Teku, Tandon 2025): a draft model drafts one token per step and a trained
verifier (`models.acceptance_verifier`) scores each on the draft's own hidden state; the target is
called only when a token is flagged (score < threshold) or K tokens are pending, and then once,
over every pending token (a static block of K + 1 slots).

What the target does with that block is the acceptance policy's business: the paper's rule
(`specjax.acceptance.LastTokenAcceptance`, approximate) keeps the unflagged tokens and checks only
the last one; the exact rule (`ExactAcceptance`, lossless) verifies the whole run, so the
verifier only decides how long each draft is.

Between target calls the row emits nothing (`Candidates.needs_target`); other rows of the batch
may be called meanwhile, so every row has its own run. The draft keeps its own KV cache with
every token before the one it feeds next; when the target accepted the whole run, the run's last
token was never fed, and the next step feeds it with the new root (a 2-token forward, chosen by
`lax.cond` only when some row needs it).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from models.acceptance_verifier import (
    VerifierParams,
    acceptance_score,
    for_temperature,
    verifier_features,
)
from models.cache import KVCache, init_cache
from models.config import ModelConfig
from models.transformer import ModelParams, causal_mask, forward, hidden_states
from specjax.candidates import NO_PARENT, Candidates, DraftContext, Prefill, Verified
from specjax.sampling import SamplingConfig, probabilities, sample_token


@struct.dataclass
class SprinterParams:
    draft: ModelParams
    verifier: VerifierParams  # one classifier per trained temperature (w [N, F], b [N])


@struct.dataclass
class SprinterState:
    """Attributes:
    cache: the draft's KV cache: every token before `feed` (and before `prev` when catching up).
    prev_token: int32 [B] the last token of a fully accepted run, not yet fed to the draft.
    catch_up: bool [B] `prev_token` must be fed before the next token.
    run_tokens: int32 [B, K] tokens drafted since the target last ran for the row.
    run_q: float32 [B, K, V] the warped draft distribution each was sampled from (sampling only;
      zeros when greedy).
    n_run: int32 [B] pending tokens.
    """

    cache: KVCache
    prev_token: jax.Array
    catch_up: jax.Array
    run_tokens: jax.Array
    run_q: jax.Array
    n_run: jax.Array


@dataclasses.dataclass(frozen=True)
class SprinterDrafter:
    """config: the draft model's; max_draft: K; threshold: the verifier score below which a
    token is flagged (0: never flag, above 1: always); with_token: the verifier reads the
    candidate's embedding too; temperatures: those its classifiers were trained at (the one
    nearest the sampling temperature is used)."""

    config: ModelConfig
    max_draft: int = 20
    threshold: float = 0.5
    with_token: bool = False
    temperatures: tuple[float, ...] = (0.0,)

    @property
    def block_size(self) -> int:
        return self.max_draft + 1

    @property
    def verify_sizes(self) -> tuple[int, ...]:
        """Runs are mostly much shorter than K: the target forward covers the smallest power of
        two of slots that holds every row's run (where the verify cost grows with the slots,
        as on CPU, a full K + 1 block would cost up to 2-3 forwards)."""
        return tuple(t for t in (2, 4, 8, 16, 32) if t < self.block_size)

    def init(self, params: SprinterParams, prefill: Prefill, cache_len: int) -> SprinterState:
        c, K = self.config, self.max_draft
        prompt_BP, prompt_len_B = prefill.tokens, prefill.length
        B, P = prompt_BP.shape
        cache = init_cache(c.L, B, c.K, cache_len, c.H, params.draft.dtype)
        positions = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32), (B, P))
        _, k, v, _ = hidden_states(c, params.draft, prompt_BP, positions, cache, causal_mask(B, P))
        # The prompt's last token is the root the target already saw: feed it with the first draft.
        cache = cache.append(k, v).replace(length=prompt_len_B - 1)
        prev = jnp.take_along_axis(prompt_BP, (prompt_len_B - 1)[:, None], axis=1)[:, 0]
        return SprinterState(
            cache=cache,
            prev_token=prev,
            catch_up=jnp.ones((B,), bool),
            run_tokens=jnp.zeros((B, K), jnp.int32),
            run_q=jnp.zeros((B, K, c.V), jnp.float32),
            n_run=jnp.zeros((B,), jnp.int32),
        )

    def _draft_forward(self, params: ModelParams, state: SprinterState, feed_B: jax.Array):
        """(logits [B, V'], hidden [B, D], cache) after feeding each row's next token (and, for
        rows catching up, the token before it)."""
        c = self.config
        B = feed_B.shape[0]
        cache = state.cache

        def one(cache):
            logits, hidden, cache = forward(
                c, params, feed_B[:, None], cache.length[:, None], cache, causal_mask(B, 1)
            )
            return logits[:, 0], hidden[:, 0], cache

        def two(cache):
            # Catching-up rows feed [prev, feed]; the others feed [feed, feed] and keep slot 0.
            up = state.catch_up
            first = jnp.where(up, state.prev_token, feed_B)
            tokens = jnp.stack([first, feed_B], axis=1)
            positions = cache.length[:, None] + jnp.arange(2)[None, :]
            logits, hidden, new = forward(c, params, tokens, positions, cache, causal_mask(B, 2))
            slot = up.astype(jnp.int32)
            rows = jnp.arange(B)
            length = cache.length + 1 + slot
            return logits[rows, slot], hidden[rows, slot], new.replace(length=length)

        return jax.lax.cond(jnp.any(state.catch_up), two, one, cache)

    def propose(
        self,
        params: SprinterParams,
        state: SprinterState,
        ctx: DraftContext,
        keys_B,
        sampling: SamplingConfig,
    ):
        c, K = self.config, self.max_draft
        B = ctx.root.shape[0]
        rows = jnp.arange(B)
        last_drafted = state.run_tokens[rows, jnp.maximum(state.n_run - 1, 0)]
        feed = jnp.where(state.n_run > 0, last_drafted, ctx.root)
        logits, hidden, cache = self._draft_forward(params.draft, state, feed)
        ids = params.draft.head_token_ids  # [V'] or None: a frequent-token draft head
        key = jax.vmap(lambda k, n: jax.random.fold_in(k, n))(keys_B, state.n_run)
        token = jax.vmap(lambda k, lg: sample_token(k, lg, sampling))(key, logits)
        if ids is not None:
            token = ids[token]
        embed = params.draft.embed[token] if self.with_token else None
        verifier = for_temperature(params.verifier, self.temperatures, sampling.temperature)
        score = acceptance_score(verifier, verifier_features(hidden, embed))
        slot = jnp.minimum(state.n_run, K - 1)
        run_tokens = state.run_tokens.at[rows, slot].set(token)
        run_q = state.run_q
        if not sampling.greedy:
            q = probabilities(logits, sampling)
            if ids is not None:
                q = jnp.zeros((B, c.V), q.dtype).at[:, ids].set(q)
            run_q = run_q.at[rows, slot].set(q)
        done = ctx.done
        n_run = jnp.where(done, state.n_run, state.n_run + 1)  # finished rows draft no more
        needs = (score < self.threshold) | (n_run >= K)
        if ctx.remaining is not None:  # a call emits up to n_run + 1 tokens: no use drafting on
            needs |= n_run + 1 >= ctx.remaining
        new_state = SprinterState(
            cache=cache.replace(length=jnp.where(done, state.cache.length, cache.length)),
            prev_token=state.prev_token,
            catch_up=jnp.zeros_like(state.catch_up),  # fed now (a finished row needs none)
            run_tokens=run_tokens,
            run_q=run_q,
            n_run=n_run,
        )
        T = K + 1
        tokens = jnp.concatenate([ctx.root[:, None], new_state.run_tokens], axis=1)
        index = jnp.arange(T, dtype=jnp.int32)
        parent = jnp.where(
            index[None, :] <= new_state.n_run[:, None], index[None, :] - 1, NO_PARENT
        )
        q_probs = None
        if not sampling.greedy:
            q_probs = jnp.concatenate([jnp.zeros_like(new_state.run_q[:, :1]), new_state.run_q], 1)
        cands = Candidates(
            tokens=tokens, parent=parent.astype(jnp.int32), q_probs=q_probs, needs_target=needs
        )
        return cands, new_state

    def update(self, params, state: SprinterState, verified: Verified) -> SprinterState:
        """Rows the target ran for start a new run: the draft cache keeps the accepted tokens;
        a fully accepted run leaves its last token to feed (catch-up)."""
        ran = verified.target_ran
        accepted = verified.n_path - 1  # drafts kept
        full = ran & (accepted == state.n_run)
        rows = jnp.arange(ran.shape[0])
        last = verified.path_tokens[rows, jnp.maximum(verified.n_path - 1, 0)]
        root_position = verified.new_root_position - verified.n_path  # the run's root
        # The cache holds root .. x_{n-1} (root_position + n_run entries); keep root .. x_a.
        kept = jnp.minimum(root_position + 1 + accepted, state.cache.length)
        length = jnp.where(ran, kept, state.cache.length)
        return state.replace(
            cache=state.cache.replace(length=length),
            prev_token=jnp.where(full, last, state.prev_token),
            catch_up=full,
            n_run=jnp.where(ran, 0, state.n_run),
        )
