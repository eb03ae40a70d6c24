"""Training data, labels and loss of SPRINTER's acceptance verifier (`models.acceptance_verifier`).

Facts from the released code (`dataset.py`, `train.py`): the draft proposes x at a position, the
label is 1 iff q(x) <= p(x) (the target would keep x for sure under speculative sampling), the
classifier reads the draft's last hidden state before x, BCE, Adam at lr 5e-4.

Here the positions are those of the self-distilled answers the heads train on (the target's own
text, which is what the decode loop's context is in exact mode): both models are teacher-forced
over them at once, the target's p coming from the hidden states stored in the data. At
temperature 0, q and p are one-hot and the label is "the draft's argmax is the target's"; above
0 the label is its expectation over x ~ q, sum_x q(x) [q(x) <= p(x)] (the code samples one x;
the expectation has the same mean and no sampling noise), except for the variant that reads the
candidate's embedding, which needs the drawn x and its own label. One classifier per temperature.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from tqdm import tqdm

from models.acceptance_verifier import VerifierParams, verifier_features, verifier_logit
from models.config import ModelConfig
from models.transformer import ModelParams, lm_logits, sequence_hidden
from specjax.sampling import SamplingConfig, warp_logits


@struct.dataclass
class VerifierBatch:
    """Positions with a target-generated next token: the draft's hidden state hidden_ND
    (float16), per temperature k the candidate tokens_NK (the draft's argmax at 0, a draw from
    its q above) and labels_NK in [0, 1]; an all-zero row (padding) has weight 0."""

    hidden: np.ndarray
    tokens: np.ndarray
    labels: np.ndarray
    weight: np.ndarray


def kept_for_sure(q_V: jax.Array, p_V: jax.Array, x: jax.Array) -> jax.Array:
    """The paper's label for a drafted x: q(x) <= p(x) (float 0/1)."""
    return (q_V[..., x] <= p_V[..., x]).astype(jnp.float32)


def expected_label(q_NV: jax.Array, p_NV: jax.Array) -> jax.Array:
    """float32 [N]: E_{x ~ q}[q(x) <= p(x)], the label averaged over the draft's draw."""
    return jnp.sum(jnp.where(q_NV <= p_NV, q_NV, 0.0), axis=-1)


def greedy_label(draft_logits_NV: jax.Array, target_logits_NV: jax.Array) -> jax.Array:
    """float32 [N]: at temperature 0, the draft's argmax equals the target's."""
    same = jnp.argmax(draft_logits_NV, -1) == jnp.argmax(target_logits_NV, -1)
    return same.astype(jnp.float32)


def labels_at(
    draft_logits_NV, target_logits_NV, temperatures: tuple[float, ...], key, with_token: bool
) -> tuple[jax.Array, jax.Array]:
    """(candidates int32 [N, K], labels float32 [N, K]), one column per temperature (both models'
    logits over the full vocabulary; a frequent-token draft's missing columns at -inf). At 0 the
    candidate is the draft's argmax; above 0 a draw from q, labelled by the paper's rule when the
    verifier reads the candidate (`with_token`), else by its expectation over the draw."""
    cands, cols = [], []
    for k, t in enumerate(temperatures):
        if t == 0:
            cands.append(jnp.argmax(draft_logits_NV, -1).astype(jnp.int32))
            cols.append(greedy_label(draft_logits_NV, target_logits_NV))
            continue
        s = SamplingConfig(temperature=t)
        q_logits = warp_logits(draft_logits_NV, s)
        q = jax.nn.softmax(q_logits, -1)
        p = jax.nn.softmax(warp_logits(target_logits_NV, s), -1)
        x = jax.random.categorical(jax.random.fold_in(key, k), q_logits).astype(jnp.int32)
        cands.append(x)
        if with_token:
            cols.append(jax.vmap(kept_for_sure)(q, p, x))
        else:
            cols.append(expected_label(q, p))
    return jnp.stack(cands, axis=-1), jnp.stack(cols, axis=-1)


def _full_vocab(logits_NVp: jax.Array, head_token_ids, V: int) -> jax.Array:
    if head_token_ids is None:
        return logits_NVp
    full = jnp.full(logits_NVp.shape[:-1] + (V,), -jnp.inf, logits_NVp.dtype)
    return full.at[..., head_token_ids].set(logits_NVp)


def make_row_features(
    draft_config: ModelConfig, temperatures: tuple[float, ...], with_token: bool, seed: int = 0
):
    """A jitted (draft params, target params, tokens [1, S], target hidden [1, S, D], row) ->
    (draft hidden [S, D], candidates [S, K], labels [S, K]): position s judges the draft's guess
    for token s + 1 (draws seeded by the row's index)."""

    def row(draft: ModelParams, target: ModelParams, tokens_1S, target_hidden_1SD, index):
        hidden = sequence_hidden(draft_config, draft, tokens_1S)  # [1, S, D]
        V = target.embed.shape[0]
        q_logits = _full_vocab(lm_logits(draft, hidden)[0], draft.head_token_ids, V)
        p_logits = lm_logits(target, target_hidden_1SD.astype(target.dtype))[0]
        key = jax.random.fold_in(jax.random.key(seed), index)
        cands, labels = labels_at(q_logits, p_logits, temperatures, key, with_token)
        return hidden[0], cands, labels

    return jax.jit(row)


