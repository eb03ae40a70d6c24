"""KV cache properties: per-row offsets, rollback, tree commit (tiny random Llama)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.cache import init_cache
from models.config import ModelConfig
from models.hf_checkpoint import params_from_hf, read_hf_dir
from models.transformer import causal_mask, forward
from tests.hf_reference import make_tiny_hf_model

_forward = jax.jit(forward, static_argnums=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("llama")
    make_tiny_hf_model("llama", out)
    hf_config, tensors = read_hf_dir(out)
    config = ModelConfig.from_hf(hf_config)
    return config, params_from_hf(config, tensors)


def _feed(config, params, cache, tokens_BT, mask_BTT=None, positions_BT=None):
    B, T = tokens_BT.shape
    if positions_BT is None:
        positions_BT = cache.length[:, None] + jnp.arange(T)[None, :]
    mask = causal_mask(B, T) if mask_BTT is None else mask_BTT
    return _forward(config, params, jnp.asarray(tokens_BT), positions_BT, cache, mask)


def test_token_by_token_equals_full_recompute(tiny):
    config, params = tiny
    tokens = np.random.default_rng(0).integers(0, config.V, (2, 12))
    full, _, _ = _feed(config, params, init_cache(config.L, 2, config.K, 16, config.H), tokens)
    cache = init_cache(config.L, 2, config.K, 16, config.H)
    for t in range(12):
        step, _, cache = _feed(config, params, cache, tokens[:, t : t + 1])
        np.testing.assert_allclose(step[:, 0], full[:, t], atol=1e-5)


def test_rollback_then_rewrite_equals_never_written(tiny):
    config, params = tiny
    rng = np.random.default_rng(1)
    prefix, junk, tail = (rng.integers(0, config.V, (2, n)) for n in (5, 4, 3))
    cache = init_cache(config.L, 2, config.K, 16, config.H)
    _, _, cache = _feed(config, params, cache, prefix)
    _, _, cache = _feed(config, params, cache, junk)
    cache = cache.rollback(jnp.array([4, 4]))
    after_rollback, _, _ = _feed(config, params, cache, tail)
    clean = init_cache(config.L, 2, config.K, 16, config.H)
    _, _, clean = _feed(config, params, clean, prefix)
    expected, _, _ = _feed(config, params, clean, tail)
    np.testing.assert_allclose(after_rollback, expected, atol=1e-5)


def test_tree_commit_equals_feeding_the_path_as_a_chain(tiny):
    """A 5-node tree (root a; children b, c; c's children d, e); accept the path a -> c -> e."""
    config, params = tiny
    rng = np.random.default_rng(2)
    prefix = rng.integers(0, config.V, (1, 6))
    nodes = rng.integers(0, config.V, (1, 5))
    parent = [-1, 0, 0, 2, 2]
    depth = np.array([0, 1, 1, 2, 2])
    mask = np.eye(5, dtype=bool)
    for i in range(5):
        j = parent[i]
        while j >= 0:
            mask[i, j] = True
            j = parent[j]
    cache = init_cache(config.L, 1, config.K, 16, config.H)
    _, _, cache = _feed(config, params, cache, prefix)
    positions = cache.length[:, None] + jnp.asarray(depth)[None, :]
    tree_logits, _, cache = _feed(config, params, cache, nodes, jnp.asarray(mask)[None], positions)
    path = np.array([[0, 2, 4]])
    cache = cache.commit(5, jnp.asarray(path), jnp.array([3]))
    assert cache.length.tolist() == [9]
    probe = rng.integers(0, config.V, (1, 2))
    got, _, _ = _feed(config, params, cache, probe)

    chain = init_cache(config.L, 1, config.K, 16, config.H)
    _, _, chain = _feed(config, params, chain, prefix)
    chain_logits, _, chain = _feed(config, params, chain, nodes[:, path[0]])
    expected, _, _ = _feed(config, params, chain, probe)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(tree_logits[:, path[0]], chain_logits, atol=1e-5)


def test_ragged_rows_write_at_their_own_offsets(tiny):
    """Row 0 has a 3-token prefix, row 1 a 7-token one; one step each equals each row alone."""
    config, params = tiny
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, config.V, 3), rng.integers(0, config.V, 7)
    padded = np.zeros((2, 7), np.int64)
    padded[0, :3], padded[1] = a, b
    cache = init_cache(config.L, 2, config.K, 16, config.H)
    _, _, cache = _feed(config, params, cache, padded)
    cache = cache.replace(length=jnp.array([3, 7], jnp.int32))
    nxt = rng.integers(0, config.V, (2, 2))
    both, _, _ = _feed(config, params, cache, nxt)
    for row, prefix in ((0, a), (1, b)):
        alone = init_cache(config.L, 1, config.K, 16, config.H)
        _, _, alone = _feed(config, params, alone, prefix[None])
        expected, _, _ = _feed(config, params, alone, nxt[row : row + 1])
        np.testing.assert_allclose(both[row], expected[0], atol=1e-5)


def test_append_past_the_end_is_dropped_not_clamped(tiny):
    config, params = tiny
    cache = init_cache(config.L, 1, config.K, 4, config.H)
    _, _, cache = _feed(config, params, cache, np.array([[1, 2, 3]]))
    before = np.asarray(cache.k)
    _, _, cache = _feed(config, params, cache, np.array([[4, 5, 6]]))
    np.testing.assert_array_equal(np.asarray(cache.k)[:, :, :, :3], before[:, :, :, :3])
