"""What a drafter hands the engine, and what the engine hands back after verification.

A verification block has T slots: slot 0 is the root (the last emitted token, not yet in the target's
cache), slots 1..T-1 are draft nodes. `parent` says the tree: parent[0] = ROOT_PARENT, every node's
parent has a smaller index (topological order), and siblings are tried in index order. A chain is
parent[i] = i - 1. Slots a drafter leaves empty get NO_PARENT and are never accepted, so drafters
with a variable number of proposals keep static shapes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

ROOT_PARENT = -1
NO_PARENT = -2  # an empty slot: never a child of anything


@struct.dataclass
class Candidates:
    """Attributes:
    tokens: int32 [B, T]; tokens[:, 0] is the root.
    parent: int32 [B, T] tree structure (see module doc).
    q_probs: float32 [B, T, V] the (warped) distribution node i was *sampled* from, or None when
      the drafter chose its nodes deterministically (top-k, n-gram lookup, beams, phrases): the
      verifier then treats q as one-hot, which is exact (DESIGN "Verification").
    needs_target: bool [B], or None (every row): rows whose block the target must check this
      step. A row that does not need it (a learned verifier trusts its draft so far, SPRINTER)
      emits nothing and keeps drafting; the target forward runs only when some active row needs
      it, and `target_calls` counts only the rows that did. Such a row comes back to `update`
      with n_path = 0 and `target_ran` False.
    """

    tokens: jax.Array
    parent: jax.Array
    q_probs: jax.Array | None = None
    needs_target: jax.Array | None = None

    @property
    def num_drafted(self) -> jax.Array:
        """int32 [B] real draft nodes per row."""
        return jnp.sum(self.parent[:, 1:] != NO_PARENT, axis=1).astype(jnp.int32)


@struct.dataclass
class Prefill:
    """The prompts as the target saw them, for a drafter's `init`.

    Attributes:
      tokens: int32 [B, P] right-padded prompts.
      length: int32 [B] real prompt lengths.
      hidden: [B, P, D] the target's final-norm hidden states at every prompt position (heads that
        attend over the context start from them; a drafter that ignores them costs nothing, as
        XLA drops what is never read).
      features: [B, P, F, D] the outputs of the target layers the drafter's `feature_layers`
        names, in that order (None when it names none).
    """

    tokens: jax.Array
    length: jax.Array
    hidden: jax.Array
    features: jax.Array | None = None


@struct.dataclass
class DraftContext:
    """What the target last produced, for `propose`.

    Attributes:
      root: int32 [B] the last emitted token (slot 0 of the next block).
      root_position: int32 [B] its position (= the target cache length).
      hidden: [B, D] the target's final-norm hidden state at the token before the root, i.e. the
        state that predicted the root (ReDrafter/Medusa-style heads draft from it).
      done: bool [B] finished rows (a drafter may skip work for them).
      remaining: int32 [B] tokens the row may still emit (a drafter that decides its own draft
        length stops where the budget does), or None.
    """

    root: jax.Array
    root_position: jax.Array
    hidden: jax.Array
    done: jax.Array
    remaining: jax.Array | None = None


@struct.dataclass
class Verified:
    """The outcome of one verification, for `update`.

    Attributes:
      path: int32 [B, T] node indices of the accepted path, path[:, 0] = 0 (the root).
      n_path: int32 [B] 1 + accepted draft tokens.
      path_tokens: int32 [B, T] tokens along the path (root first).
      bonus: int32 [B] the target's own next token after the path: the new root.
      new_root_position: int32 [B] the bonus token's position.
      target_argmax: int32 [B, T] the target's argmax after every node (Ouroboros reuses it).
      hidden: [B, T, D] the target's final-norm hidden state at every node of the block (a head
        with its own context state appends the accepted path's: hidden[b, path[b, :n_path]]).
      features: [B, T, F, D] the outputs of the drafter's `feature_layers` at every node (None
        when it names none).
      target_ran: bool [B] the target checked this row's block (see `Candidates.needs_target`).
      candidates: the block that was verified.
    """

    path: jax.Array
    n_path: jax.Array
    path_tokens: jax.Array
    bonus: jax.Array
    new_root_position: jax.Array
    target_argmax: jax.Array
    hidden: jax.Array
    target_ran: jax.Array
    candidates: Candidates
    features: jax.Array | None = None


def tree_mask(parent_BT: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Depth [B, T] and ancestor-or-self mask [B, T, T] from parent indices (empty slots see
    only themselves, at depth 0)."""
    B, T = parent_BT.shape
    eye = jnp.eye(T, dtype=bool)

    def add_node(i, carry):
        mask, depth = carry
        p = parent_BT[:, i]
        has_parent = p >= 0
        p_safe = jnp.maximum(p, 0)
        row = jnp.take_along_axis(mask, p_safe[:, None, None], axis=1)[:, 0] & has_parent[:, None]
        mask = mask.at[:, i].set(row | eye[i][None])
        d = jnp.where(has_parent, jnp.take_along_axis(depth, p_safe[:, None], 1)[:, 0] + 1, 0)
        return mask, depth.at[:, i].set(d)

    mask0 = jnp.broadcast_to(eye, (B, T, T))
    depth0 = jnp.zeros((B, T), jnp.int32)
    mask, depth = jax.lax.fori_loop(1, T, add_node, (mask0, depth0))
    return depth, mask