def verifier_data(
    draft_config: ModelConfig,
    draft: ModelParams,
    target: ModelParams,
    tokens_NS: np.ndarray,
    mask_NS: np.ndarray,
    hidden_NSD: np.ndarray,
    temperatures: tuple[float, ...],
    with_token: bool,
    progress: bool = True,
    seed: int = 0,
) -> VerifierBatch:
    """Every position s of each row whose next token s + 1 the target generated (mask), as one
    flat batch (rows cut at their last such position; lengths rounded up to 64 so that few
    shapes compile)."""
    row_fn = make_row_features(draft_config, temperatures, with_token, seed)
    parts: list[tuple] = []
    for n in tqdm(range(len(tokens_NS)), desc="verifier data", unit="row", disable=not progress):
        keep = mask_NS[n, 1:]  # position s predicts s + 1
        if not keep.any():
            continue
        end = int(np.nonzero(keep)[0][-1]) + 1
        S = min(tokens_NS.shape[1], -(-end // 64) * 64)
        out = row_fn(
            draft, target, jnp.asarray(tokens_NS[n : n + 1, :S]), hidden_NSD[n : n + 1, :S], n
        )
        h, x, y = (np.asarray(a)[:end][keep[:end]] for a in out)
        parts.append((h.astype(np.float16), x, y.astype(np.float32)))
    hidden, tokens, labels = (np.concatenate(a) for a in zip(*parts, strict=True))
    return VerifierBatch(
        hidden=hidden, tokens=tokens, labels=labels, weight=np.ones((len(hidden),), np.float32)
    )


def batch_logits(params: VerifierParams, embed, batch: VerifierBatch) -> jax.Array:
    """float32 [N, K]: classifier k's logit on its own candidate (`embed`, the draft's embedding
    table, for a verifier that reads the candidate; None otherwise)."""
    hidden = batch.hidden.astype(jnp.float32)
    if embed is None:
        return verifier_logit(params, verifier_features(hidden, None))
    cols = []
    for k in range(batch.tokens.shape[1]):
        features = verifier_features(hidden, embed[batch.tokens[:, k]])
        cols.append(features @ params.w[k].astype(jnp.float32) + params.b[k])
    return jnp.stack(cols, axis=-1)


# Thresholds at which the held-out report also gives the pass and false-positive rates: the
# trade-off `--threshold` moves along (fewer target calls against a larger error bound).
REPORT_THRESHOLDS = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


def make_verifier_loss():
    """loss(params, frozen embedding or None, batch) -> (mean BCE over positions and temperatures, sums): sums
    hold, per temperature k, the expected accuracy at score 0.5 (`acc_k`), the false-positive
    rate's numerator (`fp_k`: passed although the target rejects) and the pass rate (`pass_k`),
    the same two at each of REPORT_THRESHOLDS (`fp_k_at_t`, `pass_k_at_t`), and `top1` = acc_0
    for the progress bar. Rates are per position (`count`)."""

    def loss(params: VerifierParams, embed, batch: VerifierBatch):
        logit = batch_logits(params, embed, batch)  # [N, K]
        y, w = batch.labels, batch.weight[:, None]
        bce = jnp.maximum(logit, 0) - logit * y + jnp.log1p(jnp.exp(-jnp.abs(logit)))
        count = batch.weight.sum()
        K = y.shape[1]
        mean = jnp.sum(bce * w) / jnp.maximum(count * K, 1.0)
        passed = (logit >= 0).astype(jnp.float32)
        correct = passed * y + (1 - passed) * (1 - y)
        sums = {"count": count, "loss": mean * count}
        for k in range(K):
            wk = batch.weight
            sums[f"acc_{k}"] = jnp.sum(correct[:, k] * wk)
            sums[f"fp_{k}"] = jnp.sum(passed[:, k] * (1 - y[:, k]) * wk)
            sums[f"rejects_{k}"] = jnp.sum((1 - y[:, k]) * wk)
            sums[f"pass_{k}"] = jnp.sum(passed[:, k] * wk)
            sums[f"kept_{k}"] = jnp.sum(y[:, k] * wk)
            for t in REPORT_THRESHOLDS:  # score >= t  <=>  logit >= log(t / (1 - t))
                passed_t = (logit[:, k] >= np.log(t / (1 - t))).astype(jnp.float32)
                sums[f"pass_{k}_at_{t}"] = jnp.sum(passed_t * wk)
                sums[f"fp_{k}_at_{t}"] = jnp.sum(passed_t * (1 - y[:, k]) * wk)
        sums["top1"] = sums["acc_0"]
        return mean, sums

    return loss


def verifier_report(metrics: dict, temperatures: tuple[float, ...]) -> dict:
    """Per temperature: accuracy, eta_FP (passed / target rejections), pass rate and the
    fraction the target keeps, from `evaluate`'s per-position ratios, at score 0.5 and (pass
    rate and eta_FP) at each of REPORT_THRESHOLDS."""
    out = {}
    for k, t in enumerate(temperatures):
        rejects = max(metrics[f"rejects_{k}"], 1e-12)
        out[str(t)] = {
            "accuracy": metrics[f"acc_{k}"],
            "false_positive_rate": metrics[f"fp_{k}"] / rejects,
            "pass_rate": metrics[f"pass_{k}"],
            "target_keeps": metrics[f"kept_{k}"],
            "by_threshold": {
                str(th): {
                    "pass_rate": metrics[f"pass_{k}_at_{th}"],
                    "false_positive_rate": metrics[f"fp_{k}_at_{th}"] / rejects,
                }
                for th in REPORT_THRESHOLDS
            },
        }
    return out
