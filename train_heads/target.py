"""The model a drafter learns from: a checkpoint, or a seeded tiny random Llama for tests.

Its fingerprint (`models.fingerprint`) names it in data shards and trained drafts.
"""

from __future__ import annotations

import jax

from configs.draft_lm import TINY_TARGET, TINY_TARGET_NAME
from models.errors import SpecjaxError
from models.loading import Model, load_model
from models.transformer import init_params


def load_target(spec: str, dtype: str = "float32") -> Model:
    """`load_model(spec)`, plus "tiny-random": a seeded random Llama with no tokenizer (tests)."""
    if spec == TINY_TARGET_NAME:
        import jax.numpy as jnp

        dt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}.get(dtype)
        if dt is None:
            raise SpecjaxError(f"unknown dtype {dtype!r} (choose from float32, bfloat16)")
        params = init_params(TINY_TARGET, jax.random.key(0), dtype=dt)
        return Model(TINY_TARGET, params, None, TINY_TARGET_NAME)
    return load_model(spec, dtype)
