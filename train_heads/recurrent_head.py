"""Training ReDrafter's recurrent head (`models.recurrent_head`) on the target's self-distilled answers.

Teacher forcing, as in the original: at every position t the head starts from the target's hidden
state h_t (stored by `make_data --hidden`). The token after t is the root, x_{t+1}. The RNN is fed
the target's own tokens x_{t+1}, ..., x_{t+L}, and step i (0-based) is scored by the cross-entropy
of its prediction against x_{t+2+i}. The loss sums the L steps' mean cross-entropies, so every
depth of the beam is trained at once, all positions in parallel.

The metric `top1_i` (the head's argmax at step i == the target's token, given a correct prefix)
is the per-depth greedy acceptance proxy that `train_heads.draft_agreement` turns into a tau.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from models.recurrent_head import RecurrentHeadParams, head_logits, rnn_step


@struct.dataclass
class HeadBatch:
    """tokens: int32 [B, S] prompt + answer, padded; mask: bool [B, S] True on answer tokens;
    hidden: [B, S, D] the target's final-norm hidden state after reading tokens[:, : s+1]."""

    tokens: jax.Array
    mask: jax.Array
    hidden: jax.Array


@struct.dataclass
class HeadFrozen:
    """What the head reads but does not learn: the target's embedding [V, D] and the
    frequent-token head's column ids (None for a full-vocabulary head)."""

    embed: jax.Array
    head_token_ids: jax.Array | None = None


def answer_windows(batch: HeadBatch, length: int, multiple: int = 16) -> HeadBatch:
    """The rows cropped to what a `length`-step loss reads: each starts length + 1 tokens before
    its answer (the first position whose last step predicts an answer token) and the width is
    the longest such window, rounded up to `multiple` (numpy arrays in and out).

    Every position is scored on its own (teacher forcing, no attention), so the prompt before
    that point is dead weight: on chat data it is about half of every row, and cropping it
    halves a training step at the same loss.
    """
    tokens, mask, hidden = (np.asarray(x) for x in (batch.tokens, batch.mask, batch.hidden))
    N, S = tokens.shape
    has = mask.any(axis=1)
    start = np.where(has, np.maximum(mask.argmax(axis=1) - length - 1, 0), 0)
    end = np.where(has, S - mask[:, ::-1].argmax(axis=1), 0)  # one past the last answer token
    width = min(S, -(-int((end - start).max(initial=1)) // multiple) * multiple)
    out_tokens = np.zeros((N, width), tokens.dtype)
    out_mask = np.zeros((N, width), bool)
    out_hidden = np.zeros((N, width) + hidden.shape[2:], hidden.dtype)
    for n in range(N):
        a, b = start[n], min(end[n], start[n] + width)
        out_tokens[n, : b - a], out_mask[n, : b - a] = tokens[n, a:b], mask[n, a:b]
        out_hidden[n, : b - a] = hidden[n, a:b]
    return HeadBatch(out_tokens, out_mask, out_hidden)


def _shift(x_BS, k: int, fill):
    """x[:, s + k] at position s, `fill` past the end."""
    B, S = x_BS.shape[:2]
    pad = jnp.full((B, min(k, S)) + x_BS.shape[2:], fill, x_BS.dtype)
    return jnp.concatenate([x_BS[:, k:], pad], axis=1)


def make_head_loss(length: int):
    """loss(own, frozen, batch) -> (sum over the `length` steps of their mean CE, sums).

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
        column = None
        if frozen.head_token_ids is not None:  # target id -> head column (-1: not in the head)
            ids = frozen.head_token_ids
            V = frozen.embed.shape[0]
            column = jnp.full((V,), -1, jnp.int32).at[ids].set(jnp.arange(ids.shape[0]))
        state = jnp.zeros_like(hidden_BSD)
        total, sums = 0.0, {}
        for i in range(length):
            state = rnn_step(head, state, _shift(embed_BSD, 1 + i, 0))
            logits_BSV = head_logits(head, hidden_BSD, state)
            labels_BS = _shift(batch.tokens, 2 + i, 0)
            weight_BS = _shift(batch.mask, 2 + i, False).astype(jnp.float32)
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
            total = total + mean_loss
            if i == 0:
                sums["count"] = count
            sums[f"step_loss_{i}"] = mean_loss * sums["count"]
            sums[f"step_top1_{i}"] = sums[f"top1_{i}"] / jnp.maximum(count, 1.0) * sums["count"]
        sums["loss"] = total * sums["count"]
        sums["top1"] = sums["step_top1_0"]
        return total, sums

    return loss
