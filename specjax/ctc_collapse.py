"""CTC's collapse applied to a draft tree, with static shapes.

A CTC-trained drafter emits frames: a frame may be the blank (no token) or repeat the frame
before it (the same token still being emitted). The token sequence a path of frames stands for
is the path with repeats merged and blanks removed, CTC's rule: repeats are judged between
consecutive *frames*, so "a a" is one "a" and "a _ a" is two.

On a tree every root-to-node path is such a frame sequence. A node is dropped when it is a blank
or repeats its parent frame (the root, the last emitted token, is not a frame: a first frame equal
to it is a real repeated token, as in the released code). A dropped node's children move up to
its nearest kept ancestor, so every kept node's path spells the collapsed sequence and its depth
is its position after left-compaction; dropped nodes become empty slots (`NO_PARENT`). Pointer
jumping over a fixed number of rounds keeps it static: no data-dependent sizes anywhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from specjax.candidates import NO_PARENT


def collapse_tree(
    frames_BT: jax.Array, parent_BT: jax.Array, blank: int, max_depth: int
) -> jax.Array:
    """int32 [B, T]: the tree's parents after CTC collapse (see the module doc).

    Args:
      frames_BT: int32 the frame at every node (a token id, or `blank`); node 0 is the root.
      parent_BT: int32 the frame tree (parent[:, 0] = ROOT_PARENT, parents before children,
        NO_PARENT for empty slots).
      blank: the blank's id in frames_BT.
      max_depth: the tree's depth (rounds of pointer jumping; a deeper tree is not collapsed
        fully).
    """
    B, T = frames_BT.shape
    node = jnp.arange(T)[None, :]
    real = (parent_BT >= 0) & (node > 0)
    safe_parent = jnp.maximum(parent_BT, 0)
    parent_frame = jnp.take_along_axis(frames_BT, safe_parent, axis=1)
    repeat = (parent_BT > 0) & (frames_BT == parent_frame)
    drop = real & ((frames_BT == blank) | repeat)
    # anchor: the nearest ancestor that is kept (the root is always kept)
    anchor = safe_parent
    for _ in range(max_depth):
        anchor_dropped = jnp.take_along_axis(drop, anchor, axis=1)
        anchor = jnp.where(anchor_dropped, jnp.take_along_axis(safe_parent, anchor, axis=1), anchor)
    return jnp.where(real & ~drop, anchor, jnp.where(node == 0, parent_BT, NO_PARENT)).astype(
        jnp.int32
    )


def collapse_path(frames_BN: jax.Array, blank: int, fill: int = -1) -> tuple[jax.Array, jax.Array]:
    """(tokens_BN, length_B): each row's frame sequence collapsed and left-compacted, `fill` after
    its length. The chain case of `collapse_tree` (the first frame is compared with nothing)."""
    B, N = frames_BN.shape
    prev = jnp.concatenate([jnp.full((B, 1), blank, frames_BN.dtype), frames_BN[:, :-1]], axis=1)
    keep = (frames_BN != blank) & (frames_BN != prev)
    slot = jnp.cumsum(keep, axis=1) - 1
    dest = jnp.where(keep, slot, N)  # dropped frames go past the end and are discarded
    out = jnp.full((B, N), fill, frames_BN.dtype)
    out = out.at[jnp.arange(B)[:, None], dest].set(frames_BN, mode="drop")
    return out, keep.sum(axis=1).astype(jnp.int32)
