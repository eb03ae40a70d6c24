"""The CTC drafter on a tiny random target: CTC collapse on trees and chains, and greedy equals
vanilla with blanks and repeats in the drafted frames (collapse on) and without (EAGLE-1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.config import ModelConfig
from models.ctc_draft import attach, draft_config, init_ctc_head
from models.transformer import init_params, sequence_hidden
from specjax.candidates import NO_PARENT, ROOT_PARENT
from specjax.ctc_collapse import collapse_path, collapse_tree
from specjax.drafters.ctc import BLANK_FRAME, CTCDrafter
from specjax.engine import generate
from specjax.static_tree import MC_SIM_7B_63, tree_from_paths

TARGET = ModelConfig(model_type="llama", V=64, D=32, L=3, F=64, Q=4, K=2, H=8, max_positions=256)
PROMPTS = [[5, 6, 7, 8, 9, 5, 6, 7], [3, 4], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]]
B_ = BLANK_FRAME


def _collapse_chain(frames):
    """A chain root -> 1 -> 2 -> ... collapsed; returns the kept nodes' parents."""
    T = len(frames)
    parent = jnp.asarray([[ROOT_PARENT] + list(range(T - 1))], jnp.int32)
    return collapse_tree(jnp.asarray([frames], jnp.int32), parent, B_, T - 1)[0].tolist()


@pytest.mark.parametrize(
    "frames,want",
    [
        ([9, 4, 4, 5], [ROOT_PARENT, 0, NO_PARENT, 1]),  # a repeat merges into its frame
        ([9, 4, B_, 4], [ROOT_PARENT, 0, NO_PARENT, 1]),  # "a _ a" is two a's
        ([9, B_, B_, B_], [ROOT_PARENT, NO_PARENT, NO_PARENT, NO_PARENT]),  # only blanks
        ([9, 1, 2, 3], [ROOT_PARENT, 0, 1, 2]),  # nothing to collapse
        ([9, 9, 3, 3], [ROOT_PARENT, 0, 1, NO_PARENT]),  # the root is not a frame
        ([9, B_, 5, 5, 5, 6], [ROOT_PARENT, NO_PARENT, 0, NO_PARENT, NO_PARENT, 2]),
    ],
    ids=["repeat", "blank_between_repeats", "only_blanks", "nothing", "root_equal", "runs"],
)
def test_collapse_on_a_chain(frames, want):
    assert _collapse_chain(frames) == want


@pytest.mark.parametrize(
    "frames,tokens,length",
    [
        ([4, 4, 5, B_, 5, 5], [4, 5, 5, -1, -1, -1], 3),
        ([B_, B_, B_], [-1, -1, -1], 0),
        ([1, 2, 3], [1, 2, 3], 3),
        ([B_, 7, B_, 7], [7, 7, -1, -1], 2),
    ],
    ids=["repeats_and_blank", "only_blanks", "nothing", "blanks_first"],
)
def test_collapse_path_left_compacts(frames, tokens, length):
    got, n = collapse_path(jnp.asarray([frames], jnp.int32), B_)
    assert got[0].tolist() == tokens and int(n[0]) == length


def test_collapse_on_a_tree_moves_children_to_the_kept_ancestor():
    # root 0 -> 1 (a) -> 2 (a, repeat) -> 4 (b); 1 -> 3 (blank) -> 5 (c); 0 -> 6 (blank) -> 7 (d)
    parent = [ROOT_PARENT, 0, 1, 1, 2, 3, 0, 6]
    frames = [9, 1, 1, B_, 2, 3, B_, 4]
    got = collapse_tree(jnp.asarray([frames]), jnp.asarray([parent]), B_, 3)[0].tolist()
    assert got == [ROOT_PARENT, 0, NO_PARENT, NO_PARENT, 1, 1, NO_PARENT, 0]


@pytest.fixture(scope="module")
def target():
    return init_params(TARGET, jax.random.key(0))


def _head(target, blank_bias: float, frequent: bool):
    ids = jnp.arange(0, TARGET.V, 2, dtype=jnp.int32) if frequent else None
    head = init_ctc_head(TARGET, target, jax.random.key(3), ids, scale=0.3)
    # a blank logit near the tokens' so that blanks show up among the top guesses
    return attach(head.replace(blank_b=jnp.full((1,), blank_bias)), target)


@pytest.mark.parametrize(
    "collapse,frequent,batch",
    [
        (True, False, "three_ragged"),
        (True, True, "one"),
        (False, True, "three_ragged"),
    ],
    ids=["ctc_full_vocab_B3", "ctc_frequent_B1", "eagle1_frequent_B3"],
)
def test_greedy_equals_vanilla(target, batch, frequent, collapse):
    prompts = PROMPTS[2:] if batch == "one" else PROMPTS
    params = _head(target, blank_bias=6.0, frequent=frequent)
    tree = tree_from_paths(MC_SIM_7B_63, max_depth=4)
    drafter = CTCDrafter(draft_config(TARGET), tree, collapse=collapse)
    vanilla = generate(TARGET, target, prompts, max_new_tokens=32)
    spec = generate(
        TARGET, target, prompts, max_new_tokens=32, drafter=drafter, draft_params=params
    )
    assert spec.tokens == vanilla.tokens
    assert sum(spec.drafted) > 0


def test_blanks_and_repeats_are_collapsed_in_proposed_trees(target):
    """The drafter's blocks hold no blank node and no kept node equal to its frame parent."""
    params = _head(target, blank_bias=6.0, frequent=False)
    tree = tree_from_paths(MC_SIM_7B_63, max_depth=4)
    drafter = CTCDrafter(draft_config(TARGET), tree)
    from specjax.candidates import DraftContext, Prefill
    from specjax.sampling import SamplingConfig

    P = len(PROMPTS[2])
    tokens = jnp.asarray([PROMPTS[2]], jnp.int32)
    hidden = sequence_hidden(TARGET, target, tokens)
    state = drafter.init(params, Prefill(tokens, jnp.asarray([P]), hidden), 64)
    ctx = DraftContext(
        root=jnp.asarray([3]), root_position=jnp.asarray([P]), hidden=hidden[:, -1],
        done=jnp.asarray([False]),
    )  # fmt: skip
    table = np.asarray(drafter._frames(params, state, ctx))[0]
    assert (table == BLANK_FRAME).any()  # the case under test occurs
    cands, _ = drafter.propose(params, state, ctx, None, SamplingConfig())
    parent = np.asarray(cands.parent)[0]
    frames = np.concatenate([[3], table[tree.depth[1:] - 1, tree.rank[1:]]])
    kept = np.nonzero(parent >= 0)[0]
    assert (frames[kept] != BLANK_FRAME).all()
    assert len(kept) < tree.size
