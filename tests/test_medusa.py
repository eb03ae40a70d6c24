"""Medusa heads and static trees (tiny random target): zero-initialised heads are the target's own
head, greedy equals vanilla on static trees, the tree builder returns the best tree by brute
force, and bad trees are one SpecjaxError line each."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.config import ModelConfig
from models.errors import SpecjaxError
from models.medusa_heads import heads_logits, init_heads
from models.transformer import init_params, lm_logits
from specjax.drafters.medusa import MedusaDrafter
from specjax.engine import generate
from specjax.static_tree import (
    MC_SIM_7B_63,
    build_tree,
    expected_accepted,
    load_tree,
    save_tree,
    tree_from_paths,
)

TARGET = ModelConfig(model_type="llama", V=64, D=32, L=3, F=64, Q=4, K=2, H=8, max_positions=256)
PROMPTS = [[5, 6, 7, 8, 9, 5, 6, 7], [3, 4], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]]
SMALL_TREE = ((0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0))


@pytest.fixture(scope="module")
def target():
    return init_params(TARGET, jax.random.key(0))


@pytest.mark.parametrize("frequent", [False, True], ids=["full_vocab", "frequent_tokens"])
def test_zero_initialised_heads_are_the_targets_head(target, frequent):
    ids = jnp.arange(0, TARGET.V, 3, dtype=jnp.int32) if frequent else None
    heads = init_heads(target, num_heads=4, head_token_ids=ids)
    hidden = jax.random.normal(jax.random.key(1), (5, TARGET.D))
    want = lm_logits(target, hidden[None])[0]  # [5, V]
    want = want if ids is None else want[:, ids]
    got = heads_logits(heads, hidden)  # [5, K, V']
    for k in range(4):
        np.testing.assert_allclose(got[:, k], want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("paths", [SMALL_TREE, MC_SIM_7B_63], ids=["small_tree", "mc_sim_7b_63"])
@pytest.mark.parametrize("batch", ["one", "three_ragged"])
def test_greedy_equals_vanilla(target, batch, paths):
    """Heads moved off their zero start (random blocks) so the guesses differ per depth."""
    prompts = PROMPTS[2:] if batch == "one" else PROMPTS
    heads = init_heads(target, num_heads=4)
    heads = heads.replace(res_w=0.3 * jax.random.normal(jax.random.key(2), heads.res_w.shape))
    tree = tree_from_paths(paths, max_depth=4)
    vanilla = generate(TARGET, target, prompts, max_new_tokens=32)
    spec = generate(
        TARGET, target, prompts, max_new_tokens=32, drafter=MedusaDrafter(tree),
        draft_params=heads,
    )  # fmt: skip
    assert spec.tokens == vanilla.tokens
    assert sum(spec.drafted) > 0
    assert MedusaDrafter(tree).block_size == len(paths) + 1


def test_tree_nodes_come_parents_first_and_best_ranks_first():
    tree = tree_from_paths([(1, 0), (0,), (0, 1), (1,), (0, 0)])
    assert tree.paths == ((0,), (1,), (0, 0), (0, 1), (1, 0))
    assert tree.parent.tolist() == [-1, 0, 0, 1, 1, 2]
    assert tree.depth.tolist() == [0, 1, 1, 2, 2, 2] and tree.rank.tolist() == [0, 0, 1, 0, 1, 0]
    mc = tree_from_paths(MC_SIM_7B_63)
    assert mc.size == 64 and mc.max_depth == 4 and mc.max_rank == 9


def test_expected_accepted_sums_the_path_probabilities():
    acc = np.array([[0.5, 0.2], [0.4, 0.1]])
    tree = tree_from_paths([(0,), (1,), (0, 0), (0, 1)])
    assert expected_accepted(tree, acc) == pytest.approx(0.5 + 0.2 + 0.5 * 0.4 + 0.5 * 0.1)


def _all_trees(depths: int, ranks: int):
    """Every parent-closed set of paths up to `depths` x `ranks`."""
    every = [p for d in range(1, depths + 1) for p in itertools.product(range(ranks), repeat=d)]
    for n in range(len(every) + 1):
        for subset in itertools.combinations(every, n):
            chosen = set(subset)
            if all(len(p) == 1 or p[:-1] in chosen for p in chosen):
                yield tree_from_paths(sorted(chosen)) if chosen else None


@pytest.mark.parametrize("slope", [0.05, 0.3, 1.0], ids=["flat_cost", "mid_cost", "steep_cost"])
def test_the_builder_returns_the_best_tree_by_brute_force(slope):
    acc = np.array([[0.6, 0.25, 0.1], [0.45, 0.2, 0.05]])

    def cost(T: int) -> float:
        return 1.0 + slope * (T - 1)

    tree, score = build_tree(acc, cost, max_size=7)
    best = 1.0 / cost(1)
    for t in _all_trees(2, 3):
        if t is not None and t.size <= 7:
            best = max(best, (1 + expected_accepted(t, acc)) / cost(t.size))
    assert score == pytest.approx(best)
    assert (1 + expected_accepted(tree, acc)) / cost(tree.size) == pytest.approx(score)
    if slope == 1.0:
        assert tree.size == 1  # a forward per slot: nothing beats vanilla


def test_bad_trees_are_one_line_errors(tmp_path):
    with pytest.raises(SpecjaxError, match="has no parent"):
        tree_from_paths([(0,), (1, 0)])
    with pytest.raises(SpecjaxError, match="heads draft only 2 tokens"):
        tree_from_paths([(0,), (0, 0), (0, 0, 0)], max_depth=2)
    with pytest.raises(SpecjaxError, match="above 10"):
        load_tree("mc_sim_7b_63", max_size=10)
    with pytest.raises(SpecjaxError, match="appears twice"):
        tree_from_paths([(0,), (0,)])
    with pytest.raises(SpecjaxError, match="negative rank"):
        tree_from_paths([(-1,)])
    bad = tmp_path / "bad.json"
    bad.write_text('{"paths": [[0], "x"]}')
    with pytest.raises(SpecjaxError, match="not a non-empty list"):
        load_tree(str(bad))
    bad.write_text("{not json")
    with pytest.raises(SpecjaxError, match="is not a tree file"):
        load_tree(str(bad))
    with pytest.raises(SpecjaxError, match="neither a tree file nor a named tree"):
        load_tree(str(tmp_path / "missing.json"))
    good = save_tree(tmp_path / "good.json", tree_from_paths(SMALL_TREE), {"tau": 2.0})
    assert load_tree(str(good)) == tree_from_paths(SMALL_TREE)


def test_auto_tree_keeps_one_node_where_no_tree_pays(tmp_path, monkeypatch):
    """On a machine whose measured verify cost makes every tree lose to vanilla (a busy CPU),
    --tree=auto still drafts: one node, the first head's top guess."""
    import json

    from specjax import static_tree, verify_cost

    (tmp_path / "head_config.json").write_text(
        json.dumps({"extra": {"rank_accuracy": [[0.3, 0.1], [0.2, 0.05]]}})
    )
    steep = {"ms": {T: float(T) for T in static_tree.AUTO_COST_SIZES}}
    monkeypatch.setattr(verify_cost, "cached_cost_curve", lambda *a, **k: steep)
    tree = static_tree.auto_tree(None, None, tmp_path, 2)
    assert tree.size == 2 and tree.max_rank == 0


