"""A small draft LM for two-model speculative decoding, trained against a frozen target.

The draft is the target's own architecture made shallow: same width, heads and vocabulary,
`num_layers` blocks, and the target's embedding and LM head *shared and frozen* (tied for SmolLM2).
Sharing them keeps the vocabulary identical by construction, leaves only the blocks and the final
norm to learn (a 2-layer SmolLM2 draft saves in about 14 MB of bfloat16), and starts the draft in
the target's token space.

Loss: cross-entropy on the target's own greedy answers (self-distillation). Greedy speculative
decoding accepts a drafted token iff it equals the target's argmax, so hard labels from the
target's greedy output train exactly what is tested, at the cost of one stored token per position
instead of a V-wide distribution; ReDrafter (Cheng et al. 2024, §4) found self-distilled data
about 10 % better for acceptance than the human text the target was trained on. The metric `top1`
(draft argmax == label) is the greedy acceptance proxy.

Frequent-token head (`draft_vocab` > 0): the draft's head keeps only the target head's columns of
the `draft_vocab` tokens most frequent in the target's answers (FR-Spec, Zhao et al. 2025; EAGLE-3
drafts over a reduced vocabulary too). With SmolLM2 the full head is 28M of the target's 135M
parameters, so it would dominate a 2-layer draft's cost on a memory-bound CPU; 8192 columns cover
almost every answer token at 1/6 of the bytes. Tokens outside can never be drafted (no loss term).

The model itself, its sharing of the target's tensors and its on-disk format are
`models.draft_lm`; this module is what training adds: the batch, the loss, the head's tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from models.config import ModelConfig
from models.draft_lm import Shared, Trainable, cast, merge
from models.transformer import ModelParams, lm_logits, sequence_hidden


@struct.dataclass
class Batch:
    """tokens: int32 [B, S] prompt + answer, padded; mask: bool [B, S] True on answer tokens."""

    tokens: jax.Array
    mask: jax.Array


def frequent_tokens(tokens_NS: np.ndarray, mask_NS: np.ndarray, n: int, V: int) -> np.ndarray:
    """The n token ids most frequent among answer tokens (ties by id), sorted by id."""
    counts = np.bincount(tokens_NS[mask_NS].ravel(), minlength=V)
    top = np.argsort(-counts, kind="stable")[: min(n, V)]
    return np.sort(top).astype(np.int32)


def next_token_logits(config: ModelConfig, params: ModelParams, tokens_BS: jax.Array) -> jax.Array:
    """float32 logits_BSV of a causal forward over whole sequences (no cache kept)."""
    return lm_logits(params, sequence_hidden(config, params, tokens_BS))


def make_loss(config: ModelConfig):
    """loss(own, frozen, batch) -> (mean CE, sums): the TrainLoop contract (see train.py).

    Position s predicts tokens[s+1], counted where mask[s+1] (an answer token). `sums` holds
    count, loss (summed CE) and top1 (draft argmax == the target's token); an all-padding row
    adds nothing. With a frequent-token head, labels outside it add no CE (they cannot be drafted)
    but count as top1 misses, so top1 stays the acceptance proxy; `covered` is the head's share.
    """

    def loss(own: Trainable, frozen: Shared, batch: Batch):
        params = merge(cast(own, frozen.embed.dtype), frozen)  # fp32 master -> compute dtype
        logits_BSV = next_token_logits(config, params, batch.tokens[:, :-1])
        labels_BS = batch.tokens[:, 1:]
        weight_BS = batch.mask[:, 1:].astype(jnp.float32)
        covered_BS = jnp.ones_like(weight_BS)
        if frozen.head_token_ids is not None:  # target id -> head column (-1: not in the head)
            ids = frozen.head_token_ids
            column = jnp.full((config.V,), -1, jnp.int32).at[ids].set(jnp.arange(ids.shape[0]))
            labels_BS = column[labels_BS]
            covered_BS = (labels_BS >= 0).astype(jnp.float32)
            labels_BS = jnp.maximum(labels_BS, 0)
        label_logit_BS = jnp.take_along_axis(logits_BSV, labels_BS[..., None], axis=-1)[..., 0]
        ce_BS = (jax.nn.logsumexp(logits_BSV, axis=-1) - label_logit_BS) * covered_BS
        hit_BS = (jnp.argmax(logits_BSV, axis=-1) == labels_BS) * covered_BS
        count = weight_BS.sum()
        sums = {
            "count": count,
            "loss": (ce_BS * weight_BS).sum(),
            "top1": (hit_BS * weight_BS).sum(),
            "covered": (covered_BS * weight_BS).sum(),
        }
        return sums["loss"] / jnp.maximum(count, 1.0), sums

    return loss
