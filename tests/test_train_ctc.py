"""CTC drafter training: the CTC term is the brute-force sum over alignments of the windows the
loss picks (frames j..j+5 against the target's greedy tokens after h_{j+1..j+3}), the loss falls
on a fixed batch, a trained module saves, loads, decodes exactly and drafts better than its
start, a stopped run resumes bit for bit, and the training-time rollout computes the frames the
drafter computes at inference."""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from models.cache import init_cache
from models.config import ModelConfig
from models.ctc_draft import attach, draft_config, frame_features, frame_logits, init_ctc_head
from models.transformer import causal_mask, init_params
from tests.conftest import fit_fixed_batch
from train_heads.ctc_draft import (
    CTC_FRAMES,
    CTCFrozen,
    ctc_windows,
    make_ctc_loss,
    rollout_features,
)
from train_heads.head_batch import HeadBatch

TARGET = ModelConfig(model_type="llama", V=12, D=16, L=2, F=32, Q=2, K=1, H=8, max_positions=64)
B, S = 2, 12


def _collapse(alignment, blank):
    out, prev = [], None
    for a in alignment:
        if a != blank and a != prev:
            out.append(a)
        prev = a
    return out


def _brute_force_ctc(log_probs_TK, labels, blank):
    """-log of the summed probability of every frame alignment that collapses to `labels`
    (alignments over the blank and the label symbols only: any other symbol survives collapse)."""
    symbols = sorted(set(labels) | {blank})
    total = 0.0
    for alignment in itertools.product(symbols, repeat=log_probs_TK.shape[0]):
        if _collapse(alignment, blank) == list(labels):
            total += np.exp(sum(log_probs_TK[t, a] for t, a in enumerate(alignment)))
    return -np.log(total)


def test_ctc_windows_is_the_brute_force_sum_over_alignments():
    K, blank = 5, 4
    logits = jax.random.normal(jax.random.key(0), (1, 9, K)) * 2
    labels = jnp.asarray([[1, 1, 2, 0, 3, 3, 1, 2, 0]])  # window 0 holds a repeated label
    ok = jnp.zeros((1, 9), bool).at[0, 0].set(True).at[0, 3].set(True)
    total, count = ctc_windows(logits, labels, ok, blank)
    log_probs = np.asarray(jax.nn.log_softmax(logits[0], axis=-1), np.float64)
    want = sum(
        _brute_force_ctc(log_probs[j : j + CTC_FRAMES], np.asarray(labels[0, j : j + 3]), blank) / 3
        for j in (0, 3)
    )
    assert float(count) == 2
    np.testing.assert_allclose(float(total), want, rtol=1e-4)


def _setup(seed=0, frequent=False):
    target = init_params(TARGET, jax.random.key(seed))
    k = jax.random.split(jax.random.key(seed + 1), 2)
    tokens = jax.random.randint(k[0], (B, S), 1, TARGET.V)
    mask = jnp.arange(S)[None, :] >= jnp.array([[2], [4]])
    hidden = jax.random.normal(k[1], (B, S, TARGET.D))
    ids = jnp.arange(0, TARGET.V, 2, dtype=jnp.int32) if frequent else None
    head = init_ctc_head(TARGET, target, jax.random.key(seed + 2), ids, scale=0.3)
    params = attach(head, target)
    frozen = CTCFrozen(target.embed, params.head_columns, ids, TARGET.V)
    return target, HeadBatch(tokens, mask, hidden), head.replace(head_token_ids=None), frozen


