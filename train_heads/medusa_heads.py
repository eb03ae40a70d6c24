"""Training Medusa's heads (`models.medusa_heads`) on the target's self-distilled answers (Medusa-1:
the target frozen).

At every position t, head k reads the target's hidden state h_t and is scored by the
cross-entropy of its prediction against the target's own token x_{t+2+k}. The heads are trained
together; head k's mean CE is weighted by `decay`**k (0.8, Medusa-2's weighting: the far heads
are the least reliable and the least often reached).

`rank_accuracy` then measures, on held-out rows, how often head k's rank-r guess is the target's
token: the accuracies `specjax.static_tree.build_tree` chooses a tree from.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from models.medusa_heads import MedusaHeadsParams, heads_logits
from train_heads.head_batch import HeadBatch, depth_sums, label_columns, shift

DECAY = 0.8


@struct.dataclass
class MedusaFrozen:
    """What the heads read but do not learn: the frequent-token columns' ids (None: all of V),
    and V."""

    head_token_ids: jax.Array | None
    vocab_size: int = struct.field(pytree_node=False)


def make_medusa_loss(num_heads: int, decay: float = DECAY):
    """loss(own, frozen, batch) -> (sum over heads of decay**k * mean CE, sums), with the sums
    `train_heads.train.fit` reads (per head k: count_k, loss_k, top1_k, step_loss_k,
    step_top1_k; `loss`, `top1`)."""

    def loss(own: MedusaHeadsParams, frozen: MedusaFrozen, batch: HeadBatch):
        heads = own.replace(head_token_ids=frozen.head_token_ids)
        logits_BSKV = heads_logits(heads, batch.hidden.astype(own.lm_head.dtype))
        column = label_columns(frozen.head_token_ids, frozen.vocab_size)
        total, sums = 0.0, {}
        for k in range(num_heads):
            labels_BS = shift(batch.tokens, 2 + k, 0)
            weight_BS = shift(batch.mask, 2 + k, False).astype(jnp.float32)
            mean = depth_sums(sums, k, logits_BSKV[:, :, k], labels_BS, weight_BS, column)
            total = total + decay**k * mean
        sums["loss"] = total * sums["count"]
        sums["top1"] = sums["step_top1_0"]
        return total, sums

    return loss


def rank_accuracy(heads: MedusaHeadsParams, batch: HeadBatch, ranks: int) -> np.ndarray:
    """float [K, ranks]: the fraction of answer positions where head k's rank-r guess is the
    target's token x_{t+2+k} (numpy in, one jitted pass per row block)."""
    K = heads.num_heads
    hits, counts = np.zeros((K, ranks)), np.zeros(K)

    @jax.jit
    def guesses(hidden_BSD):
        _, columns = jax.lax.top_k(
            heads_logits(heads, hidden_BSD.astype(heads.lm_head.dtype)), ranks
        )
        ids = columns if heads.head_token_ids is None else heads.head_token_ids[columns]
        return ids  # [B, S, K, ranks]

    tokens, mask = np.asarray(batch.tokens), np.asarray(batch.mask)
    for start in range(0, tokens.shape[0], 8):
        ids = np.asarray(guesses(jnp.asarray(batch.hidden[start : start + 8])))
        for k in range(K):
            label = np.asarray(shift(jnp.asarray(tokens[start : start + 8]), 2 + k, 0))
            weight = np.asarray(shift(jnp.asarray(mask[start : start + 8]), 2 + k, False))
            hits[k] += ((ids[:, :, k, :] == label[..., None]) & weight[..., None]).sum(axis=(0, 1))
            counts[k] += weight.sum()
    return hits / np.maximum(counts, 1)[:, None]
