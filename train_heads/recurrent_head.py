"""Training ReDrafter's recurrent head (`models.recurrent_head`) on the target's self-distilled answers.

Teacher forcing, as in the original: at every position t the head starts from the target's hidden
state h_t (stored by `make_data --hidden`). The token after t is the root, x_{t+1}. The RNN is fed
the target's own tokens x_{t+1}, ..., x_{t+L}, and step i (0-based) is scored by the cross-entropy
of its prediction against x_{t+2+i}. The loss sums the L steps' mean cross-entropies, so every
depth of the beam is trained at once, all positions in parallel.

With `kl_weight` > 0 each step also pays that weight times its soft cross-entropy against the
target's top-k distribution of the same token (`make_data --topk`): the target's whole belief, not
only its argmax, which is what the issue's optional KL term distils (the original trains on the
hard labels alone).

The metric `top1_i` (the head's argmax at step i == the target's token, given a correct prefix)
is the per-depth greedy acceptance proxy that `train_heads.draft_agreement` turns into a tau.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from models.recurrent_head import RecurrentHeadParams, head_logits, rnn_step
from train_heads.head_batch import (
    HeadBatch,
    depth_sums,
    label_columns,
    shift,
    soft_cross_entropy,
)


@struct.dataclass
class HeadFrozen:
    """What the head reads but does not learn: the target's embedding [V, D] and the
    frequent-token head's column ids (None for a full-vocabulary head)."""

    embed: jax.Array
    head_token_ids: jax.Array | None = None


def make_head_loss(length: int, kl_weight: float = 0.0):
    """loss(own, frozen, batch) -> (sum over the `length` steps of their mean CE, sums).

    With `kl_weight` > 0 (the batch then carries top-k logits) each step adds kl_weight times its
    mean soft CE against the target's top-k distribution (`soft_ce_i` in `sums`).

    `own` is the head's trainable weights (`head_token_ids` None; they come from `frozen`). `sums`
    holds, per step i, count_i, loss_i (summed CE) and top1_i. A label outside a frequent-token
    head cannot be drafted: it adds no CE but counts as a top-1 miss.

    For `train_heads.train.fit`, which divides every sum by `count`, `sums` also holds `count`
    (step 0's) and each step's mean rescaled to it: `step_loss_i` and `step_top1_i`, their sum
    `loss` (the objective) and `top1` (step 0's).
    """

    def loss(own: RecurrentHeadParams, frozen: HeadFrozen, batch: HeadBatch):
        head = own.replace(head_token_ids=frozen.head_token_ids)
        embed_BSD = frozen.embed[batch.tokens].astype(own.rnn_w.dtype)
        hidden_BSD = batch.hidden.astype(own.rnn_w.dtype)
        column = label_columns(frozen.head_token_ids, frozen.embed.shape[0])
        state = jnp.zeros_like(hidden_BSD)
        total, sums = 0.0, {}
        for i in range(length):
            state = rnn_step(head, state, shift(embed_BSD, 1 + i, 0))
            logits_BSV = head_logits(head, hidden_BSD, state)
            labels_BS = shift(batch.tokens, 2 + i, 0)
            weight_BS = shift(batch.mask, 2 + i, False).astype(jnp.float32)
            total = total + depth_sums(sums, i, logits_BSV, labels_BS, weight_BS, column)
            if kl_weight:
                # Row r of the top-k holds the target's distribution of token r + 1.
                ids_BSK = shift(batch.topk_ids, 1 + i, 0)
                target_BSK = shift(batch.topk_logits, 1 + i, 0.0)
                soft = soft_cross_entropy(logits_BSV, ids_BSK, target_BSK, weight_BS, column)
                sums[f"soft_ce_{i}"] = soft
                total = total + kl_weight * soft / jnp.maximum(weight_BS.sum(), 1.0)
        sums["loss"] = total * sums["count"]
        sums["top1"] = sums["step_top1_0"]
        return total, sums

    return loss
