"""`load_model` on the embedded GGUF: the second load reads the derived-checkpoint cache and gives
the same params and tokenizer; a damaged cache entry is rebuilt, never used."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from models import derived_cache, loading
from models.params_file import named_leaves


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECJAX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def assert_same_model(a: loading.Model, b: loading.Model) -> None:
    assert a.config == b.config
    leaves_a, leaves_b = named_leaves(a.params), named_leaves(b.params)
    assert sorted(leaves_a) == sorted(leaves_b)
    for name in leaves_a:
        np.testing.assert_array_equal(leaves_a[name], leaves_b[name], err_msg=name)
    text = "Hello world!  2024 Ünïcode 🙂\n\tdef f(x): return x"
    assert a.tokenizer(text).input_ids == b.tokenizer(text).input_ids
    assert a.tokenizer.chat_template == b.tokenizer.chat_template
    assert a.eos_ids == b.eos_ids


@pytest.mark.slow
def test_second_load_reads_the_cache_and_damage_is_rebuilt(cache, smollm2_path, monkeypatch):
    first = loading.load_model("smollm2")
    params_entry = derived_cache.lookup(loading.PARAMS_CACHE, smollm2_path)
    tok_entry = derived_cache.lookup(loading.TOKENIZER_CACHE, smollm2_path)
    assert params_entry is not None and tok_entry is not None

    from models import gguf_checkpoint

    def no_reading(*args, **kwargs):
        raise AssertionError("the GGUF file was read although the cache holds it")

    with monkeypatch.context() as m:
        m.setattr(gguf_checkpoint, "open_gguf", no_reading)
        second = loading.load_model("smollm2")
    assert_same_model(first, second)
    del second

    # A truncated weights file and a garbled tokenizer are detected and rebuilt from the GGUF.
    weights = params_entry / "params.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    tok_file = tok_entry / "tokenizer.json"
    tok_file.write_bytes(tok_file.read_bytes().replace(b'"merges"', b'"mergez"', 1))
    third = loading.load_model("smollm2")
    assert_same_model(first, third)
    assert derived_cache.lookup(loading.PARAMS_CACHE, smollm2_path) == params_entry


@pytest.mark.slow
def test_cached_load_in_bfloat16(cache, smollm2_path):
    loading.load_model("smollm2", tokenizer=False)  # fills the params entry (float32)
    assert derived_cache.lookup(loading.TOKENIZER_CACHE, smollm2_path) is None
    model = loading.load_model("smollm2", dtype="bfloat16", tokenizer=False)
    assert {x.dtype for x in jax.tree.leaves(model.params)} == {np.dtype("bfloat16")}
    assert model.tokenizer is None
