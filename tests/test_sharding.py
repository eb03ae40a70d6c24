"""Sharded == unsharded on 8 simulated CPU devices (run in a subprocess: XLA_FLAGS must be set
before JAX starts)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import with_xla_flag

ROOT = Path(__file__).resolve().parents[1]

# A tiny target sharded 2 (data) x 4 (model): one forward agrees with the unsharded one.
SETUP = textwrap.dedent(
    """
    import jax, numpy as np
    assert jax.device_count() == 8, jax.devices()
    from models.config import ModelConfig
    from models.transformer import init_params, forward, causal_mask
    from models.cache import init_cache
    from specjax.engine import generate
    from specjax.sampling import SamplingConfig
    from specjax.methods import make_drafter
    from specjax.sharding import make_mesh, shard_params, constrain_cache

    config = ModelConfig(model_type="qwen2", V=128, D=64, L=2, F=128, Q=8, K=4, H=8,
                         qkv_bias=True, max_positions=256)
    params = init_params(config, jax.random.key(0))
    mesh = make_mesh(data=2, model=4)
    sharded = shard_params(params, mesh)
    assert not sharded.layers.wqkv.sharding.is_fully_replicated

    tokens = np.random.default_rng(0).integers(0, 128, (4, 16))
    pos = np.broadcast_to(np.arange(16), (4, 16))
    fwd = jax.jit(forward, static_argnums=0)
    ref, _, _ = fwd(config, params, tokens, pos, init_cache(2, 4, 4, 32, 8), causal_mask(4, 16))
    with jax.sharding.set_mesh(mesh):
        cache = init_cache(2, 4, 4, 32, 8)
        out, _, new_cache = fwd(config, sharded, tokens, pos, cache, causal_mask(4, 16))
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8], [9], [10, 11, 12, 13]]
    """
)

# Vanilla and sd (greedy and sampled), ngram (greedy), Medusa's static tree (the tree verify every tree
# drafter shares), the loop's output shardings and the streaming driver.
CORE = textwrap.dedent(
    """
    for sampling in (SamplingConfig(), SamplingConfig(temperature=1.0, top_k=10)):
        plain = generate(config, params, prompts, max_new_tokens=12, sampling=sampling, seed=3)
        meshed = generate(config, sharded, prompts, max_new_tokens=12, sampling=sampling,
                          seed=3, mesh=mesh)
        assert plain.tokens == meshed.tokens, (plain.tokens, meshed.tokens)
        # ngram's one-hot drafts sample through the same verify as sd's: greedy is enough.
        for method, draft in (("sd", "self:1"), ("ngram", None))[: 2 if sampling.greedy else 1]:
            extra = {"gamma": 3} if method == "sd" else {}
            drafter, dparams = make_drafter(method, config, params, draft=draft, **extra)
            _, sharded_dparams = make_drafter(method, config, sharded, draft=draft, **extra)
            kw = dict(max_new_tokens=12, sampling=sampling, seed=3, drafter=drafter)
            plain = generate(config, params, prompts, draft_params=dparams, **kw)
            meshed = generate(config, sharded, prompts, draft_params=sharded_dparams, mesh=mesh,
                              keep_state=method == "ngram", **kw)
            assert plain.tokens == meshed.tokens, (method, plain.tokens, meshed.tokens)
            if method == "ngram":
                ngram_run, ngram_drafter, ngram_dparams = meshed, drafter, sharded_dparams

    # The loop's output state keeps the layout it went in with (explicit out shardings), and the
    # streaming driver (state donated chunk to chunk) gives the same tokens under the mesh.
    from specjax.engine import stream
    from specjax.sharding import CACHE_AXES, spec_for
    k = ngram_run.final_state.cache.k  # greedy ngram's run
    assert k.sharding.spec == spec_for(k.shape, CACHE_AXES, mesh), k.sharding
    out_tokens = ngram_run.final_state.out_tokens
    assert out_tokens.sharding.spec[0] == "data", out_tokens.sharding
    streamed = stream(config, sharded, prompts, steps_per_chunk=2, max_new_tokens=12, seed=3,
                      mesh=mesh, drafter=ngram_drafter, draft_params=ngram_dparams)
    chunks = list(streamed)
    assert len(chunks) > 2 and streamed.result.tokens == ngram_run.tokens

    # Medusa (greedy): replicated heads, a static tree.
    from models.medusa_heads import init_heads
    from specjax.drafters.medusa import MedusaDrafter
    from specjax.static_tree import load_tree
    heads = init_heads(params, 4)
    heads = heads.replace(res_w=0.3 * jax.random.normal(jax.random.key(6), heads.res_w.shape))
    kw = dict(max_new_tokens=12, seed=3,
              drafter=MedusaDrafter(load_tree("mc_sim_7b_63")), draft_params=heads)
    plain = generate(config, params, prompts, **kw)
    meshed = generate(config, sharded, prompts, mesh=mesh, **kw)
    assert plain.tokens == meshed.tokens, ("medusa", plain.tokens, meshed.tokens)
    """
)

# The drafters with per-row state of their own (greedy): ReDrafter's beams from a replicated head
# (merged and packed trees) and the CTC module's own KV cache over collapsed trees.
PER_ROW_STATE = textwrap.dedent(
    """
    from models.recurrent_head import init_head
    from specjax.drafters.redrafter import ReDrafterDrafter, ReDrafterParams
    head = init_head(jax.random.key(4), config.D, config.V)
    for slots in (0, 5):
        kw = dict(max_new_tokens=12, seed=3, drafter=ReDrafterDrafter(width=2, length=3, slots=slots))
        plain = generate(config, params, prompts, draft_params=ReDrafterParams(head, params.embed), **kw)
        meshed = generate(config, sharded, prompts, mesh=mesh,
                          draft_params=ReDrafterParams(head, sharded.embed), **kw)
        assert plain.tokens == meshed.tokens, ("redrafter", slots, plain.tokens, meshed.tokens)

    from models.ctc_draft import attach, draft_config, init_ctc_head
    from specjax.drafters.ctc import CTCDrafter
    from specjax.static_tree import tree_from_paths
    ctc = init_ctc_head(config, params, jax.random.key(7), scale=0.3)
    ctc = ctc.replace(blank_b=jax.numpy.full((1,), 3.0))
    kw = dict(max_new_tokens=12, seed=3,
              drafter=CTCDrafter(draft_config(config), tree_from_paths(
                  [(0,), (1,), (2,), (0, 0), (0, 1), (1, 0), (0, 0, 0)])))
    plain = generate(config, params, prompts, draft_params=attach(ctc, params), **kw)
    meshed = generate(config, sharded, prompts, mesh=mesh, draft_params=attach(ctc, sharded), **kw)
    assert plain.tokens == meshed.tokens, ("ctc", plain.tokens, meshed.tokens)
    """
)


def _run_on_8_devices(script: str) -> None:
    env = dict(
        os.environ,
        XLA_FLAGS=with_xla_flag("--xla_force_host_platform_device_count=8"),
        JAX_PLATFORMS="cpu",
    )
    proc = subprocess.run(
        [sys.executable, "-c", script + '\nprint("SHARDED_OK")\n'],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SHARDED_OK" in proc.stdout


def test_sharded_equals_unsharded_on_8_simulated_devices():
    _run_on_8_devices(SETUP + CORE)


# The same tree verify and cache commit as Medusa's above; the two-process sharded decode
# (tests/test_multihost.py) is the other default check of the mesh.
@pytest.mark.extended
def test_drafters_with_per_row_state_shard_on_8_simulated_devices():
    _run_on_8_devices(SETUP + PER_ROW_STATE)
