"""ReDrafter's head and beam search on a tiny random head: the first step grows beam 0 only, beam
scores are the sums of their tokens' log-probs, and merged beams form the trie of the beams."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from models.recurrent_head import LOG_ZERO, head_log_probs, init_head, rnn_step
from specjax.beam_search import beam_search, beam_tree
from specjax.candidates import NO_PARENT, ROOT_PARENT, dedup_prefixes, pack_tree

D, V = 16, 40


def _setup(seed=0, head_token_ids=None):
    k = jax.random.split(jax.random.key(seed), 4)
    # A large head scale so the log-probs are far from uniform and ties cannot occur.
    head = init_head(k[0], D, V, head_token_ids=head_token_ids)
    head = head.replace(lm_head=head.lm_head * 8)
    embed = jax.random.normal(k[1], (V, D))
    hidden = jax.random.normal(k[2], (3, D))
    root = jnp.array([3, 17, 29])
    return head, embed, hidden, root


def _replay(head, embed, hidden_D, root, tokens, top_k=50):
    """Each token's log-prob under the head, fed one by one from the root: the reference."""
    cols = np.asarray(head.head_token_ids) if head.head_token_ids is not None else np.arange(V)
    state = rnn_step(head, jnp.zeros((D,)), embed[root])
    out = []
    for tok in tokens:
        lp = head_log_probs(head, hidden_D, state, top_k)
        out.append(float(lp[int(np.flatnonzero(cols == tok)[0])]))
        state = rnn_step(head, state, embed[tok])
    return out


def test_the_first_step_grows_beam_0_into_its_best_tokens():
    head, embed, hidden, root = _setup()
    beams = beam_search(head, embed, hidden, root, width=4, length=1)
    for b in range(3):
        state = rnn_step(head, jnp.zeros((D,)), embed[root[b]])
        lp = np.asarray(head_log_probs(head, hidden[b], state))
        best = np.argsort(-lp)[:4]
        assert beams.tokens_BWL[b, :, 0].tolist() == best.tolist()
        np.testing.assert_allclose(beams.scores_BW[b], lp[best], atol=1e-5)


def test_beam_scores_are_the_sums_of_their_tokens_log_probs():
    head, embed, hidden, root = _setup(1)
    beams = beam_search(head, embed, hidden, root, width=3, length=4)
    scores = np.asarray(beams.scores_BW)
    assert (np.diff(scores, axis=1) <= 0).all()  # best beam first
    for b in range(3):
        for w in range(3):
            tokens = beams.tokens_BWL[b, w].tolist()
            replayed = _replay(head, embed, hidden[b], int(root[b]), tokens)
            np.testing.assert_allclose(beams.token_log_probs_BWL[b, w], replayed, atol=1e-5)
            np.testing.assert_allclose(scores[b, w], sum(replayed), atol=1e-4)
            assert scores[b, w] > LOG_ZERO / 2  # every beam is a real continuation


def test_a_frequent_token_head_drafts_only_its_tokens():
    ids = jnp.array([1, 4, 6, 9, 12, 20, 33, 39], jnp.int32)
    head, embed, hidden, root = _setup(2, head_token_ids=ids)
    beams = beam_search(head, embed, hidden, root, width=3, length=3)
    assert set(np.asarray(beams.tokens_BWL).ravel().tolist()) <= set(ids.tolist())
    tokens = beams.tokens_BWL[0, 0].tolist()
    replayed = _replay(head, embed, hidden[0], int(root[0]), tokens)
    np.testing.assert_allclose(beams.scores_BW[0, 0], sum(replayed), atol=1e-4)


def _trie(root, beams):
    """The trie of the beams, inserted one by one: {path of tokens}."""
    paths = set()
    for beam in beams:
        for n in range(1, len(beam) + 1):
            paths.add((root, *beam[:n]))
    return paths


def _paths(tokens, parent):
    out = set()
    for i in range(len(tokens)):
        if parent[i] == NO_PARENT:
            continue
        path, j = [], i
        while j != ROOT_PARENT:
            path.append(tokens[j])
            j = parent[j]
        out.add(tuple(reversed(path)))
    return out


def test_merged_beams_are_the_trie_of_the_beams():
    # Beams with shared prefixes, as beam search produces them.
    tokens_BWL = jnp.array([[[5, 6, 7], [5, 6, 8], [5, 9, 1], [2, 3, 4]]], jnp.int32)
    root = jnp.array([11])
    tokens, parent = beam_tree(root, tokens_BWL)
    assert tokens.shape == (1, 13) and parent.shape == (1, 13)
    merged = dedup_prefixes(tokens, parent)
    paths = _paths(np.asarray(tokens[0]).tolist(), np.asarray(merged[0]).tolist())
    assert paths == _trie(11, np.asarray(tokens_BWL[0]).tolist()) | {(11,)}
    # Each distinct path (the root included) keeps exactly one live node.
    assert int((np.asarray(merged[0]) != NO_PARENT).sum()) == len(paths)


def test_pack_tree_moves_the_distinct_nodes_forward_and_cuts_whole_subtrees():
    """Beams [7 8 9], [7 8 4], [5 6 1] merge into root-7-8-{9,4} and root-5-6-1; packed into 6
    slots the nodes keep their order and the last beam loses only what does not fit."""
    tokens_BWL = jnp.asarray([[[7, 8, 9], [7, 8, 4], [5, 6, 1]]], jnp.int32)
    tokens, parent = beam_tree(jnp.asarray([3], jnp.int32), tokens_BWL)
    parent = dedup_prefixes(tokens, parent)
    packed_tokens, packed_parent = pack_tree(tokens, parent, 6)
    assert packed_tokens.tolist() == [[3, 7, 8, 9, 4, 5]]
    assert packed_parent.tolist() == [[ROOT_PARENT, 0, 1, 2, 2, 0]]
    roomy_tokens, roomy_parent = pack_tree(tokens, parent, 10)
    assert roomy_tokens[0, :8].tolist() == [3, 7, 8, 9, 4, 5, 6, 1]
    assert roomy_parent.tolist() == [[ROOT_PARENT, 0, 1, 2, 2, 0, 5, 6, NO_PARENT, NO_PARENT]]
