"""Beam search over a recurrent draft head, with static shapes, under `lax.scan` (ReDrafter's drafting).

Every beam starts at the root token, with scores [0, LOG_ZERO, ...]. So the first step extends beam 0
alone, and its W best tokens seed the W beams; without this, the W beams would grow identically.
Every step then does the same four things:
- it adds each beam's head log-probs to the beam's score;
- it keeps the W best of the W x V' extensions;
- it gathers their parents' token histories and RNN states;
- it advances the RNN state by the new token.
The search is deterministic, which is what lets exact verification treat the beams as fixed drafts
(`specjax.verify`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from models.recurrent_head import (
    LOG_ZERO,
    TOP_K,
    RecurrentHeadParams,
    column_tokens,
    head_log_probs,
    rnn_step,
)
from specjax.candidates import ROOT_PARENT


@dataclasses.dataclass(frozen=True)
class Beams:
    """tokens_BWL: target token ids of the W beams' L draft tokens (root excluded), best beam first;
    scores_BW: each beam's summed log-probs; token_log_probs_BWL: the log-prob of each of its tokens
    under the head, given the beam's earlier tokens."""

    tokens_BWL: jax.Array
    scores_BW: jax.Array
    token_log_probs_BWL: jax.Array


def beam_search(
    params: RecurrentHeadParams,
    embed_VD: jax.Array,
    hidden_BD: jax.Array,
    root_B: jax.Array,
    width: int,
    length: int,
    top_k: int = TOP_K,
) -> Beams:
    """The `width` best `length`-token continuations of each row's root by the head.

    Args:
      embed_VD: the target's input embedding (the head's token inputs).
      hidden_BD: the target's hidden state that predicted the root (`DraftContext.hidden`).
    """
    B, D = hidden_BD.shape
    W = width
    cols = params.num_columns
    rows = jnp.arange(B)[:, None]
    context_BWD = jnp.broadcast_to(hidden_BD[:, None], (B, W, D))
    state = rnn_step(
        params,
        jnp.zeros((B, W, D), hidden_BD.dtype),
        jnp.broadcast_to(embed_VD[root_B][:, None], (B, W, D)),
    )
    scores = jnp.broadcast_to(jnp.array([0.0] + [LOG_ZERO] * (W - 1), jnp.float32), (B, W))
    history = jnp.zeros((B, W, length), jnp.int32)
    history_lp = jnp.zeros((B, W, length), jnp.float32)

    def step(carry, i):
        state, scores, history, history_lp = carry
        log_probs = head_log_probs(params, context_BWD, state, top_k)  # [B, W, V']
        total = (scores[:, :, None] + log_probs).reshape(B, W * cols)
        scores, flat = jax.lax.top_k(total, W)
        parent, column = flat // cols, flat % cols
        token = column_tokens(params, column)
        chosen_lp = log_probs[rows, parent, column]
        history = history[rows, parent].at[:, :, i].set(token)
        history_lp = history_lp[rows, parent].at[:, :, i].set(chosen_lp)
        state = rnn_step(params, state[rows, parent], embed_VD[token])
        return (state, scores, history, history_lp), None

    (_, scores, history, history_lp), _ = jax.lax.scan(
        step, (state, scores, history, history_lp), jnp.arange(length)
    )
    return Beams(tokens_BWL=history, scores_BW=scores, token_log_probs_BWL=history_lp)


def beam_tree(root_B: jax.Array, tokens_BWL: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The W beams as one uncompacted tree of 1 + W*L nodes: (tokens_BT, parent_BT).

    Node 0 is the root. Beam w's token l is node 1 + w*L + l, and its parent is the node before it in
    the same beam (the root for l = 0). Shared prefixes are merged afterwards by
    `specjax.candidates.dedup_prefixes`, with indices and static shapes unchanged.
    """
    B, W, L = tokens_BWL.shape
    tokens = jnp.concatenate([root_B[:, None], tokens_BWL.reshape(B, W * L)], axis=1)
    node = 1 + jnp.arange(W * L).reshape(W, L)
    parent_WL = jnp.where(jnp.arange(L)[None, :] == 0, 0, node - 1)
    parent = jnp.concatenate([jnp.array([ROOT_PARENT]), parent_WL.reshape(W * L)])
    return tokens, jnp.broadcast_to(parent.astype(jnp.int32), (B, 1 + W * L))