def test_auto_tree_grows_by_a_lookup_branchs_slots(tmp_path, monkeypatch):
    """With --lookup=K the auto tree gets K more slots, filled with the heads' next likeliest
    paths (deeper ones too, for heads that pay nothing per depth; not for a drafter that does)."""
    import json

    from specjax import static_tree, verify_cost

    accuracy = [[0.5, 0.3, 0.1], [0.6, 0.2, 0.1]]
    (tmp_path / "head_config.json").write_text(json.dumps({"extra": {"rank_accuracy": accuracy}}))
    steep = {"ms": {T: float(T) for T in static_tree.AUTO_COST_SIZES}}
    monkeypatch.setattr(verify_cost, "cached_cost_curve", lambda *a, **k: steep)
    alone = static_tree.auto_tree(None, None, tmp_path, 2)
    assert alone.paths == ((0,),)
    # path likelihoods: (0,) .5, (1,) .3, (0, 0) .3, (1, 0) .18, (2,) .1, (0, 1) .1
    grown = static_tree.auto_tree(None, None, tmp_path, 2, extra_slots=3)
    assert grown.paths == ((0,), (1,), (0, 0), (1, 0))
    per_depth = static_tree.auto_tree(
        None, None, tmp_path, 2, depth_ms=lambda d: 0.0, extra_slots=3
    )
    assert per_depth.paths == ((0,), (1,), (2,))  # as deep as the tree it grew from, no deeper


def test_a_drafter_that_pays_per_depth_gets_the_best_tree_it_can_afford():
    acc = np.array([[0.6, 0.25, 0.1], [0.45, 0.2, 0.05]])

    def cost(T: int) -> float:
        return 1.0 + 0.02 * (T - 1)

    def per_depth(d: int) -> float:
        return 0.3 * d

    deep, _ = build_tree(acc, cost, max_size=7)
    assert max(len(p) for p in deep.paths) == 2
    tree, score = build_tree(acc, cost, max_size=7, depth_cost=per_depth)
    depth = max(len(p) for p in tree.paths)
    assert score == pytest.approx(
        (1 + expected_accepted(tree, acc)) / (cost(tree.size) + 0.3 * depth)
    )
    best = 1.0 / cost(1)  # brute force, each tree paying for its depth
    for t in _all_trees(2, 3):
        if t is not None and t.size <= 7:
            d = max(len(p) for p in t.paths)
            best = max(best, (1 + expected_accepted(t, acc)) / (cost(t.size) + 0.3 * d))
    assert score == pytest.approx(best)
    assert depth == 1  # the three first-head guesses: a second depth costs more than it buys