def chain_parent(B: int, T: int) -> jax.Array:
    """parent [B, T] of a chain: root -> 1 -> 2 -> ..."""
    return jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32) - 1, (B, T))


def dedup_prefixes(tokens_BT: jax.Array, parent_BT: jax.Array) -> jax.Array:
    """parent [B, T] with repeated prefixes merged: the tree becomes a trie.

    Drafters that gather candidates from several sources (a Jacobi window, pool phrases, beams)
    often propose the same first tokens twice. Verification follows the first matching sibling, so
    a duplicate would hide a longer continuation under its twin. A node whose (parent, token)
    equals an earlier node's is emptied (NO_PARENT) and its children move to the earlier node;
    indices, and so static shapes and topological order, are unchanged.
    """
    T = tokens_BT.shape[1]

    def row(tokens_T, parent_T):
        def visit(i, parent):
            p = parent[i]
            idx = jnp.arange(T)
            twin = (idx < i) & (parent == p) & (tokens_T == tokens_T[i]) & (p != NO_PARENT)
            first = jnp.argmax(twin)
            has_twin = jnp.any(twin) & (p != NO_PARENT)
            # Children of i (all after i) now hang under the twin; i itself becomes empty.
            moved = jnp.where((idx > i) & (parent == i) & has_twin, first, parent)
            return moved.at[i].set(jnp.where(has_twin, NO_PARENT, p))

        return jax.lax.fori_loop(1, T, visit, parent_T)

    return jax.vmap(row)(tokens_BT, parent_BT)


def pack_tree(tokens_BT: jax.Array, parent_BT: jax.Array, slots: int):
    """(tokens [B, slots], parent [B, slots]): the tree's non-empty nodes moved to the front, in
    index order, and cut to `slots`.

    A drafter whose tree has many empty slots after `dedup_prefixes` (beams that share prefixes)
    can verify a smaller static block: on a machine where the verify cost grows with the block
    size, empty slots are paid for. Index order is kept, so parents still come first and siblings
    are tried in the same order; a node cut off takes its subtree with it (children come later).
    """
    B, T = tokens_BT.shape
    valid = parent_BT != NO_PARENT
    new_index = jnp.cumsum(valid, axis=1) - 1  # [B, T]
    dest = jnp.where(valid, new_index, slots)  # slots: out of range, dropped by the scatter
    moved_parent = jnp.where(
        parent_BT >= 0, jnp.take_along_axis(new_index, jnp.maximum(parent_BT, 0), axis=1), parent_BT
    )
    rows = jnp.arange(B)[:, None]
    tokens = jnp.zeros((B, slots), tokens_BT.dtype).at[rows, dest].set(tokens_BT, mode="drop")
    parent = jnp.full((B, slots), NO_PARENT, parent_BT.dtype)
    parent = parent.at[rows, dest].set(moved_parent.astype(parent_BT.dtype), mode="drop")
    return tokens, parent
