"""Exactness of verification: the first two emitted tokens are distributed as the target's.

A Markov toy target P (next token depends on the last one) and a different draft Q over a 6-token
vocabulary. 100,000 vmapped seeds each draw a draft block, run the real `verify`, and emit tokens;
a chi-square test compares the (first, second) pair counts with P0(a) P(b | a). A deliberately wrong
residual must fail the same test, which shows the test has the power to catch a broken rule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from specjax import verify as verify_module
from specjax.candidates import NO_PARENT, Candidates
from specjax.sampling import SamplingConfig
from specjax.verify import verify

V = 6
N_SAMPLES = 100_000
_rng = np.random.default_rng(0)
P0 = _rng.dirichlet(np.ones(V))  # target at the root
P = _rng.dirichlet(np.ones(V), size=V)  # target after token a
Q0 = _rng.dirichlet(np.ones(V))  # draft at the root
Q = _rng.dirichlet(np.ones(V), size=V)
SAMPLING = SamplingConfig(temperature=1.0)

# Each case: parent indices and, per draft node, how it is drawn: ("q", parent_slot) samples from
# Q at the parent's token; ("top", rank) is the rank-th most likely token under Q0 (deterministic);
# ("argmax", parent_slot) is argmax Q at the parent's token (deterministic).
CASES = {
    "chain_sampled_from_q": ([-1, 0, 1, 2], [("q", 0), ("q", 1), ("q", 2)]),
    "tree_iid_children_from_q": (
        [-1, 0, 0, 0, 1, 2, 3],
        [("q", 0), ("q", 0), ("q", 0), ("q", 1), ("q", 2), ("q", 3)],
    ),
    "tree_one_hot_deterministic": (
        [-1, 0, 0, 0, 1, 2, 3, NO_PARENT],
        [("top", 0), ("top", 1), ("top", 2), ("argmax", 1), ("argmax", 2), ("argmax", 3), None],
    ),
}


def _draft(key, parent, how):
    """Tokens [T] and q [T, V] of one block (q None for deterministic cases)."""
    T = len(parent)
    tokens = [jnp.int32(0)]  # the root's own token is irrelevant: its target is P0
    qs = [jnp.zeros(V)]
    for i in range(1, T):
        kind = how[i - 1]
        if kind is None:
            tokens.append(jnp.int32(0))
            qs.append(jnp.zeros(V))
            continue
        kind, arg = kind
        if kind == "q":
            dist = jnp.asarray(Q0) if arg == 0 else jnp.asarray(Q)[tokens[arg]]
            tok = jax.random.categorical(jax.random.fold_in(key, i), jnp.log(dist))
            qs.append(dist)
        elif kind == "top":
            tok = jnp.int32(np.argsort(-Q0)[arg])
            qs.append(jax.nn.one_hot(tok, V))
        else:
            tok = jnp.argmax(jnp.asarray(Q)[tokens[arg]])
            qs.append(jax.nn.one_hot(tok, V))
        tokens.append(tok.astype(jnp.int32))
    return jnp.stack(tokens), jnp.stack(qs)


def _first_two(key, parent, how, deterministic):
    draft_key, verify_key, next_key = jax.random.split(key, 3)
    tokens, q = _draft(draft_key, parent, how)
    target = jnp.concatenate([jnp.asarray(P0)[None], jnp.asarray(P)[tokens[1:]]])
    cands = Candidates(
        tokens=tokens[None],
        parent=jnp.asarray(parent, jnp.int32)[None],
        q_probs=None if deterministic else q[None],
    )
    path, n, bonus = verify(verify_key[None], jnp.log(target)[None], cands, SAMPLING)
    emitted = jnp.concatenate([tokens[path[0]][1:], bonus])  # accepted drafts, then the bonus
    first = jnp.where(n[0] >= 2, emitted[0], bonus[0])
    # With only a bonus this step, the next token comes from an exact next step: draw it from P.
    fallback = jax.random.categorical(next_key, jnp.log(jnp.asarray(P)[bonus[0]]))
    second = jnp.where(n[0] >= 3, emitted[1], jnp.where(n[0] == 2, bonus[0], fallback))
    return first, second


def _pvalue(case: str) -> float:
    parent, how = CASES[case]
    deterministic = case.endswith("deterministic")
    keys = jax.random.split(jax.random.key(123), N_SAMPLES)
    fn = jax.jit(jax.vmap(lambda k: _first_two(k, parent, how, deterministic)))
    first, second = fn(keys)
    counts = np.bincount(np.asarray(first) * V + np.asarray(second), minlength=V * V)
    expected = (P0[:, None] * P).reshape(-1) * N_SAMPLES
    return stats.chisquare(counts, expected).pvalue


@pytest.mark.parametrize("case", list(CASES))
def test_emitted_tokens_follow_the_target_distribution(case):
    assert _pvalue(case) > 1e-3


def _wrong_residual(r_V, q_V):
    """The classic bug: after a rejection, resample from p itself instead of norm(max(0, p - q))."""
    return r_V


@pytest.mark.parametrize("case", ["chain_sampled_from_q", "tree_one_hot_deterministic"])
def test_a_wrong_residual_fails_the_same_test(case, monkeypatch):
    monkeypatch.setattr(verify_module, "_residual", _wrong_residual)
    assert _pvalue(case) < 1e-3


def test_greedy_accepts_exactly_the_target_argmax_path():
    """root -> {wrong, best0}; best0 -> {best1}; best1 -> {wrong2}: accept best0, best1, stop."""
    best0 = int(np.argmax(P0))
    best1 = int(np.argmax(P[best0]))
    wrong, wrong2 = (best0 + 1) % V, (int(np.argmax(P[best1])) + 1) % V
    tokens = jnp.asarray([[0, wrong, best0, best1, wrong2]], jnp.int32)
    logits = jnp.log(jnp.asarray([P0, P[wrong], P[best0], P[best1], P[wrong2]]))[None]
    cands = Candidates(tokens=tokens, parent=jnp.asarray([[-1, 0, 0, 2, 3]], jnp.int32))
    path, n, bonus = verify(jax.random.split(jax.random.key(0), 1), logits, cands, SamplingConfig())
    assert int(n[0]) == 3
    assert path[0, :3].tolist() == [0, 2, 3]
    assert int(bonus[0]) == int(np.argmax(P[best1]))


def test_dedup_merges_repeated_prefixes_so_the_longer_branch_is_reachable():
    """root -> a -> b (slots 1, 2) and root -> a -> c -> d (slots 3, 4, 5): the second `a` is
    emptied and c moves under the first, so greedy verification can follow a, c, d."""
    from specjax.candidates import dedup_prefixes

    a, b, c, d = 7, 8, 9, 10
    tokens = jnp.asarray([[0, a, b, a, c, d]], jnp.int32)
    parent = jnp.asarray([[-1, 0, 1, 0, 3, 4]], jnp.int32)
    merged = dedup_prefixes(tokens, parent)
    assert merged[0].tolist() == [-1, 0, 1, NO_PARENT, 1, 4]
    argmax = jnp.asarray([[a, c, 0, 0, d, 11]], jnp.int32)  # the target says a, c, d, then 11
    path, n, bonus = verify_module.greedy_walk(argmax, tokens, merged, jnp.zeros((1,), jnp.int32))
    assert int(n[0]) == 4 and path[0, :4].tolist() == [0, 1, 4, 5] and int(bonus[0]) == 11
    # Without the merge the walk stops after the first a.
    _, n_raw, _ = verify_module.greedy_walk(argmax, tokens, parent, jnp.zeros((1,), jnp.int32))
    assert int(n_raw[0]) == 2


def test_greedy_walk_can_start_inside_the_block():
    """Drafters re-feed a few committed tokens before the root: the walk starts at the root."""
    tokens = jnp.asarray([[3, 4, 5, 6]], jnp.int32)
    parent = jnp.asarray([[-1, 0, 1, 2]], jnp.int32)
    argmax = jnp.asarray([[0, 0, 6, 1]], jnp.int32)
    path, n, bonus = verify_module.greedy_walk(argmax, tokens, parent, jnp.asarray([2]))
    assert int(n[0]) == 2 and path[0, :2].tolist() == [2, 3] and int(bonus[0]) == 1
