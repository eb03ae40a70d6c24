"""A phrase pool on device: n-grams keyed by their first token, with static shapes.

Lookahead decoding (Fu et al. 2024, §3.2) and Ouroboros (Zhao et al. 2024, §3) keep a pool of
N-grams keyed by one token: after token k, the pool's phrases starting at k are guesses of the next
N-1 tokens. Here the pool is a fixed array so it can live inside the jitted decode loop:

  key_token int32 [NB, G]      the key of each entry, EMPTY where unused;
  phrases   int32 [NB, G, M]   the M = N-1 tokens that follow the key;
  stamp     int32 [NB, G]      when the entry was last written (the clock at the time);
  clock     int32 []           insertions so far.

A key lives in bucket `key % NB` (NB = the vocabulary when it is small, else fewer buckets: a
generation uses a few hundred distinct tokens, so collisions are rare). A bucket holds G entries.
Inserting a phrase that is already there refreshes its stamp; a new phrase takes an empty entry or
the least recently written one (LRU over insertions, which is LADE's and Ouroboros's order).
Lookup returns the newest entries first. Every function here is for one pool; decoding keeps one
pool per batch row (a leading B axis, under `jax.vmap`) so that a row's drafts never depend on the
other rows, and `merge_rows` folds them into one pool to carry to the next call (warm start).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from models.errors import SpecjaxError

EMPTY = -1  # key_token of an unused entry
POOL_FORMAT = "specjax-phrase-pool-v1"


@struct.dataclass
class PhrasePool:
    """See the module docstring; arrays may carry a leading batch axis B."""

    key_token: jax.Array
    phrases: jax.Array
    stamp: jax.Array
    clock: jax.Array

    @property
    def num_buckets(self) -> int:
        return self.key_token.shape[-2]

    @property
    def capacity(self) -> int:
        return self.key_token.shape[-1]

    @property
    def phrase_len(self) -> int:
        return self.phrases.shape[-1]


def empty_pool(num_buckets: int, capacity: int, phrase_len: int) -> PhrasePool:
    """A pool with no entries (no batch axis)."""
    return PhrasePool(
        key_token=jnp.full((num_buckets, capacity), EMPTY, jnp.int32),
        phrases=jnp.zeros((num_buckets, capacity, phrase_len), jnp.int32),
        stamp=jnp.zeros((num_buckets, capacity), jnp.int32),
        clock=jnp.zeros((), jnp.int32),
    )


def broadcast_rows(pool: PhrasePool, B: int) -> PhrasePool:
    """One copy of `pool` per batch row."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (B, *x.shape)), pool)


def insert(pool: PhrasePool, key, phrase_M, ok=True) -> PhrasePool:
    """Adds (key, phrase); refreshes it if present; no-op where `ok` is False or key < 0."""
    ok = jnp.asarray(ok) & (key >= 0) & jnp.all(phrase_M >= 0)
    b = jnp.maximum(key, 0) % pool.num_buckets
    keys_G, phrases_GM, stamp_G = pool.key_token[b], pool.phrases[b], pool.stamp[b]
    same = (keys_G == key) & jnp.all(phrases_GM == phrase_M[None, :], axis=1)
    # An existing copy first; else an empty entry; else the least recently written one.
    age = jnp.where(keys_G == EMPTY, -1, stamp_G)
    slot = jnp.where(jnp.any(same), jnp.argmax(same), jnp.argmin(age))
    clock = pool.clock + 1
    return PhrasePool(
        key_token=pool.key_token.at[b, slot].set(jnp.where(ok, key, keys_G[slot])),
        phrases=pool.phrases.at[b, slot].set(jnp.where(ok, phrase_M, phrases_GM[slot])),
        stamp=pool.stamp.at[b, slot].set(jnp.where(ok, clock, stamp_G[slot])),
        clock=jnp.where(ok, clock, pool.clock),
    )


def insert_many(pool: PhrasePool, keys_A, phrases_AM, ok_A) -> PhrasePool:
    """Inserts A phrases in order (later ones are newer)."""

    def body(a, p):
        return insert(p, keys_A[a], phrases_AM[a], ok_A[a])

    return jax.lax.fori_loop(0, keys_A.shape[0], body, pool)


def overwrite(pool: PhrasePool, key, slot, phrase_M, ok=True) -> PhrasePool:
    """Replaces entry `slot` of key's bucket with `phrase` if it still holds `key`.

    Ouroboros refreshes the suffix phrases it proposed with what the target said over them; the
    entry keeps its place, and a copy of the new phrase elsewhere in the bucket is emptied.
    """
    b = jnp.maximum(key, 0) % pool.num_buckets
    slot = jnp.clip(slot, 0, pool.capacity - 1)
    ok = jnp.asarray(ok) & (key >= 0) & (pool.key_token[b, slot] == key) & jnp.all(phrase_M >= 0)
    keys_G, phrases_GM = pool.key_token[b], pool.phrases[b]
    dup = (keys_G == key) & jnp.all(phrases_GM == phrase_M[None, :], axis=1)
    dup = dup & (jnp.arange(pool.capacity) != slot) & ok
    clock = pool.clock + 1
    keys_G = jnp.where(dup, EMPTY, keys_G)
    return PhrasePool(
        key_token=pool.key_token.at[b].set(keys_G),
        phrases=pool.phrases.at[b, slot].set(jnp.where(ok, phrase_M, phrases_GM[slot])),
        stamp=pool.stamp.at[b, slot].set(jnp.where(ok, clock, pool.stamp[b, slot])),
        clock=jnp.where(ok, clock, pool.clock),
    )


