"""The prompt-lookup branch beside a tree drafter (`--lookup=K`): how the chain shares the block
with the tree's nodes, and that Medusa and the CTC drafter with it still decode exactly what
vanilla does (tiny random target, B = 1 and 3 ragged; its greedy text repeats itself, so the
lookup finds matches). The sampled case is `test_speculative`'s chi-square test."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.config import ModelConfig
from models.ctc_draft import attach, draft_config, init_ctc_head
from models.medusa_heads import init_heads
from models.transformer import init_params
from specjax.candidates import Candidates, DraftContext, Prefill
from specjax.drafters.ctc import CTCDrafter
from specjax.drafters.lookup_branch import BranchParams, LookupBranch, node_priority
from specjax.drafters.medusa import MedusaDrafter
from specjax.engine import generate
from specjax.sampling import SamplingConfig
from specjax.static_tree import tree_from_paths

TARGET = ModelConfig(model_type="llama", V=64, D=32, L=3, F=64, Q=4, K=2, H=8, max_positions=256)
PROMPTS = [[5, 6, 7, 8, 9, 5, 6, 7], [3, 4], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]]
TREE = ((0,), (1,), (0, 0), (0, 1), (1, 0))  # 6 slots with the root


@dataclasses.dataclass(frozen=True)
class FixedTree:
    """An inner drafter that always proposes the same nodes under the root."""

    tokens: tuple[int, ...]
    parent: tuple[int, ...]

    @property
    def block_size(self) -> int:
        return 1 + len(self.tokens)

    def init(self, params, prefill, cache_len):
        return None

    def propose(self, params, state, ctx, keys_B, sampling):
        B = ctx.root.shape[0]
        nodes = jnp.broadcast_to(jnp.asarray(self.tokens, jnp.int32), (B, len(self.tokens)))
        tokens = jnp.concatenate([ctx.root[:, None].astype(jnp.int32), nodes], axis=1)
        parent = jnp.broadcast_to(jnp.asarray((-1, *self.parent), jnp.int32), tokens.shape)
        return Candidates(tokens=tokens, parent=parent), state

    def update(self, params, state, verified):
        return state


# nodes 1..4: (0,) = 10, (1,) = 11, (0, 0) = 12, (0, 1) = 13; (0, 0) is likelier than (1,)
INNER = FixedTree(tokens=(10, 11, 12, 13), parent=(0, 0, 1, 1))
PRIORITY = (1, 3, 2, 4)


def _block(history: list[int], root: int, num_tokens: int = 2) -> tuple[list, list]:
    """(tokens, parent) of the one-row block the branch proposes after `history`, then `root`."""
    drafter = LookupBranch(INNER, PRIORITY, num_tokens=num_tokens)
    P = len(history)
    prefill = Prefill(
        tokens=jnp.asarray([history], jnp.int32),
        length=jnp.asarray([P], jnp.int32),
        hidden=jnp.zeros((1, P, 4)),
    )
    state = drafter.init(BranchParams(None), prefill, cache_len=32)
    ctx = DraftContext(
        root=jnp.asarray([root], jnp.int32),
        root_position=jnp.asarray([P], jnp.int32),
        hidden=jnp.zeros((1, 4)),
        done=jnp.zeros((1,), bool),
    )
    keys = jax.random.split(jax.random.key(0), 1)
    cands, _ = drafter.propose(BranchParams(None), state, ctx, keys, None)
    assert cands.tokens.shape == (1, INNER.block_size)
    return cands.tokens[0].tolist(), cands.parent[0].tolist()


def test_without_a_match_the_tree_keeps_every_slot_in_priority_order():
    assert _block([1, 2, 3], root=4) == ([4, 10, 12, 11, 13], [-1, 0, 1, 0, 1])


def test_a_match_takes_the_slots_of_the_least_likely_nodes():
    """The root 4 was followed by 20, 21 before: the chain takes two slots, (1,) and (0, 1) go."""
    assert _block([4, 20, 21, 5], root=4) == ([4, 20, 21, 10, 12], [-1, 0, 1, 0, 3])


def test_a_chain_that_repeats_the_trees_guesses_merges_with_them():
    """The chain 10, 12 is the tree's (0,), (0, 0): merged, so (1,) and (0, 1) keep their slots,
    (0, 1) now under the chain's first node."""
    assert _block([4, 10, 12, 7], root=4) == ([4, 10, 12, 11, 13], [-1, 0, 1, 0, 1])


