"""Our Flax-free forward against transformers' PyTorch models: logits within 1e-4 in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.cache import init_cache
from models.config import ModelConfig
from models.hf_checkpoint import params_from_hf, read_hf_dir
from models.transformer import causal_mask, forward, forward_with_features
from tests.hf_reference import make_tiny_hf_model, torch_logits

CASES = {
    "llama": {},
    "llama3_rope": dict(
        rope_scaling=dict(
            rope_type="llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=32,
        ),
        tie_word_embeddings=True,
    ),
    "qwen2": {},
    "mistral": dict(sliding_window=None),
    "gpt2": {},
}


def _model_type(case: str) -> str:
    return case.split("_")[0].replace("llama3", "llama")


@pytest.fixture(scope="module", params=list(CASES))
def tiny(request, tmp_path_factory):
    case = request.param
    out = tmp_path_factory.mktemp(case)
    ref = make_tiny_hf_model(_model_type(case), out, **CASES[case])
    hf_config, tensors = read_hf_dir(out)
    config = ModelConfig.from_hf(hf_config)
    return case, ref, config, params_from_hf(config, tensors)


def test_full_prompt_logits_match_transformers(tiny):
    _, ref, config, params = tiny
    tokens = np.random.default_rng(0).integers(0, config.V, size=(2, 40))
    expected = torch_logits(ref, tokens)
    B, T = tokens.shape
    cache = init_cache(config.L, B, config.K, 64, config.H)
    positions = jnp.broadcast_to(jnp.arange(T), (B, T))
    logits, _, cache = forward(
        config, params, jnp.asarray(tokens), positions, cache, causal_mask(B, T)
    )
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)
    assert cache.length.tolist() == [T, T]


def test_token_by_token_with_cache_matches_transformers(tiny):
    _, ref, config, params = tiny
    tokens = np.random.default_rng(1).integers(0, config.V, size=(2, 24))
    expected = torch_logits(ref, tokens)
    B, T = tokens.shape
    cache = init_cache(config.L, B, config.K, 32, config.H)
    step = jax.jit(lambda c, tok, pos: forward(config, params, tok, pos, c, causal_mask(B, 1)))
    for t in range(T):
        pos = jnp.full((B, 1), t, jnp.int32)
        logits, _, cache = step(cache, jnp.asarray(tokens[:, t : t + 1]), pos)
        np.testing.assert_allclose(np.asarray(logits[:, 0]), expected[:, t], atol=1e-4, rtol=0)


def test_conversion_back_to_transformers_gives_the_same_logits(tiny):
    """models.to_transformers (the bench's peers run our drafts with it) inverts the loader."""
    from models.to_transformers import hf_state_dict, to_transformers

    _, ref, config, params = tiny
    tokens = np.random.default_rng(1).integers(0, config.V, size=(1, 24))
    converted = to_transformers(config, params)
    np.testing.assert_allclose(
        torch_logits(converted, tokens), torch_logits(ref, tokens), atol=1e-5, rtol=0
    )
    again = params_from_hf(config, hf_state_dict(config, params))
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_feature_layers_are_transformers_hidden_states_after_those_layers(tiny):
    import torch

    _, ref, config, params = tiny
    tokens = np.random.default_rng(2).integers(0, config.V, size=(2, 12))
    with torch.no_grad():
        out = ref(torch.as_tensor(tokens, dtype=torch.long), output_hidden_states=True)
    layers = (0, config.L - 1)
    B, T = tokens.shape
    cache = init_cache(config.L, B, config.K, 16, config.H)
    positions = jnp.broadcast_to(jnp.arange(T), (B, T))
    logits, hidden, features, _ = forward_with_features(
        config, params, jnp.asarray(tokens), positions, cache, causal_mask(B, T), layers
    )
    assert features.shape == (B, T, len(layers), config.D)
    for i, layer in enumerate(layers[:-1]):  # transformers' last entry is after the final norm
        expected = out.hidden_states[layer + 1].float().numpy()
        np.testing.assert_allclose(np.asarray(features[:, :, i]), expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(hidden), out.hidden_states[-1].float().numpy(), atol=1e-4)
    plain_logits, _, _ = forward(
        config, params, jnp.asarray(tokens), positions, cache, causal_mask(B, T)
    )
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(plain_logits))


def test_a_feature_layer_outside_the_model_is_a_clear_error(tiny):
    from models.errors import SpecjaxError

    _, _, config, params = tiny
    cache = init_cache(config.L, 1, config.K, 4, config.H)
    with pytest.raises(SpecjaxError, match="outside the model's"):
        forward_with_features(
            config, params, jnp.ones((1, 1), jnp.int32), jnp.zeros((1, 1), jnp.int32), cache,
            causal_mask(1, 1), (config.L,),
        )  # fmt: skip


@pytest.mark.parametrize("pack", [False, True], ids=["plain", "packed"])
def test_per_layer_weights_match_transformers_prompt_step_and_features(tiny, pack):
    """The CPU decode's per-layer arrays (a Python loop over short blocks), plain or packed for
    the few-row kernel, are the same model."""
    from models import skinny_matmul
    from models.layer_layout import with_layer_list
    from models.transformer import PER_LAYER_MAX_T, per_layer_max_t

    if pack and not skinny_matmul.available():
        pytest.skip("the few-row matmul kernel does not build here (needs x86-64 AVX2/FMA, g++)")
    _, ref, config, params = tiny
    split = with_layer_list(params, pack=pack)
    assert len(split.layer_list) == config.L
    tokens = np.random.default_rng(3).integers(0, config.V, size=(2, 24))
    expected = torch_logits(ref, tokens)
    B, P = 2, 12  # a prompt of P tokens (scanned), then short blocks on the list
    cache = init_cache(config.L, B, config.K, 32, config.H)
    positions = jnp.broadcast_to(jnp.arange(P), (B, P))
    _, _, cache = forward(
        config, split, jnp.asarray(tokens[:, :P]), positions, cache, causal_mask(B, P)
    )
    scanned_cache = cache

    def step(p, c, t, T):
        pos = jnp.broadcast_to(jnp.arange(t, t + T), (B, T))
        tok = jnp.asarray(tokens[:, t : t + T])
        return forward_with_features(config, p, tok, pos, c, causal_mask(B, T), (0,))

    t = P
    blocks = (1, 5, 1, 2) if pack else (1, PER_LAYER_MAX_T, 1, PER_LAYER_MAX_T)
    assert max(blocks) <= per_layer_max_t(split)
    for T in blocks:
        logits, _, features, cache = step(split, cache, t, T)
        _, _, scanned_features, scanned_cache = step(params, scanned_cache, t, T)
        np.testing.assert_allclose(np.asarray(logits), expected[:, t : t + T], atol=1e-4, rtol=0)
        np.testing.assert_allclose(np.asarray(features), np.asarray(scanned_features), atol=1e-5)
        t += T
    np.testing.assert_allclose(np.asarray(cache.k), np.asarray(scanned_cache.k), atol=1e-5)
