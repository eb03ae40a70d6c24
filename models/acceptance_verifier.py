"""SPRINTER's acceptance verifier (Zhong, Teku, Tandon 2025): a logistic classifier on the draft
model's last hidden state at the position before a drafted token, estimating whether the target
would keep that token (label 1 iff q(x) <= p(x), see `train_heads.sprinter`).

It reads the draft model's state only, so a target call can be skipped until the classifier doubts
the draft. One classifier per sampling temperature it was trained for ([N, F] weights); F is the
draft's width D, or 2D when the candidate token's embedding is an input too (the variant).
Decoding picks the classifier trained nearest its temperature (`for_temperature`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class VerifierParams:
    """N classifiers over F features."""

    w: jax.Array  # [N, F] (or [F] once one is chosen)
    b: jax.Array  # [N] (or [])
    head_token_ids: None = None  # a verifier has no vocabulary columns (the head-file contract)

    @property
    def num_features(self) -> int:
        return self.w.shape[-1]


def init_verifier(num_temperatures: int, num_features: int) -> VerifierParams:
    """All-zero classifiers: every score starts at 0.5."""
    return VerifierParams(
        w=jnp.zeros((num_temperatures, num_features), jnp.float32),
        b=jnp.zeros((num_temperatures,), jnp.float32),
    )


def for_temperature(
    params: VerifierParams, temperatures: tuple[float, ...], temperature: float
) -> VerifierParams:
    """The classifier trained at the temperature nearest `temperature`."""
    i = min(range(len(temperatures)), key=lambda k: abs(temperatures[k] - temperature))
    return VerifierParams(w=params.w[i], b=params.b[i])


def verifier_features(hidden_BD: jax.Array, token_embed_BD: jax.Array | None) -> jax.Array:
    """float32 [B, F]: the draft's hidden state, with the candidate's embedding for the variant."""
    parts = [hidden_BD] if token_embed_BD is None else [hidden_BD, token_embed_BD]
    return jnp.concatenate([p.astype(jnp.float32) for p in parts], axis=-1)


def verifier_logit(params: VerifierParams, features_BF: jax.Array) -> jax.Array:
    """float32 [B, N] (or [B] for one chosen classifier): the logit of "the target keeps it"."""
    w = params.w.astype(jnp.float32)
    return features_BF @ w.T + params.b.astype(jnp.float32)


def acceptance_score(params: VerifierParams, features_BF: jax.Array) -> jax.Array:
    """float32 [B] in (0, 1): the verifier's confidence that the drafted token is kept."""
    return jax.nn.sigmoid(verifier_logit(params, features_BF))
