"""Training the CTC drafter's module (`models.ctc_draft`) on the target's self-distilled answers with
hidden states (the target frozen), as the released code's `train/main.py` sets it up.

At every position j the frame f_j (inputs h_j and x_{j+1}) is scored three ways:
  * 1.0 * SmoothL1(f_j, h_{j+1}): the frame regresses the target's next hidden state;
  * 0.1 * soft cross-entropy of the frame's distribution against the target's own next-token
    distribution softmax(head(h_{j+1})), both over the head's columns (the target's is
    renormalised over them; the blank gets none of its mass);
  * ctc_weight * CTC: the 6 consecutive frames f_j .. f_{j+5} against the target's next 3 greedy
    tokens argmax head(h_{j+1}), argmax head(h_{j+2}), argmax head(h_{j+3}) (over the head's
    columns; `optax.ctc_loss`, the blank a class of its own, each window's loss divided by its 3
    labels as torch's "mean" does).
Positions are weighted by whether the token the frame predicts (x_{j+2}) is an answer token; a CTC
window needs the 3 tokens its labels stand for (x_{j+2..j+4}) in the answer and its 6 frames
inside the row. ctc_weight = 0 is the EAGLE-1 drafter's loss (Li et al. 2024).

Unlike the position-wise heads (Medusa, ReDrafter), the layer attends over the whole context, so
rows are not cropped to their answers.

`chain_rank_accuracy` measures, on held-out rows, how often frame d's rank-r guess is the target's
token when the frames are drafted as at inference (top-1 chaining over the draft's own features):
the accuracies `specjax.static_tree.build_tree` sizes a tree from.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from models.cache import KVCache, init_cache
from models.config import ModelConfig
from models.ctc_draft import (
    CTCDraftHead,
    CTCDraftParams,
    column_tokens,
    draft_chain,
    frame_features,
    frame_logits,
)
from models.transformer import causal_mask
from train_heads.head_batch import HeadBatch, depth_sums, label_columns, shift

CTC_FRAMES = 6  # frames per CTC window (the released code's)
CTC_LABELS = 3  # target tokens per window
FEATURE_WEIGHT = 1.0
SOFT_CE_WEIGHT = 0.1
ROLLOUT_DECAY = 0.8  # frame d's weight is ROLLOUT_DECAY ** (d - 1) (`make_ctc_loss`)


@struct.dataclass
class CTCFrozen:
    """What the module reads but does not learn: the target's embedding and LM-head columns, the
    columns' token ids (None: all of V), and V."""

    embed: jax.Array  # [V, D]
    head_columns: jax.Array  # [D, V']
    head_token_ids: jax.Array | None
    vocab_size: int = struct.field(pytree_node=False)


def ctc_windows(frames_BSK: jax.Array, labels_BS: jax.Array, ok_BS: jax.Array, blank: int):
    """(loss_sum, count): the CTC term summed over every valid window.

    Window j is frames j .. j+5 of its row against labels j .. j+2 (label j being the target's
    greedy token that frame j should emit first); ok_BS says which windows count.
    """
    B, S, K = frames_BSK.shape
    idx = jnp.arange(S)[:, None] + jnp.arange(CTC_FRAMES)[None, :]  # [S, 6]
    lab = jnp.arange(S)[:, None] + jnp.arange(CTC_LABELS)[None, :]  # [S, 3]
    windows = frames_BSK[:, jnp.minimum(idx, S - 1)].reshape(B * S, CTC_FRAMES, K)
    labels = labels_BS[:, jnp.minimum(lab, S - 1)].reshape(B * S, CTC_LABELS)
    per_window = optax.ctc_loss(
        windows,
        jnp.zeros((B * S, CTC_FRAMES)),
        labels,
        jnp.zeros((B * S, CTC_LABELS)),
        blank_id=blank,
    )
    weight = ok_BS.reshape(-1).astype(jnp.float32)
    return (per_window / CTC_LABELS * weight).sum(), weight.sum()


