"""ReDrafter head training: the teacher-forced loss equals a position-by-position replay, it
falls on a fixed batch under AdamW (tiny random target features), a trained head drafts better
than an untrained one, and a stopped run resumes bit for bit."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from models.recurrent_head import head_logits, init_head, rnn_step
from tests.conftest import fit_fixed_batch
from train_heads.head_batch import HeadBatch
from train_heads.recurrent_head import HeadFrozen, make_head_loss

D, V, B, S, L = 8, 24, 2, 12, 3


def _batch(seed=0):
    k = jax.random.split(jax.random.key(seed), 3)
    tokens = jax.random.randint(k[0], (B, S), 1, V)
    mask = jnp.arange(S)[None, :] >= jnp.array([[3], [5]])  # answers start at 3 and 5
    hidden = jax.random.normal(k[1], (B, S, D))
    return HeadBatch(tokens=tokens, mask=mask, hidden=hidden), jax.random.normal(k[2], (V, D))


def test_the_loss_is_the_replayed_cross_entropy_of_every_step():
    batch, embed = _batch()
    head = init_head(jax.random.key(1), D, V)
    total, sums = make_head_loss(L)(head, HeadFrozen(embed=embed), batch)
    tokens, mask = np.asarray(batch.tokens), np.asarray(batch.mask)
    expected = []
    for i in range(L):
        ce, n = 0.0, 0
        for b in range(B):
            for t in range(S):
                if t + 2 + i >= S or not mask[b, t + 2 + i]:
                    continue
                state = jnp.zeros((D,))
                for j in range(i + 1):  # the RNN fed x_{t+1} .. x_{t+1+i}
                    state = rnn_step(head, state, embed[tokens[b, t + 1 + j]])
                logp = jax.nn.log_softmax(head_logits(head, batch.hidden[b, t], state))
                ce -= float(logp[tokens[b, t + 2 + i]])
                n += 1
        assert float(sums[f"count_{i}"]) == n
        np.testing.assert_allclose(float(sums[f"loss_{i}"]), ce, rtol=1e-4)
        expected.append(ce / n)
    np.testing.assert_allclose(float(total), sum(expected), rtol=1e-4)


def test_cropping_rows_to_their_answers_keeps_every_loss_term():
    """answer_windows drops the prompt before each answer (less L + 1 tokens) and the padding
    after it: the summed CE, counts and top-1 of every step are unchanged."""
    from train_heads.head_batch import answer_windows

    batch, embed = _batch(4)
    mask = np.zeros((B, S), bool)
    mask[0, 6:9], mask[1, 8:12] = True, True  # answers in the middle and at the end
    batch = batch.replace(mask=jnp.asarray(mask))
    head = init_head(jax.random.key(2), D, V)
    cropped = answer_windows(batch, L, multiple=2)
    assert cropped.tokens.shape == (B, 8)  # row 1: L + 1 = 4 lead tokens + 4 answer tokens
    _, full_sums = make_head_loss(L)(head, HeadFrozen(embed=embed), batch)
    _, crop_sums = make_head_loss(L)(
        head, HeadFrozen(embed=embed), jax.tree.map(jnp.asarray, cropped)
    )
    for k in full_sums:
        np.testing.assert_allclose(float(crop_sums[k]), float(full_sums[k]), rtol=1e-5)


def test_the_loss_falls_on_a_fixed_batch():
    batch, embed = _batch(2)
    frozen = HeadFrozen(embed=embed, head_token_ids=jnp.arange(0, V, 2, dtype=jnp.int32))
    own = init_head(jax.random.key(3), D, V, head_token_ids=frozen.head_token_ids)
    own = own.replace(head_token_ids=None)
    first, last, sums = fit_fixed_batch(make_head_loss(L), own, frozen, batch, steps=150)
    assert last < 0.5 * first
    assert float(sums["top1_0"]) > 0.5 * float(sums["count_0"])


def test_fit_trains_the_head_on_make_data_output_with_hidden_states(tmp_path):
    """The whole path: make_data --hidden on a tiny random target, load_dataset + load_hidden,
    then `train_heads.train.fit` (AdamW, checkpoints, eval) with the head's loss."""
    from configs.draft_lm import TINY_TARGET
    from configs.train_loop import TrainLoop
    from models.loading import Model
    from models.transformer import init_params
    from train_heads.data import load_dataset, load_hidden, make_data
    from train_heads.train import fit

    c = TINY_TARGET
    target = Model(c, init_params(c, jax.random.key(0)), None, "tiny")
    prompts = [[int(x) for x in np.random.default_rng(i).integers(1, c.V, 6)] for i in range(12)]
    data_dir = tmp_path / "data"
    make_data(
        target, prompts, data_dir, hidden=True, max_new_tokens=16, batch_size=4, shard_size=4,
        progress=False,
    )  # fmt: skip
    tokens, mask = load_dataset(data_dir, seq_len=24)
    hidden = load_hidden(data_dir, seq_len=24)
    assert hidden.shape == (12, 24, c.D) and hidden.dtype == np.float16
    frozen = HeadFrozen(embed=target.params.embed)
    own = init_head(jax.random.key(1), c.D, c.V)
    hp = TrainLoop(
        data_dir=str(data_dir), out_dir=str(tmp_path / "run"), steps=120, batch_size=4,
        seq_len=24, lr=1e-2, warmup_steps=5, eval_every=120, log_every=20, save_every=60,
        eval_examples=4,
    )  # fmt: skip
    rows = HeadBatch(tokens=tokens, mask=mask, hidden=hidden)
    before = make_head_loss(L)(own, frozen, jax.tree.map(jnp.asarray, rows))[0]
    state = fit(make_head_loss(L), own, frozen, rows, rows, hp, progress=False)
    after, sums = make_head_loss(L)(state.params, frozen, jax.tree.map(jnp.asarray, rows))
    assert float(after) < 0.7 * float(before)
    assert float(sums["top1_0"]) / float(sums["count_0"]) > 0.3