def lookup(pool: PhrasePool, key, k: int):
    """The k newest phrases of `key`: (phrases [k, M], valid bool [k], slot int32 [k])."""
    b = jnp.maximum(key, 0) % pool.num_buckets
    match = (pool.key_token[b] == key) & (key >= 0)
    score = jnp.where(match, pool.stamp[b], -1)
    if k > pool.capacity:  # asking for more than a bucket holds: pad with invalid entries
        score = jnp.concatenate([score, jnp.full((k - pool.capacity,), -1, score.dtype)])
    top, slot = jax.lax.top_k(score, k)
    slot = jnp.minimum(slot, pool.capacity - 1).astype(jnp.int32)
    return pool.phrases[b][slot], top >= 0, slot


def seed_from_tokens(pool: PhrasePool, tokens_S, length) -> PhrasePool:
    """Inserts every (N)-gram of tokens[:length], oldest first: the prompt seeds the pool."""
    M = pool.phrase_len
    S = tokens_S.shape[0]
    idx = jnp.arange(S)[:, None] + jnp.arange(1, M + 1)[None, :]
    phrases_SM = tokens_S[jnp.minimum(idx, S - 1)]
    ok_S = jnp.arange(S) + M < length
    return insert_many(pool, tokens_S, phrases_SM, ok_S)


def merge_rows(pool_B: PhrasePool) -> PhrasePool:
    """Folds per-row pools [B, ...] into one: per bucket, the G most recently written distinct
    entries over all rows (stamps are comparable: every row started from the same clock)."""
    B, NB, G = pool_B.key_token.shape
    M = pool_B.phrase_len
    keys = jnp.moveaxis(pool_B.key_token, 0, 1).reshape(NB, B * G)
    phrases = jnp.moveaxis(pool_B.phrases, 0, 1).reshape(NB, B * G, M)
    stamps = jnp.moveaxis(pool_B.stamp, 0, 1).reshape(NB, B * G)

    def bucket(keys_E, phrases_EM, stamp_E):
        E = keys_E.shape[0]
        same = (keys_E[:, None] == keys_E[None, :]) & jnp.all(
            phrases_EM[:, None] == phrases_EM[None, :], axis=-1
        )
        idx = jnp.arange(E)
        newer = (stamp_E[None, :] > stamp_E[:, None]) | (
            (stamp_E[None, :] == stamp_E[:, None]) & (idx[None, :] < idx[:, None])
        )
        shadowed = jnp.any(same & newer, axis=1)
        score = jnp.where((keys_E != EMPTY) & ~shadowed, stamp_E, -1)
        top, pick = jax.lax.top_k(score, G)
        return jnp.where(top >= 0, keys_E[pick], EMPTY), phrases_EM[pick], jnp.maximum(top, 0)

    k, p, s = jax.vmap(bucket)(keys, phrases, stamps)
    return PhrasePool(key_token=k, phrases=p, stamp=s, clock=jnp.max(pool_B.clock))


def num_entries(pool: PhrasePool) -> int:
    """Filled entries (host-side, for logs and tests)."""
    return int(np.sum(np.asarray(pool.key_token) != EMPTY))


def save_pool(path: str | Path, pool: PhrasePool) -> None:
    """Writes one (unbatched) pool as a plain .npz of int32 arrays; no pickle."""
    if pool.key_token.ndim != 2:
        raise SpecjaxError("save_pool takes one pool; merge per-row pools with merge_rows first")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            tmp,
            format=np.array(POOL_FORMAT),
            key_token=np.asarray(pool.key_token),
            phrases=np.asarray(pool.phrases),
            stamp=np.asarray(pool.stamp),
            clock=np.asarray(pool.clock),
        )
        tmp.replace(path)  # written whole, then renamed: a crash never leaves half a pool
    except OSError as e:
        raise SpecjaxError(f"cannot write phrase pool {path}: {e.strerror or e}") from None


def load_pool(path: str | Path, num_buckets: int, capacity: int, phrase_len: int) -> PhrasePool:
    """Reads a pool written by `save_pool`; its shape must match the drafter's configuration."""
    path = Path(path)
    if not path.is_file():
        raise SpecjaxError(f"phrase pool {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "format" not in f or str(f["format"]) != POOL_FORMAT:
                raise SpecjaxError(f"{path} is not a specjax phrase pool")
            arrays = {k: f[k] for k in ("key_token", "phrases", "stamp", "clock")}
    except (OSError, ValueError, KeyError) as e:
        raise SpecjaxError(f"cannot read phrase pool {path}: {e}") from None
    want = (num_buckets, capacity, phrase_len)
    got = (*arrays["key_token"].shape, arrays["phrases"].shape[-1])
    if arrays["key_token"].ndim != 2 or got != want or arrays["phrases"].shape[:2] != want[:2]:
        raise SpecjaxError(
            f"phrase pool {path} has buckets x capacity x phrase length {got}, the drafter "
            f"needs {want}"
        )
    return PhrasePool(**{k: jnp.asarray(v, jnp.int32) for k, v in arrays.items()})