def rollout_features(
    config: ModelConfig,
    params: CTCDraftParams,
    tokens_BS: jax.Array,
    features_BSD: jax.Array,
    k: jax.Array,
    v: jax.Array,
    frames: int,
) -> list[jax.Array]:
    """[features of frame 2, ..., frame `frames`], each [B, S, D]: at every start t, the frames
    drafted after frame 1 as at inference, each reading the previous frame's own feature, but with
    the answer's token x_{t+d} in place of the drafted one (a path is only drafted on while its
    tokens are right: the training-time test of EAGLE-3, Li et al. 2025).

    features_BSD, k, v: frame 1 at every position (the teacher-forced pass). Frame d at t sits at
    position t + d - 1 and sees what it sees when drafting: the teacher-forced pairs j <= t (frame 1
    at t among them) and frames 2..d-1 of its own start t; every frame d of every start runs in one
    call, with the earlier frames as a cache of (d - 1) * S slots and a per-frame slot mask.
    """
    if frames < 2:
        return []
    B, S, _ = features_BSD.shape
    cache = init_cache(1, B, config.K, (frames - 1) * S, config.H, features_BSD.dtype)
    cache = cache.append(k, v)
    slot = jnp.arange(cache.max_len)
    block, j = slot // S, slot % S
    t = jnp.arange(S)[:, None]
    out, feature = [], features_BSD
    for d in range(2, frames + 1):
        sees = ((block == 0) & (j <= t)) | ((block >= 1) & (block < d - 1) & (j == t))  # [S, slots]
        positions = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32) + d - 1, (B, S))
        feature, k, v = frame_features(
            config,
            params,
            feature,
            shift(tokens_BS, d, 0),
            positions,
            cache,
            jnp.broadcast_to(jnp.eye(S, dtype=bool), (B, S, S)),
            jnp.broadcast_to(sees, (B, S, cache.max_len)),
        )
        out.append(feature)
        if d < frames:
            cache = cache.append(k, v)
    return out


def make_ctc_loss(config: ModelConfig, ctc_weight: float, rollout_frames: int = 1):
    """loss(own, frozen, batch) -> (mean loss, sums) with the sums `train_heads.train.fit` reads:
    count, loss, top1 (frame 1's best token column is x_{j+2}), feature, soft_ce, ctc (means
    times count), and each frame's CE and top-1 (`depth_sums`; frame d + 1 is depth d).

    rollout_frames > 1 also scores frames 2..rollout_frames drafted on the module's own features
    (`rollout_features`): frame d's feature and soft cross-entropy terms against h_{t+d}, weighted
    0.8^(d-1) as Medusa weights its heads; the CTC term stays on frame 1's windows."""

    def loss(own: CTCDraftHead, frozen: CTCFrozen, batch: HeadBatch):
        head = own.replace(head_token_ids=frozen.head_token_ids)
        params = CTCDraftParams(head=head, embed=frozen.embed, head_columns=frozen.head_columns)
        B, S = batch.tokens.shape
        hidden = batch.hidden.astype(own.fc_w.dtype)
        cache = init_cache(1, B, config.K, 1, config.H, own.fc_w.dtype)
        positions = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S))
        features, k, v = frame_features(
            config, params, hidden, shift(batch.tokens, 1, 0), positions, cache, causal_mask(B, S)
        )
        frames = frame_logits(params, features)  # [B, S, V' + 1]
        blank = params.blank
        column = label_columns(frozen.head_token_ids, frozen.vocab_size)
        # the target's logits after h_{j+1}: frame j's soft target and its CTC labels
        target_logits = jnp.einsum(
            "bsd,dv->bsv", shift(hidden, 1, 0.0), frozen.head_columns,
            preferred_element_type=jnp.float32,
        )  # fmt: skip
        sums = {}

        def score(d, features_d, frames_d):
            """(weighted feature + soft-CE mean, feature mean, soft-CE mean) of frame d; its CE and
            top-1 go into `sums` as depth d - 1."""
            weight = shift(batch.mask, d + 1, False).astype(jnp.float32)
            count = jnp.maximum(weight.sum(), 1.0)
            feature = optax.huber_loss(features_d, shift(hidden, d, 0.0), delta=1.0).mean(-1)
            p = jax.nn.softmax(shift(target_logits, d - 1, 0.0), axis=-1)
            soft_ce = -(p * jax.nn.log_softmax(frames_d, axis=-1)[..., :blank]).sum(-1)
            depth_sums(
                sums, d - 1, frames_d[..., :blank], shift(batch.tokens, d + 1, 0), weight, column
            )
            mean_feature = (feature * weight).sum() / count
            mean_soft_ce = (soft_ce * weight).sum() / count
            return (
                FEATURE_WEIGHT * mean_feature + SOFT_CE_WEIGHT * mean_soft_ce,
                mean_feature,
                mean_soft_ce,
            )

        total, mean_feature, mean_soft_ce = score(1, features, frames)
        sums["feature"] = mean_feature * sums["count"]
        sums["soft_ce"] = mean_soft_ce * sums["count"]
        rolled = rollout_features(config, params, batch.tokens, features, k, v, rollout_frames)
        for d, features_d in enumerate(rolled, start=2):
            term, _, _ = score(d, features_d, frame_logits(params, features_d))
            total = total + ROLLOUT_DECAY ** (d - 1) * term
        if ctc_weight > 0:
            # label at position j: the target's greedy column after h_{j+1} (frame j's token)
            greedy = jnp.argmax(target_logits, axis=-1)
            answer = shift(batch.mask, 2, False)
            labelled = answer & shift(answer, 1, False) & shift(answer, 2, False)
            in_row = jnp.arange(S)[None, :] + CTC_FRAMES <= S
            ctc_sum, ctc_count = ctc_windows(frames, greedy, labelled & in_row, blank)
            mean_ctc = ctc_sum / jnp.maximum(ctc_count, 1.0)
            total = total + ctc_weight * mean_ctc
            sums["ctc"] = mean_ctc * sums["count"]
        sums["loss"] = total * sums["count"]
        sums["top1"] = sums["step_top1_0"]
        return total, sums

    return loss