def test_the_ctc_term_scores_the_windows_the_released_code_builds():
    """Every window j whose 3 labels are answer tokens and whose 6 frames lie in the row is
    scored against the target's greedy tokens after h_{j+1}, h_{j+2}, h_{j+3}."""
    target, batch, own, frozen = _setup(3)
    config = draft_config(TARGET)
    _, sums = make_ctc_loss(config, 0.5)(own, frozen, batch)
    params = attach(own, target)
    ctc, n = 0.0, 0
    mask = np.asarray(batch.mask)
    for b in range(B):
        nxt = jnp.concatenate([batch.tokens[b, 1:], jnp.zeros((1,), jnp.int32)])[None]
        empty = init_cache(1, 1, config.K, 1, config.H)
        f, _, _ = frame_features(
            config, params, batch.hidden[b : b + 1], nxt, jnp.arange(S)[None], empty,
            causal_mask(1, S),
        )  # fmt: skip
        log_probs = np.asarray(jax.nn.log_softmax(frame_logits(params, f)[0], axis=-1), np.float64)
        greedy = np.asarray(jnp.argmax(batch.hidden[b] @ frozen.head_columns, axis=-1))
        for j in range(S - CTC_FRAMES + 1):  # the 6 frames inside the row
            if not mask[b, j + 2 : j + 5].all():  # the tokens the 3 labels stand for
                continue
            labels = greedy[j + 1 : j + 4]
            ctc += _brute_force_ctc(log_probs[j : j + CTC_FRAMES], labels, params.blank) / 3
            n += 1
    assert n > 0
    np.testing.assert_allclose(float(sums["ctc"] / sums["count"]), ctc / n, rtol=1e-4)


def test_the_loss_falls_on_a_fixed_batch():
    _, batch, own, frozen = _setup(5, frequent=True)
    loss = make_ctc_loss(draft_config(TARGET), 0.1)
    first, last, _ = fit_fixed_batch(loss, own, frozen, batch, steps=60)
    assert last < 0.6 * first


def test_rollout_frames_are_the_frames_drafted_at_inference_on_the_answer_tokens():
    """Frame d of start t, from the one-call rollout, equals drafting from a cache of the pairs
    j < t one frame at a time (as `draft_chain` does), fed the answer's tokens x_{t+1}, x_{t+2}, ..."""
    target, batch, own, frozen = _setup(7)
    config = draft_config(TARGET)
    params = attach(own, target)
    frames = 3
    cache = init_cache(1, B, config.K, 1, config.H)
    nxt = jnp.concatenate([batch.tokens[:, 1:], jnp.zeros((B, 1), jnp.int32)], axis=1)
    positions = jnp.broadcast_to(jnp.arange(S), (B, S))
    f1, k, v = frame_features(
        config, params, batch.hidden, nxt, positions, cache, causal_mask(B, S)
    )
    rolled = rollout_features(config, params, batch.tokens, f1, k, v, frames)
    assert len(rolled) == frames - 1

    @jax.jit
    def draft_one(row, hidden, token, position):
        f, fk, fv = frame_features(config, params, hidden, token, position, row, causal_mask(1, 1))
        return f, row.append(fk, fv)

    for b, t in itertools.product(range(B), range(S - frames)):
        row = init_cache(1, 1, config.K, S + frames, config.H).append(
            k[:, b : b + 1, :t], v[:, b : b + 1, :t]
        )
        hidden = batch.hidden[b : b + 1, t : t + 1]
        for d in range(1, frames + 1):
            token = batch.tokens[b : b + 1, t + d : t + d + 1]
            f, row = draft_one(row, hidden, token, jnp.full((1, 1), t + d - 1))
            hidden = f
            want = f1 if d == 1 else rolled[d - 2]
            np.testing.assert_allclose(f[0, 0], want[b, t], rtol=1e-4, atol=1e-5)


def test_the_rollout_loss_falls_and_scores_every_frame():
    _, batch, own, frozen = _setup(5, frequent=True)
    loss = make_ctc_loss(draft_config(TARGET), 0.01, rollout_frames=3)
    first, last, sums = fit_fixed_batch(loss, own, frozen, batch, steps=60)
    assert last < 0.6 * first
    assert {"step_top1_1", "step_top1_2"} <= set(sums)
    plain = make_ctc_loss(draft_config(TARGET), 0.01)(own, frozen, batch)[1]
    assert "step_top1_1" not in plain


