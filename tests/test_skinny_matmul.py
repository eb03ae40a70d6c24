"""The few-row matmul kernel of the CPU decode: XLA's dot to float32 rounding on every row count
and ragged shape it meets (columns not a multiple of the panel, rows past one register tile)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import skinny_matmul

pytestmark = pytest.mark.skipif(
    not skinny_matmul.available(),
    reason="the few-row matmul kernel does not build here (needs x86-64 AVX2/FMA and a C++ compiler)",
)


@pytest.mark.parametrize(
    "N, D, F",
    [(1, 576, 960), (2, 64, 16), (3, 200, 17), (7, 129, 33), (13, 1536, 576), (40, 48, 100)],
)
def test_kernel_equals_the_float64_product(N, D, F):
    rng = np.random.default_rng(N * 1000 + F)
    x = rng.standard_normal((N, D), dtype=np.float32)
    w = rng.standard_normal((D, F), dtype=np.float32)
    got = np.asarray(jax.jit(skinny_matmul.matmul)(jnp.asarray(x), skinny_matmul.pack(w)))
    want = x.astype(np.float64) @ w.astype(np.float64)
    assert got.shape == (N, F) and got.dtype == np.float32
    # float32 sums of D products of unit normals: error grows like sqrt(D) * eps * |terms|
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.sqrt(D) * 4)


def test_leading_axes_and_vmap_keep_their_shape():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 2, 5, 40), dtype=np.float32)  # vmapped over 3, rows [2, 5]
    w = rng.standard_normal((40, 24), dtype=np.float32)
    packed = skinny_matmul.pack(w)
    got = jax.jit(jax.vmap(lambda xi: skinny_matmul.matmul(xi, packed)))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), x @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(skinny_matmul.unpack(packed), w)


def test_the_cached_verify_cost_is_measured_again_for_an_edited_kernel(monkeypatch):
    from models.config import ModelConfig
    from models.transformer import init_params
    from specjax import verify_cost

    config = ModelConfig(model_type="llama", V=32, D=16, L=1, F=32, Q=2, K=1, H=8)
    params = init_params(config, jax.random.key(0))
    before = verify_cost._curve_path(config, params, "target")
    monkeypatch.setattr(skinny_matmul, "source_digest", lambda: "an-edited-kernel")
    assert verify_cost._curve_path(config, params, "target") != before
