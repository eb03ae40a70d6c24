"""Verification of a draft block by the target: greedy, and exact speculative sampling on trees.

One rule covers every drafter (Leviathan et al. 2023; Chen et al. 2023; the multi-candidate form of
SpecInfer, Miao et al. 2024, Sec. 4): walk the tree from the root; at the current node the residual
r starts as the target's warped distribution p; try the children in index order, accepting child x
with probability min(1, r(x) / q(x)); after a rejection r <- norm(max(0, r - q)). When no child is
accepted (or the node is a leaf), the bonus token is drawn from r. Deterministic drafts use q =
one-hot(x): accept with r(x), then zero r(x) and renormalise. Every emitted token is distributed
exactly as p. Greedy: a child is accepted iff it equals the target's argmax at its parent; output
equals vanilla greedy decoding token for token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from specjax.candidates import Candidates
from specjax.sampling import SamplingConfig, probabilities


def _residual(r_V: jax.Array, q_V: jax.Array) -> jax.Array:
    """norm(max(0, r - q)); where that is all zero (r == q), r is kept (the rejection had
    probability zero)."""
    res = jnp.maximum(r_V - q_V, 0.0)
    total = res.sum()
    return jnp.where(total > 0, res / jnp.where(total > 0, total, 1.0), r_V)


def _walk_greedy(argmax_T, tokens_T, parent_T, start=0):
    """Greedy walk from node `start`: path [T] (path[0] = start), its length, the bonus token."""
    T = tokens_T.shape[0]

    def visit(i, carry):
        cur, path, n = carry
        ok = (parent_T[i] == cur) & (tokens_T[i] == argmax_T[cur])
        path = jnp.where(ok, path.at[n].set(i), path)
        return jnp.where(ok, i, cur), path, n + ok

    start = jnp.asarray(start, jnp.int32)
    path0 = jnp.zeros((T,), jnp.int32).at[0].set(start)
    cur, path, n = jax.lax.fori_loop(start + 1, T, visit, (start, path0, jnp.int32(1)))
    return path, n, argmax_T[cur]


def greedy_walk(argmax_BT, tokens_BT, parent_BT, start_B):
    """Batched greedy walk from per-row start nodes (drafters verify against their own argmax)."""
    return jax.vmap(_walk_greedy)(argmax_BT, tokens_BT, parent_BT, start_B)


def _walk_sampling(key, p_TV, tokens_T, parent_T, q_TV):
    T, V = p_TV.shape

    def visit(i, carry):
        cur, path, n, r = carry
        x = tokens_T[i]
        q = jax.nn.one_hot(x, V, dtype=r.dtype) if q_TV is None else q_TV[i]
        is_child = parent_T[i] == cur
        ratio = r[x] / jnp.maximum(q[x], 1e-30)
        accept = is_child & (jax.random.uniform(jax.random.fold_in(key, i)) < ratio)
        reject = is_child & ~accept
        r = jnp.where(accept, p_TV[i], jnp.where(reject, _residual(r, q), r))
        path = jnp.where(accept, path.at[n].set(i), path)
        return jnp.where(accept, i, cur), path, n + accept, r

    init = (jnp.int32(0), jnp.zeros((T,), jnp.int32), jnp.int32(1), p_TV[0])
    cur, path, n, r = jax.lax.fori_loop(1, T, visit, init)
    bonus = jax.random.categorical(jax.random.fold_in(key, T), jnp.log(r))
    return path, n, bonus.astype(jnp.int32)


def verify(
    keys_B: jax.Array, logits_BTV: jax.Array, cands: Candidates, sampling: SamplingConfig
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Accepts a path through each row's block.

    Args:
      keys_B: one PRNG key per row (unused when greedy).
      logits_BTV: the target's logits after every node of the block.
      cands: the block (tokens, parent, q_probs).

    Returns:
      path_BT (node indices, path[:, 0] = 0, entries past n_path are 0), n_path_B (1 + accepted),
      bonus_B (the target's next token after the path).
    """
    if sampling.greedy:
        argmax_BT = jnp.argmax(logits_BTV, axis=-1).astype(jnp.int32)
        return jax.vmap(_walk_greedy)(argmax_BT, cands.tokens, cands.parent)
    p_BTV = probabilities(logits_BTV, sampling)
    if cands.q_probs is None:
        walk = jax.vmap(lambda k, p, t, par: _walk_sampling(k, p, t, par, None))
        return walk(keys_B, p_BTV, cands.tokens, cands.parent)
    return jax.vmap(_walk_sampling)(keys_B, p_BTV, cands.tokens, cands.parent, cands.q_probs)