def test_a_chain_longer_than_the_block_is_cut_to_it():
    tokens, parent = _block([4, 20, 21, 22, 23, 24, 25, 5], root=4, num_tokens=6)
    assert (tokens, parent) == ([4, 20, 21, 22, 23], [-1, 0, 1, 2, 3])


def test_priority_follows_the_paths_accuracy_and_puts_parents_first():
    accuracy = np.array([[0.6, 0.2], [0.5, 0.1], [0.4, 0.1]])
    paths = ((0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0))
    # likelihoods 0.6, 0.2, 0.3, 0.06, 0.1, 0.12
    assert node_priority(paths, accuracy) == (1, 3, 2, 6, 5, 4)
    assert node_priority(paths, None) == (1, 2, 3, 4, 5, 6)  # depth, then rank
    tied = np.ones((3, 2))  # every path sure: shallower first
    assert node_priority(paths, tied) == (1, 2, 3, 4, 5, 6)


def test_priority_must_order_every_node():
    with pytest.raises(ValueError, match="priority"):
        LookupBranch(INNER, (1, 2, 3), num_tokens=2)


@pytest.fixture(scope="module")
def target():
    return init_params(TARGET, jax.random.key(0))


def _medusa(target):
    heads = init_heads(target, num_heads=2)
    heads = heads.replace(res_w=0.3 * jax.random.normal(jax.random.key(2), heads.res_w.shape))
    return MedusaDrafter(tree_from_paths(TREE)), heads


def _ctc(target, lookup: int):
    head = init_ctc_head(TARGET, target, jax.random.key(3), scale=0.3)
    params = attach(head.replace(blank_b=jnp.full((1,), 6.0)), target)
    return CTCDrafter(draft_config(TARGET), tree_from_paths(TREE), chain_tokens=lookup), params


@pytest.mark.parametrize("batch", ["one", "three_ragged"])
@pytest.mark.parametrize("method", ["medusa", "ctc"])
def test_greedy_equals_vanilla_with_a_lookup_branch(target, method, batch):
    prompts = PROMPTS[2:] if batch == "one" else PROMPTS
    lookup = 4  # longer than the tree is deep: the CTC module appends 5-node paths
    inner, params = _medusa(target) if method == "medusa" else _ctc(target, lookup)
    drafter = LookupBranch(inner, node_priority(inner.tree.paths, None), num_tokens=lookup)
    vanilla = generate(TARGET, target, prompts, max_new_tokens=40)
    spec = generate(
        TARGET, target, prompts, max_new_tokens=40, drafter=drafter,
        draft_params=BranchParams(params),
    )  # fmt: skip
    assert spec.tokens == vanilla.tokens
    alone = generate(TARGET, target, prompts, max_new_tokens=40, drafter=inner, draft_params=params)
    # the random target repeats itself: the chain finds what the untrained heads cannot
    assert sum(spec.accepted) > sum(alone.accepted)
    assert drafter.block_size == inner.block_size


def test_sampling_keeps_the_inner_drafters_q_free():
    """The branch's nodes are deterministic; an inner drafter that samples its nodes cannot
    share a block with them under the one-hot rule."""

    @dataclasses.dataclass(frozen=True)
    class Sampled(FixedTree):
        def propose(self, params, state, ctx, keys_B, sampling):
            cands, state = super().propose(params, state, ctx, keys_B, sampling)
            q = jnp.zeros(cands.tokens.shape + (8,))
            return cands.replace(q_probs=q), state

    drafter = LookupBranch(Sampled(INNER.tokens, INNER.parent), PRIORITY, num_tokens=2)
    prefill = Prefill(
        tokens=jnp.ones((1, 3), jnp.int32), length=jnp.asarray([3]), hidden=jnp.zeros((1, 3, 4))
    )
    ctx = DraftContext(
        root=jnp.asarray([4]), root_position=jnp.asarray([3]), hidden=jnp.zeros((1, 4)),
        done=jnp.zeros((1,), bool),
    )  # fmt: skip
    with pytest.raises(ValueError, match="deterministic"):
        params = BranchParams(None)
        drafter.propose(params, drafter.init(params, prefill, 16), ctx, None, SamplingConfig())
