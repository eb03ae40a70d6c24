"""train_heads/draft_lm.py: the draft shares the target's frozen embedding, saves only its own
tensors, reloads to identical logits, refuses a foreign target or a damaged file, and serves as
`--draft=DIR` for sd (tiny random models)."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.draft_lm import TINY_TARGET
from models.config import ModelConfig
from models.draft_lm import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    cast,
    init_draft,
    load_draft,
    merge,
    save_draft,
    shared,
    trainable,
)
from models.errors import SpecjaxError
from models.loading import Model
from models.transformer import init_params
from specjax.engine import generate
from specjax.methods import make_drafter
from train_heads.draft_lm import next_token_logits

TOKENS = jnp.asarray([[3, 17, 40, 2, 99, 5, 5, 64], [1, 2, 3, 4, 5, 6, 7, 8]], jnp.int32)
# SmolLM2-135M's shape (config.json of HuggingFaceTB/SmolLM2-135M-Instruct).
SMOLLM2 = ModelConfig(
    model_type="llama", V=49152, D=576, L=30, F=1536, Q=9, K=3, H=64, tie_word_embeddings=True
)


@pytest.fixture(scope="module")
def target():
    return Model(TINY_TARGET, init_params(TINY_TARGET, jax.random.key(0)), None, "tiny")


@pytest.fixture(scope="module")
def draft(target):
    return init_draft(target.config, target.params, 2, jax.random.key(1))


def test_init_from_target_slices_its_first_layers(target, draft):
    config, params = draft
    assert config == dataclasses.replace(TINY_TARGET, L=2)
    for d, t in zip(
        jax.tree.leaves(params.layers), jax.tree.leaves(target.params.layers), strict=True
    ):
        np.testing.assert_array_equal(d, t[:2])
    assert params.embed is target.params.embed and params.lm_head is target.params.lm_head


def test_random_init_keeps_the_targets_embedding(target):
    config, params = init_draft(
        target.config, target.params, 1, jax.random.key(1), from_target=False
    )
    assert config.L == 1 and params.embed is target.params.embed
    assert not np.array_equal(params.layers.wqkv[0], target.params.layers.wqkv[0])


def test_draft_depth_must_be_below_the_targets(target):
    with pytest.raises(SpecjaxError, match=r"draft_layers must be in \[1, 3\]"):
        init_draft(target.config, target.params, 4, jax.random.key(1))


def test_only_layers_and_final_norm_are_trainable(draft):
    _, params = draft
    own, frozen = trainable(params), shared(params)
    assert frozen.embed is params.embed
    assert all(leaf is not params.embed for leaf in jax.tree.leaves(own))
    merged = merge(own, frozen)
    assert all(
        a is b for a, b in zip(jax.tree.leaves(merged), jax.tree.leaves(params), strict=True)
    )


def test_save_load_round_trip_gives_identical_logits(target, draft, tmp_path):
    config, params = draft
    # Stored as bfloat16: compare against the same params rounded to bfloat16.
    rounded = merge(cast(cast(trainable(params), jnp.bfloat16), jnp.float32), shared(params))
    save_draft(tmp_path, config, params, target_source="tiny")
    loaded = load_draft(tmp_path, target)
    assert loaded.config == config
    assert loaded.params.embed is target.params.embed
    np.testing.assert_array_equal(
        next_token_logits(config, loaded.params, TOKENS),
        next_token_logits(config, rounded, TOKENS),
    )


def test_file_holds_only_the_drafts_own_tensors(target, draft, tmp_path):
    from safetensors.numpy import load_file

    config, params = draft
    save_draft(tmp_path, config, params, target_source="tiny")
    tensors = load_file(str(tmp_path / WEIGHTS_FILE))
    assert "embed" not in tensors and "lm_head" not in tensors
    own = sum(x.size for x in jax.tree.leaves(trainable(params)))
    assert sum(t.size for t in tensors.values()) == own
    assert all(t.dtype.name == "bfloat16" for t in tensors.values())
    assert (tmp_path / WEIGHTS_FILE).stat().st_size < 2 * own + 4096
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert meta["target"]["source"] == "tiny" and "embed" in meta["shared_from_target"]


def test_two_smollm2_layers_fit_in_20_mb():
    config = dataclasses.replace(SMOLLM2, L=2)
    shapes = jax.eval_shape(lambda: trainable(init_params(config, jax.random.key(0))))
    assert 2 * sum(np.prod(s.shape) for s in jax.tree.leaves(shapes)) < 20e6


def test_other_target_is_refused(draft, tmp_path):
    config, params = draft
    save_draft(tmp_path, config, params)
    other = Model(TINY_TARGET, init_params(TINY_TARGET, jax.random.key(7)), None, "other")
    with pytest.raises(SpecjaxError, match="made for a different target") as e:
        load_draft(tmp_path, other)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("damage", ["no_config", "no_weights", "bad_json", "truncated_weights"])
def test_damaged_draft_is_one_line_error(target, draft, tmp_path, damage):
    config, params = draft
    save_draft(tmp_path, config, params)
    weights, cfg = tmp_path / WEIGHTS_FILE, tmp_path / CONFIG_FILE
    if damage == "no_config":
        cfg.unlink()
    elif damage == "no_weights":
        weights.unlink()
    elif damage == "bad_json":
        cfg.write_text(cfg.read_text()[:40])
    else:
        weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(SpecjaxError) as e:
        load_draft(tmp_path, target)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)


def _sd_from_dir_equals_vanilla(target, draft_dir):
    """Greedy sd with the saved draft at `draft_dir`; asserts it equals vanilla, returns both."""
    drafter, draft_params = make_drafter("sd", target.config, target.params, draft=str(draft_dir))
    prompts = [[5, 6, 7, 8, 9], [3, 4]]
    vanilla = generate(target.config, target.params, prompts, max_new_tokens=12)
    spec = generate(
        target.config,
        target.params,
        prompts,
        max_new_tokens=12,
        drafter=drafter,
        draft_params=draft_params,
    )
    assert spec.tokens == vanilla.tokens
    return drafter, spec


def test_saved_draft_dir_is_an_sd_draft(target, draft, tmp_path):
    config, params = draft
    save_draft(tmp_path, config, params)
    drafter, _ = _sd_from_dir_equals_vanilla(target, tmp_path)
    assert drafter.config == config


HEAD_IDS = np.arange(0, TINY_TARGET.V, 3, dtype=np.int32)  # a third of the vocabulary


def test_frequent_tokens_are_the_most_counted_answer_tokens():
    from train_heads.draft_lm import frequent_tokens

    tokens = np.array([[1, 5, 5, 5, 7, 7, 9]])
    mask = np.array([[False, True, True, True, True, True, True]])
    assert frequent_tokens(tokens, mask, 2, V=16).tolist() == [5, 7]


def test_reduced_head_logits_are_the_full_heads_columns(target):
    config, full = init_draft(target.config, target.params, 2, jax.random.key(1))
    _, reduced = init_draft(
        target.config, target.params, 2, jax.random.key(1), head_token_ids=HEAD_IDS
    )
    np.testing.assert_allclose(
        next_token_logits(config, reduced, TOKENS),
        next_token_logits(config, full, TOKENS)[..., HEAD_IDS],
        atol=1e-5,
    )


def test_reduced_head_survives_save_load_and_stays_lossless(target, tmp_path):
    config, params = init_draft(
        target.config, target.params, 2, jax.random.key(1), head_token_ids=HEAD_IDS
    )
    save_draft(tmp_path, config, params)
    loaded = load_draft(tmp_path, target)
    np.testing.assert_array_equal(np.asarray(loaded.params.head_token_ids), HEAD_IDS)
    _, spec = _sd_from_dir_equals_vanilla(target, tmp_path)
    assert sum(spec.drafted) > 0


def test_reduced_head_draws_only_its_tokens_and_q_sums_to_one(target):
    """Sampling stays exact only if q is the distribution the drafts were drawn from: zero outside
    the head, a distribution over the full vocabulary."""
    from specjax.candidates import DraftContext, Prefill
    from specjax.sampling import SamplingConfig

    config, params = init_draft(
        target.config, target.params, 2, jax.random.key(1), head_token_ids=HEAD_IDS
    )
    drafter, _ = make_drafter(
        "sd", target.config, target.params, draft=Model(config, params, None, "d")
    )
    prompt = jnp.asarray([[5, 6, 7, 8, 9]] * 4, jnp.int32)
    prefill = Prefill(prompt, jnp.full((4,), 5, jnp.int32), jnp.zeros((4, 5, config.D)))
    state = drafter.init(params, prefill, 32)
    ctx = DraftContext(
        root=jnp.full((4,), 9, jnp.int32),
        root_position=jnp.full((4,), 5, jnp.int32),
        hidden=jnp.zeros((4, config.D)),
        done=jnp.zeros((4,), bool),
    )
    keys = jax.vmap(jax.random.key)(jnp.arange(4, dtype=jnp.uint32))
    cands, _ = drafter.propose(params, state, ctx, keys, SamplingConfig(temperature=1.0))
    drafts = np.asarray(cands.tokens[:, 1:])
    assert np.isin(drafts, HEAD_IDS).all()
    q = np.asarray(cands.q_probs[:, 1:])  # [B, gamma, V]
    np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-5)
    outside = np.setdiff1d(np.arange(target.config.V), HEAD_IDS)
    assert (q[..., outside] == 0).all()


def test_reduced_head_loss_ignores_uncovered_labels(target):
    from train_heads.draft_lm import Batch, make_loss

    config, params = init_draft(
        target.config, target.params, 2, jax.random.key(1), head_token_ids=HEAD_IDS
    )
    batch = Batch(TOKENS, jnp.ones_like(TOKENS, bool))
    _, sums = make_loss(config)(trainable(params), shared(params), batch)
    labels = np.asarray(TOKENS[:, 1:]).ravel()
    assert float(sums["covered"]) == np.isin(labels, HEAD_IDS).sum()
    assert float(sums["top1"]) <= float(sums["covered"])
