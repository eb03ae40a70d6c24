"""Acceptance policies: the rule that turns the target's logits over a draft block into the accepted
path and the token after it. The engine's step is propose -> target block -> accept -> commit ->
update -> emit, and "accept" is one of these small static (hashable) objects.

Each policy declares `lossless`: whether the output keeps the target's distribution exactly
(greedy: equals vanilla greedy token for token). Approximate policies trade that for longer accepted
runs and must report their distance from the target (the bench does).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import jax
import jax.numpy as jnp

from models.errors import SpecjaxError
from specjax.candidates import NO_PARENT, Candidates
from specjax.sampling import SamplingConfig, probabilities, warp_logits
from specjax.verify import verify


class AcceptancePolicy(Protocol):
    """accept(keys_B, logits_BTV, cands, sampling) -> (path_BT, n_path_B, bonus_B).

    path[:, 0] = 0 (the root); path[:, 1:n_path] are the accepted draft nodes, root to leaf;
    bonus is the token emitted after them (the next root).
    """

    lossless: bool

    def accept(
        self, keys_B: jax.Array, logits_BTV: jax.Array, cands: Candidates, sampling: SamplingConfig
    ) -> tuple[jax.Array, jax.Array, jax.Array]: ...


@dataclasses.dataclass(frozen=True)
class ExactAcceptance:
    """Greedy walk / exact multi-candidate speculative sampling (`specjax.verify`): the default."""

    lossless: bool = dataclasses.field(default=True, init=False)

    def accept(self, keys_B, logits_BTV, cands, sampling):
        return verify(keys_B, logits_BTV, cands, sampling)


@dataclasses.dataclass(frozen=True)
class TypicalAcceptance:
    """Medusa's typical acceptance (Cai et al. 2024, Sec. 3.3.1): a draft token x after node u is
    acceptable when p_u(x) > min(eps, alpha * exp(-H(p_u))), with p_u the target's distribution at
    u (temperature applied) and H its entropy. The accepted path is the deepest node whose whole
    path is acceptable (the first such node on ties); the token after it is the target's own (a
    draw from p at temperature > 0, the argmax at 0). At temperature 0 a token is acceptable iff it
    is the target's argmax, so the output equals vanilla greedy. Approximate: lossless is False.
    """

    eps: float = 0.09  # posterior_threshold in Medusa's code
    alpha: float = 0.3  # posterior_alpha: sqrt of the paper's delta
    lossless: bool = dataclasses.field(default=False, init=False)

    def __post_init__(self):
        if not (self.eps > 0 and self.alpha > 0):
            raise SpecjaxError(f"typical acceptance needs eps > 0 and alpha > 0, got {self}")

    def accept(self, keys_B, logits_BTV, cands, sampling):
        if sampling.greedy:
            ok_BT = _greedy_acceptable(logits_BTV, cands)
        else:
            ok_BT = typical_acceptable(logits_BTV, cands, sampling, self.eps, self.alpha)
        path, n_path, last = jax.vmap(_deepest_path)(ok_BT, cands.parent)
        rows = jnp.arange(last.shape[0])
        at_last = logits_BTV[rows, last]
        if sampling.greedy:
            bonus = jnp.argmax(at_last, axis=-1).astype(jnp.int32)
        else:
            keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys_B)
            warped = warp_logits(at_last, sampling)
            bonus = jax.vmap(jax.random.categorical)(keys, warped).astype(jnp.int32)
        return path, n_path, bonus


@dataclasses.dataclass(frozen=True)
class LastTokenAcceptance:
    """SPRINTER's rule (Zhong et al. 2025, `speculative_sampling_sprinter`): the drafts of a chain
    before its last one were vouched for by the learned verifier and are kept unchecked; only
    the last (the flagged one, or the K-th) is tested by the speculative-sampling rule: kept with
    probability min(1, p(x)/q(x)) under the target's p at its parent, else replaced by a draw from
    norm(max(p - q, 0)); when kept, the bonus token is drawn from p after it. Greedy: the last
    draft is kept iff it is the target's argmax, and the replacement is that argmax.
    Approximate: the output's distance from the target's is at most the verifier's false-positive
    rate times TV(p, q) per unchecked token (the paper's bound); lossless is False.
    """

    lossless: bool = dataclasses.field(default=False, init=False)

    def accept(self, keys_B, logits_BTV, cands, sampling):
        B, T, V = logits_BTV.shape
        rows = jnp.arange(B)
        n = cands.num_drafted  # [B]; the chain is root, 1, ..., n
        x = cands.tokens[rows, n]
        at_parent = logits_BTV[rows, jnp.maximum(n - 1, 0)]
        at_last = logits_BTV[rows, n]
        if sampling.greedy:
            keep = jnp.argmax(at_parent, axis=-1) == x
            replacement = jnp.argmax(at_parent, axis=-1)
            after = jnp.argmax(at_last, axis=-1)
        else:
            p = probabilities(at_parent, sampling)
            q = (
                jax.nn.one_hot(x, V, dtype=p.dtype)
                if cands.q_probs is None
                else cands.q_probs[rows, n]
            )
            ratio = p[rows, x] / jnp.maximum(q[rows, x], 1e-30)
            u = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 0)))(keys_B)
            keep = u < ratio
            residual = jnp.maximum(p - q, 0.0)
            residual = jnp.where(residual.sum(-1, keepdims=True) > 0, residual, p)
            draw = lambda i, logits: jax.vmap(  # noqa: E731
                lambda k, lg: jax.random.categorical(jax.random.fold_in(k, i), lg)
            )(keys_B, logits)
            replacement = draw(1, jnp.log(residual))
            after = draw(2, warp_logits(at_last, sampling))
        keep = keep & (n > 0)
        n_path = jnp.where(keep, n + 1, jnp.maximum(n, 1))
        # With no draft at all, the root alone: the bonus is the target's token after it.
        bonus = jnp.where(keep | (n == 0), after, replacement).astype(jnp.int32)
        index = jnp.arange(T, dtype=jnp.int32)
        path = jnp.where(index[None, :] < n_path[:, None], index[None, :], 0)
        return path, n_path, bonus


POLICIES = {"exact": ExactAcceptance, "typical": TypicalAcceptance, "sprinter": LastTokenAcceptance}


def make_policy(name: str) -> AcceptancePolicy:
    if name not in POLICIES:
        raise SpecjaxError(
            f"unknown acceptance policy {name!r} (choose from {', '.join(POLICIES)})"
        )
    return POLICIES[name]()


def typical_acceptable(
    logits_BTV: jax.Array, cands: Candidates, sampling: SamplingConfig, eps: float, alpha: float
) -> jax.Array:
    """bool [B, T]: node i's token passes the typical test under its parent's distribution (the
    root, and empty slots, are False; the root is accepted by construction)."""
    p_BTV = jax.nn.softmax(warp_logits(logits_BTV, sampling), axis=-1)
    logp = jnp.log(jnp.maximum(p_BTV, 1e-30))
    entropy_BT = -jnp.sum(jnp.where(p_BTV > 0, p_BTV * logp, 0.0), axis=-1)
    threshold_BT = jnp.minimum(eps, alpha * jnp.exp(-entropy_BT))
    parent = jnp.maximum(cands.parent, 0)
    rows = jnp.arange(parent.shape[0])[:, None]
    p_token = p_BTV[rows, parent, cands.tokens]  # p_{parent(i)}(x_i)
    return (cands.parent >= 0) & (p_token > threshold_BT[rows, parent])


def _greedy_acceptable(logits_BTV: jax.Array, cands: Candidates) -> jax.Array:
    argmax_BT = jnp.argmax(probabilities(logits_BTV, SamplingConfig()), axis=-1)
    parent = jnp.maximum(cands.parent, 0)
    rows = jnp.arange(parent.shape[0])[:, None]
    return (cands.parent >= 0) & (cands.tokens == argmax_BT[rows, parent])


def _deepest_path(ok_T: jax.Array, parent_T: jax.Array):
    """(path [T], n_path, last node) of the deepest node whose every ancestor is acceptable."""
    T = ok_T.shape[0]

    def reach(i, carry):
        reached, depth = carry
        p = jnp.maximum(parent_T[i], 0)
        r = ok_T[i] & (parent_T[i] != NO_PARENT) & reached[p]
        return reached.at[i].set(r), depth.at[i].set(jnp.where(r, depth[p] + 1, 0))

    reached0 = jnp.zeros((T,), bool).at[0].set(True)
    reached, depth = jax.lax.fori_loop(1, T, reach, (reached0, jnp.zeros((T,), jnp.int32)))
    last = jnp.argmax(jnp.where(reached, depth, -1)).astype(jnp.int32)  # first deepest
    n_path = depth[last] + 1

    def back(k, carry):  # walk from `last` to the root, writing path[depth] = node
        node, path = carry
        path = path.at[depth[node]].set(node)
        return jnp.maximum(parent_T[node], 0), path

    _, path = jax.lax.fori_loop(0, T, back, (last, jnp.zeros((T,), jnp.int32)))
    path = jnp.where(jnp.arange(T) < n_path, path, 0)
    return path, n_path, last
