"""Two-model speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a small draft model
with the target's vocabulary drafts gamma tokens autoregressively; the target verifies them in one
forward. A draft whose head covers only frequent tokens (`ModelParams.head_token_ids`) drafts among
those; its q is zero elsewhere, which keeps speculative sampling exact.

The draft keeps its own KV cache, always one token behind the root: each propose re-feeds the token
before the root together with the root (a 2-token forward). That single rule covers both outcomes
of the last verification (all drafts accepted, so the last draft was never fed; or a rejection,
so the cache just rolls back), with static shapes and no extra catch-up forward.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from models.cache import KVCache, init_cache
from models.config import ModelConfig
from models.transformer import ModelParams, causal_mask, forward, hidden_states
from specjax.candidates import Candidates, DraftContext, Prefill, Verified, chain_parent
from specjax.sampling import SamplingConfig, probabilities, sample_token


@struct.dataclass
class DraftModelState:
    """Attributes:
    cache: the draft's KV cache; holds every committed token except the last one before the root.
    prev_token: int32 [B] the token before the root (re-fed with the root at the next propose).
    """

    cache: KVCache
    prev_token: jax.Array


def self_draft(
    config: ModelConfig, params: ModelParams, n_layers: int
) -> tuple[ModelConfig, ModelParams]:
    """`self:N`: the target's first N layers with its final norm and head (no training)."""
    draft_config = dataclasses.replace(config, L=n_layers)
    layers = jax.tree.map(lambda x: x[:n_layers], params.layers)
    return draft_config, params.replace(layers=layers)


@dataclasses.dataclass(frozen=True)
class DraftModelDrafter:
    """config: the draft model's config; gamma: tokens drafted per step."""

    config: ModelConfig
    gamma: int = 4

    @property
    def block_size(self) -> int:
        return self.gamma + 1

    def init(self, params: ModelParams, prefill: Prefill, cache_len: int) -> DraftModelState:
        prompt_BP, prompt_len_B = prefill.tokens, prefill.length
        c = self.config
        B, P = prompt_BP.shape
        cache = init_cache(c.L, B, c.K, cache_len, c.H, params.dtype)
        positions = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32), (B, P))
        _, k, v, _ = hidden_states(c, params, prompt_BP, positions, cache, causal_mask(B, P))
        cache = cache.append(k, v).replace(length=prompt_len_B - 1)
        prev = jnp.take_along_axis(prompt_BP, (prompt_len_B - 1)[:, None], axis=1)[:, 0]
        return DraftModelState(cache=cache, prev_token=prev)

    def propose(
        self,
        params: ModelParams,
        state: DraftModelState,
        ctx: DraftContext,
        keys_B,
        sampling: SamplingConfig,
    ):
        c = self.config
        B = ctx.root.shape[0]
        cache = state.cache
        two = jnp.stack([state.prev_token, ctx.root], axis=1)
        positions = cache.length[:, None] + jnp.arange(2)[None, :]
        logits, _, cache = forward(c, params, two, positions, cache, causal_mask(B, 2))

        ids = params.head_token_ids  # [V'] or None: a frequent-token head

        def draw(i, logits_BV):
            q = None if sampling.greedy else probabilities(logits_BV, sampling)
            step_keys = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys_B)
            tok = jax.vmap(lambda k, lg: sample_token(k, lg, sampling))(step_keys, logits_BV)
            if ids is not None:  # head column -> target token; q spread over the full vocabulary
                tok = ids[tok]
                if q is not None:
                    q = jnp.zeros((B, c.V), q.dtype).at[:, ids].set(q)
            return tok, q

        first, q1 = draw(0, logits[:, 1])

        def step(carry, i):
            cache, tok = carry
            lg, _, cache = forward(
                c, params, tok[:, None], cache.length[:, None], cache, causal_mask(B, 1)
            )
            nxt, q = draw(i, lg[:, 0])
            return (cache, nxt), (nxt, q)

        (cache, _), (rest, q_rest) = jax.lax.scan(step, (cache, first), jnp.arange(1, self.gamma))
        drafts = jnp.concatenate([first[:, None], rest.T], axis=1)  # [B, gamma]
        tokens = jnp.concatenate([ctx.root[:, None], drafts], axis=1)
        q_probs = None
        if not sampling.greedy:
            q_all = jnp.concatenate([q1[:, None], jnp.moveaxis(q_rest, 0, 1)], axis=1)
            q_probs = jnp.concatenate([jnp.zeros_like(q_all[:, :1]), q_all], axis=1)
        cands = Candidates(tokens=tokens, parent=chain_parent(B, self.gamma + 1), q_probs=q_probs)
        return cands, DraftModelState(cache=cache, prev_token=state.prev_token)

    def update(self, params, state: DraftModelState, verified: Verified) -> DraftModelState:
        rows = jnp.arange(verified.n_path.shape[0])
        last = verified.path_tokens[rows, verified.n_path - 1]
        cache = state.cache.replace(length=verified.new_root_position - 1)
        return DraftModelState(cache=cache, prev_token=last)