def _chain_logits(config: ModelConfig, params: CTCDraftParams, tokens_S, hidden_SD, depth: int):
    """float32 [depth, S, V' + 1]: for every start t, the frames drafted from root x_{t+1} as at
    inference (`draft_chain` over the teacher-forced context before t), one row per t."""
    S = tokens_S.shape[0]
    cache = init_cache(1, 1, config.K, S + depth, config.H, params.head.fc_w.dtype)
    positions = jnp.arange(S, dtype=jnp.int32)[None]
    _, k, v = frame_features(
        config, params, hidden_SD[None], shift(tokens_S[None], 1, 0), positions, cache,
        causal_mask(1, S),
    )  # fmt: skip
    cache = cache.append(k, v)
    rows = KVCache(  # row t holds the context pairs j < t
        k=jnp.broadcast_to(cache.k, (1, S, *cache.k.shape[2:])),
        v=jnp.broadcast_to(cache.v, (1, S, *cache.v.shape[2:])),
        length=jnp.arange(S, dtype=jnp.int32),
    )
    return draft_chain(config, params, hidden_SD, shift(tokens_S[None], 1, 0)[0], rows, depth)


def chain_rank_accuracy(
    config: ModelConfig,
    params: CTCDraftParams,
    batch: HeadBatch,
    depth: int,
    ranks: int,
    collapse: bool = True,
) -> np.ndarray:
    """float [depth, ranks]: at answer positions whose frames 1..d-1 drafted the target's tokens,
    the fraction where frame d's rank-r guess is the target's token x_{t+1+d} (a blank is a miss;
    `collapse` False leaves the blank out of the ranking, as the EAGLE-1 drafter does)."""
    chain = jax.jit(lambda tok, hid: _chain_logits(config, params, tok, hid, depth))
    hits, counts = np.zeros((depth, ranks)), np.zeros(depth)
    blank = params.blank
    for n in range(batch.tokens.shape[0]):
        tokens, mask = np.asarray(batch.tokens[n]), np.asarray(batch.mask[n])
        logits = chain(jnp.asarray(tokens), jnp.asarray(batch.hidden[n]))
        if not collapse:
            logits = logits[..., :blank]
        _, columns = jax.lax.top_k(logits, ranks)  # [depth, S, ranks]
        guess = np.asarray(column_tokens(params, columns))
        guess = np.where(np.asarray(columns) == blank, -1, guess)
        S = len(tokens)
        alive = np.ones(S, bool)
        for d in range(depth):
            at = np.arange(S) + 2 + d  # frame d + 1 stands for x_{t+2+d}
            valid = at < S
            label = np.where(valid, tokens[np.minimum(at, S - 1)], -2)
            counted = alive & valid & mask[np.minimum(at, S - 1)]
            hit = guess[d] == label[:, None]  # [S, ranks]
            hits[d] += (hit & counted[:, None]).sum(0)
            counts[d] += counted.sum()
            alive = counted & hit[:, 0]
    return hits / np.maximum(counts, 1)[:, None]
