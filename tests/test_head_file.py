"""A saved head loads back for its own target only; partial, corrupt or foreign heads are one
SpecjaxError line each."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.config import ModelConfig
from models.errors import SpecjaxError
from models.head_file import CONFIG_FILE, WEIGHTS_FILE, load_head, save_head
from models.recurrent_head import init_head
from models.transformer import init_params

TARGET = ModelConfig(model_type="llama", V=48, D=16, L=2, F=32, Q=2, K=1, H=8, max_positions=64)


@pytest.fixture(scope="module")
def target():
    return init_params(TARGET, jax.random.key(0))


@pytest.mark.parametrize("frequent", [False, True], ids=["full", "frequent_tokens"])
def test_a_saved_head_loads_back_in_bfloat16_precision(target, tmp_path, frequent):
    ids = jnp.arange(0, TARGET.V, 3, dtype=jnp.int32) if frequent else None
    head = init_head(jax.random.key(1), TARGET.D, TARGET.V, head_token_ids=ids)
    save_head(tmp_path, head, TARGET, target, extra={"tokens": 123})
    back = load_head(tmp_path, TARGET, target)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(head), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-2)
    assert (back.head_token_ids is None) == (not frequent)
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["extra"] == {"tokens": 123}


def test_bad_heads_are_one_line_errors(target, tmp_path):
    head = init_head(jax.random.key(2), TARGET.D, TARGET.V)
    with pytest.raises(SpecjaxError, match="is not a saved head"):
        load_head(tmp_path / "nothing", TARGET, target)
    good = save_head(tmp_path / "good", head, TARGET, target)
    other = init_params(TARGET, jax.random.key(9))
    with pytest.raises(SpecjaxError, match="was made for a different target"):
        load_head(good, TARGET, other)
    partial = save_head(tmp_path / "partial", head, TARGET, target)
    (partial / WEIGHTS_FILE).unlink()
    with pytest.raises(SpecjaxError, match="incomplete"):
        load_head(partial, TARGET, target)
    corrupt = save_head(tmp_path / "corrupt", head, TARGET, target)
    (corrupt / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(SpecjaxError, match="corrupt or truncated"):
        load_head(corrupt, TARGET, target)
    garbled = save_head(tmp_path / "garbled", head, TARGET, target)
    (garbled / CONFIG_FILE).write_text("{")
    with pytest.raises(SpecjaxError, match="corrupt head config"):
        load_head(garbled, TARGET, target)


def test_medusa_heads_round_trip_and_are_not_taken_for_a_recurrent_head(target, tmp_path):
    from models.medusa_heads import init_heads

    ids = jnp.arange(0, TARGET.V, 2, dtype=jnp.int32)
    heads = init_heads(target, num_heads=3, head_token_ids=ids)
    heads = heads.replace(res_b=heads.res_b + 0.5)
    save_head(tmp_path, heads, TARGET, target)
    back = load_head(tmp_path, TARGET, target, kind="medusa")
    assert back.num_heads == 3 and back.num_columns == ids.shape[0]
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(heads), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=2e-2)
    with pytest.raises(SpecjaxError, match="holds a medusa head, not a recurrent head"):
        load_head(tmp_path, TARGET, target)