def test_a_trained_drafter_saves_loads_and_drafts_better(tiny_hidden_data, tmp_path):
    """make_data --hidden -> train_ctc_drafter -> final/ -> load_head -> CTC decode: greedy equals
    vanilla, and the trained module's drafts are accepted more often than its start's."""
    import json

    from configs.ctc_draft import tiny_ctc
    from models.head_file import CONFIG_FILE, load_head
    from specjax.drafters.ctc import CTCDrafter
    from specjax.engine import generate
    from specjax.static_tree import tree_from_paths
    from train_heads.train import train_ctc_drafter

    target, data_dir = tiny_hidden_data
    c = target.config
    cfg = dataclasses.replace(
        tiny_ctc, data_dir=str(data_dir), out_dir=str(tmp_path / "run"), steps=80
    )
    result = train_ctc_drafter(cfg, target=target, progress=False)
    head = load_head(result.final_dir, c, target.params, kind="ctc")
    extra = json.loads((result.final_dir / CONFIG_FILE).read_text())["extra"]
    accuracy = np.array(extra["rank_accuracy"])
    assert accuracy.shape == (3, 4) and accuracy[0, 0] > accuracy[0, 3]
    assert extra["ctc_weight"] == cfg.ctc_weight
    rng = np.random.default_rng(1)
    held_out = [[int(x) for x in rng.integers(1, c.V, 6)] for _ in range(4)]
    vanilla = generate(c, target.params, held_out, max_new_tokens=24)
    drafter = CTCDrafter(draft_config(c), tree_from_paths([(0,), (1,), (0, 0), (0, 0, 0)]))
    start = init_ctc_head(c, target.params, jax.random.key(cfg.seed), head.head_token_ids)
    taus = {}
    for name, h in (("trained", head), ("untrained", start)):
        p = attach(h, target.params)
        r = generate(c, target.params, held_out, max_new_tokens=24, drafter=drafter, draft_params=p)
        assert r.tokens == vanilla.tokens
        taus[name] = r.tau
    assert taus["trained"] > taus["untrained"] and taus["trained"] > 1.5


def test_a_stopped_ctc_run_resumes_bit_for_bit(tiny_hidden_data, tmp_path):
    from configs.ctc_draft import tiny_ctc
    from tests.conftest import assert_head_run_resumes_bit_for_bit
    from train_heads.train import train_ctc_drafter

    target, data_dir = tiny_hidden_data
    cfg = dataclasses.replace(tiny_ctc, data_dir=str(data_dir))
    assert_head_run_resumes_bit_for_bit(train_ctc_drafter, cfg, target, tmp_path)


def test_the_matched_token_init_feeds_the_token_at_the_hidden_state_scale():
    from configs.ctc_draft import CTCTrain
    from models.errors import SpecjaxError

    config = dataclasses.replace(TARGET, V=64, D=64, F=64)
    target = init_params(config, jax.random.key(0))
    target = target.replace(final_norm=jnp.full((config.D,), 1.8), embed=target.embed * 0.1)

    def token_rms(head):
        part = target.embed @ head.fc_w[: config.D]  # [V, D]: each token's share of fc's output
        return float(jnp.sqrt(jnp.mean(part**2)))

    small = init_ctc_head(config, target, jax.random.key(1))
    matched = init_ctc_head(config, target, jax.random.key(1), matched_token=True)
    assert abs(token_rms(matched) / 1.8 - 1) < 0.15  # the final norm's scale, not the embedding's
    assert token_rms(small) < 0.1 * token_rms(matched)
    np.testing.assert_array_equal(matched.fc_w[config.D :], small.fc_w[config.D :])  # identity
    with np.testing.assert_raises(SpecjaxError):
        CTCTrain(token_init="large").validate()
