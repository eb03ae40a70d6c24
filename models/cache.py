"""Static-shape KV cache with per-row lengths.

Nothing is ever deleted: a row's valid prefix is slots [0, length[b]); everything past it is masked
by the attention, so rollback is `length -= r` and a rejected draft costs nothing to undo.

Layout [L, B, K, S, H] (DESIGN writes [L, B, S, K, H]; we put K before S so that the attention dots
contract H with (B, K) as leading batch dims and XLA needs no transpose of the cache).
Writes go through a scatter with `mode="drop"`, so an out-of-range slot is dropped rather than
clamped onto earlier entries (STYLE 16); callers size S with slack for a full draft block.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class KVCache:
    """Attributes:
    k, v: [L, B, K, S, H] keys and values.
    length: int32 [B], the number of valid slots of each row.
    """

    k: jax.Array
    v: jax.Array
    length: jax.Array

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def append(self, k_LBTKH: jax.Array, v_LBTKH: jax.Array) -> KVCache:
        """Writes T new entries at each row's own offset and advances every length by T."""
        T = k_LBTKH.shape[2]
        slots_BT = self.length[:, None] + jnp.arange(T, dtype=jnp.int32)[None, :]
        rows_B1 = jnp.arange(self.length.shape[0])[:, None]
        # Advanced indices on axes 1 and 3 move to the front: the update is [B, T, L, K, H].
        k_upd = jnp.transpose(k_LBTKH, (1, 2, 0, 3, 4)).astype(self.k.dtype)
        v_upd = jnp.transpose(v_LBTKH, (1, 2, 0, 3, 4)).astype(self.v.dtype)
        k = self.k.at[:, rows_B1, :, slots_BT].set(k_upd, mode="drop")
        v = self.v.at[:, rows_B1, :, slots_BT].set(v_upd, mode="drop")
        return KVCache(k=k, v=v, length=self.length + T)

    def rollback(self, r_B: jax.Array) -> KVCache:
        """Forgets the last r[b] entries of each row."""
        return self.replace(length=self.length - r_B)

    def commit(self, block_len: int, path_slots_BA: jax.Array, n_accepted_B: jax.Array) -> KVCache:
        """Keeps an accepted tree path after a block of `block_len` nodes was appended.

        Args:
          block_len: T of the verification forward that appended the nodes.
          path_slots_BA: node index (0..T-1) of the a-th accepted node of each row, in path order;
            entries at a >= n_accepted[b] are ignored.
          n_accepted_B: how many nodes of the block each row keeps.

        The a-th node moves to slot start + a. A path in topological order has slot[a] >= a, so
        gathering all sources before writing never reads an overwritten entry.
        """
        start_B = self.length - block_len
        A = path_slots_BA.shape[1]
        rows_B1 = jnp.arange(start_B.shape[0])[:, None]
        src_BA = start_B[:, None] + path_slots_BA
        a_A = jnp.arange(A, dtype=jnp.int32)[None, :]
        dst_BA = jnp.where(a_A < n_accepted_B[:, None], start_B[:, None] + a_A, self.max_len)
        k = self.k.at[:, rows_B1, :, dst_BA].set(self.k[:, rows_B1, :, src_BA], mode="drop")
        v = self.v.at[:, rows_B1, :, dst_BA].set(self.v[:, rows_B1, :, src_BA], mode="drop")
        return KVCache(k=k, v=v, length=start_B + n_accepted_B)


def init_cache(L: int, B: int, K: int, S: int, H: int, dtype=jnp.float32) -> KVCache:
    """An empty cache of S slots per row."""
    zeros = jnp.zeros((L, B, K, S, H), dtype)
    return KVCache(k=zeros, v=zeros, length=jnp.zeros((B,), jnp.int32))