def test_a_trained_head_is_saved_loads_and_drafts_better_than_an_untrained_one(
    tiny_hidden_data, tmp_path
):
    """make_data --hidden -> train_recurrent_head -> final/ -> load_head -> ReDrafter decode:
    greedy equals vanilla, and the trained head's drafts are accepted more often."""
    import dataclasses

    from configs.recurrent_head import tiny_redrafter
    from models.head_file import load_head
    from specjax.drafters.redrafter import ReDrafterDrafter, ReDrafterParams
    from specjax.engine import generate
    from train_heads.train import train_recurrent_head

    target, data_dir = tiny_hidden_data
    c = target.config
    rng = np.random.default_rng(1)
    cfg = dataclasses.replace(
        tiny_redrafter, data_dir=str(data_dir), out_dir=str(tmp_path / "run"), steps=80
    )
    result = train_recurrent_head(cfg, target=target, progress=False)
    head = load_head(result.final_dir, c, target.params)
    fresh = init_head(jax.random.key(5), c.D, c.V)
    held_out = [[int(x) for x in rng.integers(1, c.V, 6)] for _ in range(4)]
    vanilla = generate(c, target.params, held_out, max_new_tokens=24)
    drafter = ReDrafterDrafter(width=2, length=3)
    rates = {}
    for name, h in (("trained", head), ("untrained", fresh)):
        r = generate(
            c, target.params, held_out, max_new_tokens=24, drafter=drafter,
            draft_params=ReDrafterParams(head=h, embed=target.params.embed),
        )  # fmt: skip
        assert r.tokens == vanilla.tokens
        rates[name] = r.tau
    assert rates["trained"] > rates["untrained"] and rates["trained"] > 1.5


def test_a_stopped_head_run_resumes_bit_for_bit(tiny_hidden_data, tmp_path):
    from configs.recurrent_head import tiny_redrafter
    from tests.conftest import assert_head_run_resumes_bit_for_bit
    from train_heads.train import train_recurrent_head

    target, data_dir = tiny_hidden_data
    cfg = dataclasses.replace(tiny_redrafter, data_dir=str(data_dir))
    assert_head_run_resumes_bit_for_bit(train_recurrent_head, cfg, target, tmp_path)


