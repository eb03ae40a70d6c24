"""Acceptance policies on hand-made distributions: Medusa's typical rule, the deepest acceptable
path through a tree, and the exact policy being `verify` itself."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.errors import SpecjaxError
from specjax.acceptance import (
    ExactAcceptance,
    TypicalAcceptance,
    make_policy,
    typical_acceptable,
)
from specjax.candidates import NO_PARENT, Candidates
from specjax.sampling import SamplingConfig

V = 4
T1 = SamplingConfig(temperature=1.0)
# Node distributions: node 0 (root) is peaked on token 1, node 1 flat, node 2 peaked on token 3.
P = np.array(
    [
        [0.05, 0.85, 0.05, 0.05],
        [0.25, 0.25, 0.25, 0.25],
        [0.02, 0.02, 0.02, 0.94],
        [0.4, 0.3, 0.2, 0.1],
    ]
)
LOGITS = jnp.log(jnp.asarray(P, jnp.float32))[None]  # [1, T=4, V]


def entropy(p):
    return -(p * np.log(p)).sum()


def cands(tokens, parent):
    return Candidates(tokens=jnp.asarray([tokens], jnp.int32), parent=jnp.asarray([parent]))


def test_typical_rule_matches_its_formula():
    """p_parent(x) > min(eps, alpha * exp(-H(p_parent))), node by node."""
    eps, alpha = 0.09, 0.3
    c = cands([0, 1, 0, 3], [-1, 0, 0, 1])  # x1=1 and x2=0 under the root, x3=3 under node 1
    ok = np.asarray(typical_acceptable(LOGITS, c, T1, eps, alpha))[0]
    for i, parent in [(1, 0), (2, 0), (3, 1)]:
        x = [0, 1, 0, 3][i]
        want = P[parent, x] > min(eps, alpha * np.exp(-entropy(P[parent])))
        assert ok[i] == want, i
    assert ok.tolist() == [False, True, False, True]  # root excluded; 0.05 is under the bar


def test_deepest_acceptable_path_wins_and_bonus_follows_it():
    # root -> 1 (ok) -> 3 (ok: p_1(3) = 0.25) ; root -> 2 (not ok: 0.05)
    c = cands([0, 1, 2, 3], [-1, 0, 0, 1])
    path, n_path, bonus = TypicalAcceptance().accept(jax.random.key(0)[None], LOGITS, c, T1)
    assert int(n_path[0]) == 3 and path[0, :3].tolist() == [0, 1, 3]
    assert 0 <= int(bonus[0]) < V


def test_a_rejected_parent_cuts_its_subtree():
    # root -> 2 (rejected) -> 3 (would pass under node 2, but its parent failed)
    c = cands([0, 2, 3, 0], [-1, 0, 1, NO_PARENT])
    _, n_path, _ = TypicalAcceptance().accept(jax.random.key(0)[None], LOGITS, c, T1)
    assert int(n_path[0]) == 1


def test_greedy_typical_accepts_exactly_the_argmax_chain():
    c = cands([0, 1, 3, 0], [-1, 0, 1, 2])  # argmax of node 0 is 1, of node 1 (flat) is 0
    exact = ExactAcceptance().accept(jax.random.key(0)[None], LOGITS, c, SamplingConfig())
    typical = TypicalAcceptance().accept(jax.random.key(0)[None], LOGITS, c, SamplingConfig())
    for a, b in zip(exact, typical, strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(typical[1][0]) == 2  # the root and token 1; 3 is not node 1's argmax


def test_thresholds_above_one_accept_nothing():
    c = cands([0, 1, 3, 0], [-1, 0, 1, 2])
    never = TypicalAcceptance(eps=1.5, alpha=1e9)
    _, n_path, _ = never.accept(jax.random.key(0)[None], LOGITS, c, T1)
    assert int(n_path[0]) == 1


def test_policies_declare_whether_they_are_lossless():
    assert make_policy("exact").lossless and not make_policy("typical").lossless
    with pytest.raises(SpecjaxError, match="unknown acceptance policy 'best_beam'"):
        make_policy("best_beam")
    with pytest.raises(SpecjaxError, match="eps > 0"):
        TypicalAcceptance(eps=0.0)
