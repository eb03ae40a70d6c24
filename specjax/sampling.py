"""One warp for every distribution the library samples from or verifies against.

Temperature, top-k and top-p are applied to the target's p and, where a drafter has one, to its q by
the same function, so speculative sampling compares like with like (DESIGN "Verification").
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from models.errors import SpecjaxError


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """temperature 0 means greedy (argmax); top_k 0 and top_p 1 mean no truncation."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if not self.temperature >= 0:
            raise SpecjaxError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise SpecjaxError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise SpecjaxError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def warp_logits(logits_V: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """Logits [..., V] -> warped float32 logits; tokens cut by top-k/top-p get -inf."""
    logits = logits_V.astype(jnp.float32)
    if cfg.greedy:
        return logits
    logits = logits / cfg.temperature
    neg = -jnp.inf
    if cfg.top_k and cfg.top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, cfg.top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if cfg.top_p < 1.0:
        sorted_desc = -jnp.sort(-logits, axis=-1)
        probs = jax.nn.softmax(sorted_desc, axis=-1)
        # Keep the smallest prefix whose mass reaches top_p (the token that crosses it included).
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        cutoff = jnp.min(
            jnp.where(mass_before < cfg.top_p, sorted_desc, jnp.inf), -1, keepdims=True
        )
        logits = jnp.where(logits < cutoff, neg, logits)
    return logits


def probabilities(logits_V: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """The distribution the method must reproduce: warped softmax, or one-hot argmax if greedy."""
    if cfg.greedy:
        return jax.nn.one_hot(jnp.argmax(logits_V, -1), logits_V.shape[-1], dtype=jnp.float32)
    return jax.nn.softmax(warp_logits(logits_V, cfg), axis=-1)


def sample_token(key: jax.Array, logits_V: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """One token per leading index: argmax when greedy, else a draw from the warped distribution."""
    if cfg.greedy:
        return jnp.argmax(logits_V, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, warp_logits(logits_V, cfg), axis=-1).astype(jnp.int32)
