"""What the hidden-state heads train on, and the per-depth terms their losses share.

ReDrafter's recurrent head and Medusa's heads both read the target's final-norm hidden state at
a position and predict tokens further ahead, one depth at a time. A batch is the target's own
answers with those hidden states (`make_data --hidden`); each depth is scored by cross-entropy,
with the count, the summed CE and the top-1 hits kept for `train_heads.train.fit`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class HeadBatch:
    """tokens: int32 [B, S] prompt + answer, padded; mask: bool [B, S] True on answer tokens;
    hidden: [B, S, D] the target's final-norm hidden state after reading tokens[:, : s+1];
    topk_ids, topk_logits: [B, S, K] its K best next-token logits there (`make_data --topk`),
    or None when the loss needs no soft targets."""

    tokens: jax.Array
    mask: jax.Array
    hidden: jax.Array
    topk_ids: jax.Array | None = None
    topk_logits: jax.Array | None = None


def answer_windows(batch: HeadBatch, length: int, multiple: int = 16) -> HeadBatch:
    """The rows cropped to what a `length`-step loss reads: each starts length + 1 tokens before
    its answer (the first position whose last step predicts an answer token) and the width is
    the longest such window, rounded up to `multiple` (numpy arrays in and out).

    Every position is scored on its own (teacher forcing, no attention), so the prompt before
    that point is dead weight: on chat data it is about half of every row, and cropping it
    halves a training step at the same loss.
    """
    rows = jax.tree.map(np.asarray, batch)
    mask = rows.mask
    N, S = mask.shape
    has = mask.any(axis=1)
    start = np.where(has, np.maximum(mask.argmax(axis=1) - length - 1, 0), 0)
    end = np.where(has, S - mask[:, ::-1].argmax(axis=1), 0)  # one past the last answer token
    width = min(S, -(-int((end - start).max(initial=1)) // multiple) * multiple)

    def crop(x):
        out = np.zeros((N, width) + x.shape[2:], x.dtype)
        for n in range(N):
            a, b = start[n], min(end[n], start[n] + width)
            out[n, : b - a] = x[n, a:b]
        return out

    return jax.tree.map(crop, rows)


def shift(x_BS, k: int, fill):
    """x[:, s + k] at position s, `fill` past the end."""
    B, S = x_BS.shape[:2]
    pad = jnp.full((B, min(k, S)) + x_BS.shape[2:], fill, x_BS.dtype)
    return jnp.concatenate([x_BS[:, k:], pad], axis=1)


def label_columns(head_token_ids: jax.Array | None, V: int) -> jax.Array | None:
    """int32 [V] target id -> head column (-1: not in a frequent-token head); None for a full one."""
    if head_token_ids is None:
        return None
    return jnp.full((V,), -1, jnp.int32).at[head_token_ids].set(jnp.arange(head_token_ids.shape[0]))


def depth_sums(sums: dict, i: int, logits_BSV, labels_BS, weight_BS, column) -> jax.Array:
    """Scores depth i into `sums` and returns its mean CE.

    sums gets count_i, loss_i (summed CE) and top1_i; count (depth 0's, which `fit` divides
    every sum by) and the depth's mean rescaled to it: step_loss_i and step_top1_i. A label
    outside a frequent-token head (`column`) cannot be drafted: it adds no CE but counts as a
    top-1 miss.
    """
    covered_BS = jnp.ones_like(weight_BS)
    if column is not None:
        labels_BS = column[labels_BS]
        covered_BS = (labels_BS >= 0).astype(jnp.float32)
        labels_BS = jnp.maximum(labels_BS, 0)
    label_logit = jnp.take_along_axis(logits_BSV, labels_BS[..., None], axis=-1)[..., 0]
    ce_BS = (jax.nn.logsumexp(logits_BSV, axis=-1) - label_logit) * covered_BS
    hit_BS = (jnp.argmax(logits_BSV, axis=-1) == labels_BS) * covered_BS
    count = weight_BS.sum()
    sums[f"count_{i}"] = count
    sums[f"loss_{i}"] = (ce_BS * weight_BS).sum()
    sums[f"top1_{i}"] = (hit_BS * weight_BS).sum()
    mean_loss = sums[f"loss_{i}"] / jnp.maximum(count, 1.0)
    if i == 0:
        sums["count"] = count
    sums[f"step_loss_{i}"] = mean_loss * sums["count"]
    sums[f"step_top1_{i}"] = sums[f"top1_{i}"] / jnp.maximum(count, 1.0) * sums["count"]
    return mean_loss


def soft_cross_entropy(logits_BSV, ids_BSK, target_logits_BSK, weight_BS, column) -> jax.Array:
    """Summed cross-entropy of the head against the target's top-k distribution (softmax of its K
    best logits) at each weighted position: the KL to it, less the target's entropy, which the
    head cannot change. Target tokens outside a frequent-token head (`column`) cannot be drafted:
    the target's mass is renormalised over the covered ones."""
    p_BSK = jax.nn.softmax(target_logits_BSK.astype(jnp.float32), axis=-1)
    if column is not None:
        ids_BSK = column[ids_BSK]
        p_BSK = jnp.where(ids_BSK >= 0, p_BSK, 0.0)
        p_BSK = p_BSK / jnp.maximum(p_BSK.sum(-1, keepdims=True), 1e-9)
        ids_BSK = jnp.maximum(ids_BSK, 0)
    logq_BSV = jax.nn.log_softmax(logits_BSV, axis=-1)
    logq_BSK = jnp.take_along_axis(logq_BSV, ids_BSK, axis=-1)
    return (-(p_BSK * logq_BSK).sum(-1) * weight_BS).sum()