def _with_greedy_topk(batch: HeadBatch, K: int = 3, seed: int = 7) -> HeadBatch:
    """Top-k logits as greedy data has them: row r's best token is tokens[r + 1] (by a margin
    that makes its softmax one-hot), the other K - 1 random and far below."""
    B_, S_ = batch.tokens.shape
    others = jax.random.randint(jax.random.key(seed), (B_, S_, K - 1), 1, V)
    nxt = jnp.concatenate([batch.tokens[:, 1:], batch.tokens[:, -1:]], axis=1)
    ids = jnp.concatenate([nxt[..., None], others], axis=-1)
    logits = jnp.concatenate([jnp.full((B_, S_, 1), 60.0), jnp.zeros((B_, S_, K - 1))], -1)
    return batch.replace(topk_ids=ids, topk_logits=logits)


def test_the_kl_term_reads_the_targets_distribution_of_each_steps_own_token():
    """Against a one-hot top-k on the true next token, every step's soft CE equals its hard CE;
    a top-k one row off would not. The term enters the objective times kl_weight."""
    batch, embed = _batch(5)
    batch = _with_greedy_topk(batch)
    head = init_head(jax.random.key(6), D, V)
    plain, _ = make_head_loss(L)(head, HeadFrozen(embed=embed), batch)
    total, sums = make_head_loss(L, kl_weight=0.5)(head, HeadFrozen(embed=embed), batch)
    for i in range(L):
        np.testing.assert_allclose(float(sums[f"soft_ce_{i}"]), float(sums[f"loss_{i}"]), 1e-4)
    np.testing.assert_allclose(float(total), 1.5 * float(plain), rtol=1e-4)
    off_by_one = batch.replace(topk_ids=jnp.roll(batch.topk_ids, 1, axis=1))
    _, sums = make_head_loss(L, kl_weight=0.5)(head, HeadFrozen(embed=embed), off_by_one)
    assert abs(float(sums["soft_ce_0"]) - float(sums["loss_0"])) > 1.0


def test_soft_targets_outside_a_frequent_token_head_are_renormalised_away():
    from train_heads.head_batch import label_columns, soft_cross_entropy

    column = label_columns(jnp.array([3, 5], jnp.int32), 8)  # the head drafts tokens 3 and 5
    logits = jnp.array([[[0.2, -0.4]]])
    weight = jnp.ones((1, 1))
    # The target splits 0.5 / 0.5 between token 5 and token 6, which the head lacks: all on 5.
    got = soft_cross_entropy(logits, jnp.array([[[5, 6]]]), jnp.zeros((1, 1, 2)), weight, column)
    np.testing.assert_allclose(float(got), -float(jax.nn.log_softmax(logits[0, 0])[1]), 1e-6)


def test_training_with_the_kl_term_needs_and_reads_top_k_data(tiny_hidden_data, tmp_path):
    """--kl_weight on data without top-k logits is one line naming the fix; with them added by
    `copy_data --topk` (no answering again) the head trains and its loss falls."""
    import pytest

    from configs.recurrent_head import tiny_redrafter
    from models.errors import SpecjaxError
    from train_heads.data import copy_data
    from train_heads.train import train_recurrent_head

    target, data_dir = tiny_hidden_data
    cfg = dataclasses.replace(
        tiny_redrafter, data_dir=str(data_dir), out_dir=str(tmp_path / "run"), kl_weight=0.5
    )
    with pytest.raises(SpecjaxError, match="--topk"):
        train_recurrent_head(cfg, target=target, progress=False)
    soft_dir = tmp_path / "soft"
    copy_data(target, data_dir, soft_dir, hidden=True, topk=4, progress=False)
    cfg = dataclasses.replace(cfg, data_dir=str(soft_dir), steps=40, eval_every=10)
    result = train_recurrent_head(cfg, target=target, progress=False)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    evals = [m for m in map(json.loads, lines) if m["split"] == "eval"]
    assert len(evals) >= 2 and evals[-1]["soft_ce_0"] < 0.9 * evals[0]["soft_ce_0"]
    assert result.final_dir is not None
