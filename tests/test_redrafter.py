"""The ReDrafter drafter in the engine (tiny random target, untrained head): greedy equals vanilla
with beams merged into one tree, for one row and for ragged rows; the caches afterwards hold exactly
the emitted tokens; the same seed gives the same sampled tokens."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.cache import init_cache
from models.config import ModelConfig
from models.recurrent_head import init_head
from models.transformer import causal_mask, forward, init_params
from specjax.drafters.redrafter import ReDrafterDrafter, ReDrafterParams
from specjax.engine import generate
from specjax.sampling import SamplingConfig

TARGET = ModelConfig(model_type="llama", V=64, D=32, L=3, F=64, Q=4, K=2, H=8, max_positions=256)
PROMPTS = [[5, 6, 7, 8, 9, 5, 6, 7], [3, 4], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]]


@pytest.fixture(scope="module")
def target():
    return init_params(TARGET, jax.random.key(0))


def _head(target, frequent: bool):
    ids = jnp.arange(0, TARGET.V, 2, dtype=jnp.int32) if frequent else None
    head = init_head(jax.random.key(7), TARGET.D, TARGET.V, head_token_ids=ids)
    return ReDrafterParams(head=head, embed=target.embed)


@pytest.mark.parametrize(
    "frequent, slots",
    [(False, 0), (True, 0), (False, 5)],
    ids=["full_head", "frequent_token_head", "packed_into_5_slots"],
)
@pytest.mark.parametrize("batch", ["one", "three_ragged"])
def test_greedy_equals_vanilla(target, batch, frequent, slots):
    prompts = PROMPTS[2:] if batch == "one" else PROMPTS
    vanilla = generate(TARGET, target, prompts, max_new_tokens=32)
    drafter = ReDrafterDrafter(width=3, length=3, slots=slots)
    spec = generate(
        TARGET, target, prompts, max_new_tokens=32, drafter=drafter,
        draft_params=_head(target, frequent),
    )  # fmt: skip
    assert spec.tokens == vanilla.tokens
    assert sum(spec.drafted) > 0
    assert drafter.block_size == (slots or 10)


def test_caches_after_a_run_hold_exactly_the_emitted_tokens(target):
    drafter = ReDrafterDrafter(width=2, length=4)
    r = generate(
        TARGET, target, PROMPTS, max_new_tokens=30, drafter=drafter,
        draft_params=_head(target, False), keep_state=True,
    )  # fmt: skip
    cache = r.final_state.cache
    for b, prompt in enumerate(PROMPTS):
        n = int(cache.length[b])
        seq = (prompt + r.tokens[b])[:n]
        assert len(seq) == n
        fresh = init_cache(TARGET.L, 1, TARGET.K, n, TARGET.H)
        _, _, fresh = forward(
            TARGET, target, jnp.asarray([seq]), jnp.arange(n)[None], fresh, causal_mask(1, n)
        )
        np.testing.assert_allclose(cache.k[:, b, :, :n], fresh.k[:, 0], atol=1e-5)
        np.testing.assert_allclose(cache.v[:, b, :, :n], fresh.v[:, 0], atol=1e-5)


def test_same_seed_same_sampled_tokens_regardless_of_batch(target):
    kw = dict(
        max_new_tokens=20,
        sampling=SamplingConfig(temperature=1.0),
        drafter=ReDrafterDrafter(width=2, length=3),
        draft_params=_head(target, False),
    )
    batch = generate(TARGET, target, PROMPTS, seed=5, **kw)
    again = generate(TARGET, target, PROMPTS, seed=5, **kw)
    alone = generate(TARGET, target, PROMPTS[2:], seed=5, **kw)
    assert batch.tokens == again.tokens
    assert batch.tokens[2] == alone.tokens[0]


def test_the_registry_builds_redrafter_from_a_saved_head(target, tmp_path):
    from models.errors import SpecjaxError
    from models.head_file import save_head
    from specjax.methods import make_drafter, method_with_needs

    head = _head(target, frequent=True).head
    save_head(tmp_path / "head", head, TARGET, target)
    drafter, dparams = make_drafter(
        "redrafter", TARGET, target, head=str(tmp_path / "head"), width=2, length=3
    )
    assert drafter == ReDrafterDrafter(width=2, length=3)
    vanilla = generate(TARGET, target, PROMPTS, max_new_tokens=16)
    spec = generate(
        TARGET, target, PROMPTS, max_new_tokens=16, drafter=drafter, draft_params=dparams
    )
    assert spec.tokens == vanilla.tokens
    with pytest.raises(SpecjaxError, match="needs --head=DIR"):
        make_drafter("redrafter", TARGET, target)
    with pytest.raises(SpecjaxError, match="must be >= 1"):
        make_drafter("redrafter", TARGET, target, head=str(tmp_path / "head"), width=0)
    with pytest.raises(SpecjaxError, match="is not a saved head"):
        make_drafter("redrafter", TARGET, target, head=str(tmp_path))
    with pytest.raises(SpecjaxError, match="--head is for --method=redrafter"):
        method_with_needs("sd", head=True)
