"""The vanilla loop: exact greedy against transformers, ragged batches, seeds, EOS, buckets."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.config import ModelConfig
from models.errors import SpecjaxError
from models.hf_checkpoint import params_from_hf, read_hf_dir
from models.transformer import init_params
from specjax import engine
from specjax.drafters.ngram import NgramDrafter
from specjax.engine import generate
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
    second = generate(TINY, tiny_params, [[2] * 50], max_new_tokens=4)
    assert second.compile_seconds == 0.0


def test_compiled_drivers_are_bounded_least_recently_used_first(tiny_params, monkeypatch):
    monkeypatch.setattr(engine, "MAX_COMPILED", 2)
    engine._COMPILED.clear()
    for n in (1, 2, 1, 3):  # 1 is used again before 3 arrives, so 2 is the one dropped
        generate(TINY, tiny_params, [[1] * 8], max_new_tokens=n)
    assert [key[2].max_new_tokens for key in engine._COMPILED] == [1, 3]
    assert generate(TINY, tiny_params, [[1] * 8], max_new_tokens=1).compile_seconds == 0.0


def test_evicted_drivers_give_back_their_memory_mappings(tiny_params, monkeypatch):
    """Each compiled decode loop holds hundreds of memory mappings; with the bound, compiling
    shape after shape leaves the count where two live drivers put it (JAX's caches, which keep
    every executable they traced, are cleared on eviction)."""
    from tests.conftest import memory_mappings

    if memory_mappings() is None:
        pytest.skip("needs /proc/self/maps (Linux)")
    monkeypatch.setattr(engine, "MAX_COMPILED", 2)
    engine._COMPILED.clear()
    jax.clear_caches()
    drafter = NgramDrafter(2, 3)
    counts = []
    for n in range(1, 6):
        generate(TINY, tiny_params, [[1] * 8], max_new_tokens=n, drafter=drafter)
        counts.append(memory_mappings()[0])
    per_driver = counts[1] - counts[0]
    assert per_driver > 50  # what the bound is for: a driver costs real mappings
    assert max(counts[2:]) < counts[1] + per_driver // 2, counts


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


# ---------------------------------------------------------------------------------------------
# A step may skip the target for some rows (Candidates.needs_target, SPRINTER's room).


@dataclasses.dataclass(frozen=True)
class SkippingNgram(NgramDrafter):
    """n-gram drafting that, on steps chosen by a per-row counter, tells the engine the target
    need not run: row 0 skips every other step, row 1 never, row 2 every third step."""

    @property
    def block_size(self) -> int:
        return super().block_size

    def init(self, params, prefill, cache_len):
        inner = super().init(params, prefill, cache_len)
        return (inner, jnp.zeros(prefill.length.shape, jnp.int32))

    def propose(self, params, state, ctx, keys, sampling):
        inner, steps = state
        cands, inner = super().propose(params, inner, ctx, keys, sampling)
        period = jnp.asarray([2, 10**6, 3], jnp.int32)[: steps.shape[0]]
        skip = (steps % period) == period - 1
        return cands.replace(needs_target=~skip), (inner, steps + 1)

    def update(self, params, state, verified):
        inner, steps = state
        ran = verified.target_ran
        updated = super().update(params, inner, verified)
        inner = jax.tree.map(lambda new, old: jnp.where(_rows(ran, new), new, old), updated, inner)
        return (inner, steps)


def _rows(mask_B, x):
    return mask_B.reshape(mask_B.shape + (1,) * (x.ndim - 1))


def test_target_calls_count_only_real_target_runs(tiny_params, monkeypatch):
    """A forward counter (a host callback inside the forward) against `target_calls`. A skipped
    step emits nothing and leaves the drafter as it was, so each row makes exactly the target
    calls plain n-gram drafting makes, however many steps it skipped in between; a step where no
    row needs the target runs no forward at all."""
    runs = []
    real_forward = engine.hidden_states  # the prefill's forward and every step's

    def counted_forward(*args, **kwargs):
        jax.debug.callback(lambda: runs.append(1))
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(engine, "hidden_states", counted_forward)
    kw = dict(max_new_tokens=24)
    vanilla = generate(TINY, tiny_params, PROMPTS, **kw)
    plain = generate(TINY, tiny_params, PROMPTS, drafter=NgramDrafter(2, 3), **kw)
    skipping = SkippingNgram(max_ngram=2, num_tokens=3)
    runs.clear()
    r = generate(TINY, tiny_params, PROMPTS, drafter=skipping, keep_state=True, **kw)
    assert r.tokens == vanilla.tokens
    assert r.target_calls == plain.target_calls
    proposals = np.asarray(r.final_state.draft_state[1])
    calls = np.asarray(r.target_calls) - 1  # the prefill is one call per row
    assert proposals[0] > calls[0] and proposals[2] > calls[2]  # rows 0 and 2 really skipped
    assert max(calls) + 1 <= len(runs) <= sum(calls) + 1  # + the batch's one prefill

    runs.clear()  # one row: every skipped step is a step with no forward
    one = generate(TINY, tiny_params, PROMPTS[:1], drafter=skipping, keep_state=True, **kw)
    assert one.tokens == vanilla.tokens[:1]
    assert one.target_calls[0] == len(runs)
    assert int(one.final_state.draft_state[1][0]) > len(runs) - 1  # proposals > step forwards


# ---------------------------------------------------------------------------------------------
# A drafter may read intermediate layers of the target (Prefill.features, Verified.features).


@dataclasses.dataclass(frozen=True)
class FeatureReadingNgram(NgramDrafter):
    """n-gram drafting that keeps what the engine hands it of layers (1, 0): the prefill's
    features, and the last block's features at its root with the root's position."""

    feature_layers: tuple[int, ...] = (1, 0)

    def init(self, params, prefill, cache_len):
        B = prefill.length.shape[0]
        root = (jnp.zeros((B, 2, TINY.D)), jnp.zeros((B,), jnp.int32))
        return (super().init(params, prefill, cache_len), prefill.features, root)

    def propose(self, params, state, ctx, keys, sampling):
        inner, prompt_features, (root_features, _) = state
        cands, inner = super().propose(params, inner, ctx, keys, sampling)
        return cands, (inner, prompt_features, (root_features, ctx.root_position))

    def update(self, params, state, verified):
        inner, prompt_features, (_, position) = state
        inner = super().update(params, inner, verified)
        return (inner, prompt_features, (verified.features[:, 0], position))


def test_a_drafter_gets_the_target_features_it_names(tiny_params):
    from models.cache import init_cache
    from models.transformer import causal_mask, forward_with_features

    prompt = PROMPTS[2]
    vanilla = generate(TINY, tiny_params, [prompt], max_new_tokens=12)
    r = generate(
        TINY, tiny_params, [prompt], max_new_tokens=12, keep_state=True,
        drafter=FeatureReadingNgram(max_ngram=2, num_tokens=3),
    )  # fmt: skip
    assert r.tokens == vanilla.tokens
    _, prompt_features, (root_features, root_position) = r.final_state.draft_state

    seq = np.asarray([prompt + r.tokens[0]], np.int32)
    S = seq.shape[1]
    cache = init_cache(TINY.L, 1, TINY.K, S, TINY.H)
    _, _, expected, _ = forward_with_features(
        TINY, tiny_params, jnp.asarray(seq), jnp.arange(S)[None], cache, causal_mask(1, S), (1, 0)
    )
    P = len(prompt)
    np.testing.assert_allclose(prompt_features[0, :P], expected[0, :P], atol=1e-5)
    pos = int(root_position[0])
    assert P <= pos < S
    np.testing.assert_allclose(root_features[0], expected[0, pos], atol=1e-5)
