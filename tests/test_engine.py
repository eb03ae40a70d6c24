"""The vanilla loop: exact greedy against transformers, ragged batches, seeds, EOS, buckets."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from models.config import ModelConfig
from models.hf_checkpoint import params_from_hf, read_hf_dir
from models.transformer import init_params
from specjax import engine
from specjax.engine import generate
from specjax.errors import SpecjaxError
from specjax.sampling import SamplingConfig
from tests.hf_reference import make_tiny_hf_model

PROMPTS = [[5, 6, 7, 8, 9], [3, 4], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]]
TINY = ModelConfig(model_type="llama", V=64, D=32, L=2, F=64, Q=4, K=2, H=8, max_positions=256)


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    out = tmp_path_factory.mktemp("llama")
    ref = make_tiny_hf_model("llama", out)
    ref.generation_config.eos_token_id = None
    hf_config, tensors = read_hf_dir(out)
    config = ModelConfig.from_hf(hf_config)
    return ref, config, params_from_hf(config, tensors)


@pytest.fixture(scope="module")
def tiny_params():
    return init_params(TINY, jax.random.key(0))


def test_greedy_ragged_batch_matches_transformers_generate(hf_pair):
    import torch

    ref, config, params = hf_pair
    result = generate(config, params, PROMPTS, max_new_tokens=24)
    for b, p in enumerate(PROMPTS):
        out = ref.generate(torch.tensor([p]), max_new_tokens=24, do_sample=False)
        assert result.tokens[b] == out[0, len(p) :].tolist()
    assert result.target_calls == [24, 24, 24]
    assert result.tau == 1.0


def test_same_seed_same_tokens_regardless_of_batch(tiny_params):
    sampling = SamplingConfig(temperature=1.0)
    batch = generate(TINY, tiny_params, PROMPTS, max_new_tokens=16, sampling=sampling, seed=7)
    again = generate(TINY, tiny_params, PROMPTS, max_new_tokens=16, sampling=sampling, seed=7)
    alone = generate(TINY, tiny_params, PROMPTS[1:2], max_new_tokens=16, sampling=sampling, seed=7)
    other = generate(TINY, tiny_params, PROMPTS, max_new_tokens=16, sampling=sampling, seed=8)
    assert batch.tokens == again.tokens
    assert batch.tokens[1] == alone.tokens[0]
    assert batch.tokens != other.tokens


def test_eos_stops_a_row_and_keeps_the_eos_token(tiny_params):
    free = generate(TINY, tiny_params, PROMPTS, max_new_tokens=12)
    eos = free.tokens[0][4]
    stopped = generate(TINY, tiny_params, PROMPTS, max_new_tokens=12, eos_ids=(eos,))
    first = free.tokens[0].index(eos)
    assert stopped.tokens[0] == free.tokens[0][: first + 1]
    for b in (1, 2):
        row = free.tokens[b]
        expected = row[: row.index(eos) + 1] if eos in row else row
        assert stopped.tokens[b] == expected
    assert stopped.target_calls[0] == first + 1


def test_similar_prompt_lengths_share_one_compilation(tiny_params):
    generate(TINY, tiny_params, [[1] * 40], max_new_tokens=4)
    n = len(engine._COMPILED)
    generate(TINY, tiny_params, [[2] * 50], max_new_tokens=4)
    assert len(engine._COMPILED) == n


def test_prompt_longer_than_the_cache_is_a_clear_error(tiny_params):
    with pytest.raises(SpecjaxError, match="exceeds the cache"):
        generate(TINY, tiny_params, [[1] * 250], max_new_tokens=10)


def test_sampling_follows_the_warped_distribution():
    """20,000 draws through the sampler vs the exact top-k/top-p/temperature distribution."""
    from scipy import stats

    from specjax.sampling import probabilities, sample_token

    sampling = SamplingConfig(temperature=0.7, top_k=20, top_p=0.9)
    logits = 2.0 * jax.random.normal(jax.random.key(3), (TINY.V,))
    keys = jax.random.split(jax.random.key(4), 20000)
    draws = jax.vmap(lambda k: sample_token(k, logits, sampling))(keys)
    p = np.asarray(probabilities(logits, sampling), np.float64)
    counts = np.bincount(np.asarray(draws), minlength=TINY.V)
    assert counts[p == 0].sum() == 0
    assert (p > 0).sum() < 20  # top-p cut below top-k: both truncations are exercised
    keep = p > 0
    expected = p[keep] / p[keep].sum() * 20000
    assert stats.chisquare(counts[keep], expected).pvalue > 1e-3
