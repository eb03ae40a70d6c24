"""Medusa head training: the loss is the decayed sum of each head's replayed cross-entropy against
token t+2+k, it falls on a fixed batch, and the rank accuracies the tree builder reads are the
brute-force counts (tiny random features)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from models.medusa_heads import MedusaHeadsParams, heads_logits
from tests.conftest import fit_fixed_batch
from train_heads.head_batch import HeadBatch
from train_heads.medusa_heads import DECAY, MedusaFrozen, make_medusa_loss, rank_accuracy

D, V, B, S, K = 8, 24, 2, 12, 3


def _batch(seed=0):
    k = jax.random.split(jax.random.key(seed), 2)
    tokens = jax.random.randint(k[0], (B, S), 1, V)
    mask = jnp.arange(S)[None, :] >= jnp.array([[3], [5]])
    return HeadBatch(tokens=tokens, mask=mask, hidden=jax.random.normal(k[1], (B, S, D)))


def _heads(seed=1, cols=V):
    k = jax.random.split(jax.random.key(seed), 3)
    return MedusaHeadsParams(
        res_w=0.3 * jax.random.normal(k[0], (K, D, D)),
        res_b=0.1 * jax.random.normal(k[1], (K, D)),
        lm_head=jax.random.normal(k[2], (K, D, cols)),
    )


def test_the_loss_is_the_decayed_sum_of_each_heads_replayed_cross_entropy():
    batch, heads = _batch(), _heads()
    total, sums = make_medusa_loss(K)(heads, MedusaFrozen(None, V), batch)
    tokens, mask = np.asarray(batch.tokens), np.asarray(batch.mask)
    expected = 0.0
    for k in range(K):
        ce, n = 0.0, 0
        for b in range(B):
            for t in range(S):
                if t + 2 + k >= S or not mask[b, t + 2 + k]:
                    continue
                logp = jax.nn.log_softmax(heads_logits(heads, batch.hidden[b, t])[k])
                ce -= float(logp[tokens[b, t + 2 + k]])
                n += 1
        assert float(sums[f"count_{k}"]) == n
        np.testing.assert_allclose(float(sums[f"loss_{k}"]), ce, rtol=1e-4)
        expected += DECAY**k * ce / n
    np.testing.assert_allclose(float(total), expected, rtol=1e-4)


def test_the_loss_falls_on_a_fixed_batch():
    batch = _batch(2)
    ids = jnp.arange(0, V, 2, dtype=jnp.int32)
    frozen, own = MedusaFrozen(ids, V), _heads(3, cols=ids.shape[0])
    first, last, _ = fit_fixed_batch(make_medusa_loss(K), own, frozen, batch, steps=80)
    assert last < 0.6 * first


def test_rank_accuracy_counts_each_heads_ranked_hits():
    batch, heads = _batch(4), _heads(5)
    acc = rank_accuracy(heads, batch, ranks=4)
    tokens, mask = np.asarray(batch.tokens), np.asarray(batch.mask)
    for k in range(K):
        hits, n = np.zeros(4), 0
        for b in range(B):
            for t in range(S - 2 - k):
                if not mask[b, t + 2 + k]:
                    continue
                order = np.argsort(-np.asarray(heads_logits(heads, batch.hidden[b, t])[k]))
                hits += order[:4] == tokens[b, t + 2 + k]
                n += 1
        np.testing.assert_allclose(acc[k], hits / n)
    assert np.all(acc.sum(axis=1) <= 1.0)


def test_trained_heads_are_saved_with_their_accuracies_and_draft_better(tiny_hidden_data, tmp_path):
    """make_data --hidden -> train_medusa_heads -> final/ -> load_head -> Medusa decode: greedy
    equals vanilla, and the trained heads' drafts are accepted more often than the zero start's
    (which guesses the root's own distribution)."""
    import dataclasses
    import json

    from configs.medusa_heads import tiny_medusa
    from models.head_file import CONFIG_FILE, load_head
    from models.medusa_heads import init_heads
    from specjax.drafters.medusa import MedusaDrafter
    from specjax.engine import generate
    from specjax.static_tree import tree_from_paths
    from train_heads.train import train_medusa_heads

    target, data_dir = tiny_hidden_data
    c = target.config
    cfg = dataclasses.replace(
        tiny_medusa, data_dir=str(data_dir), out_dir=str(tmp_path / "run"), steps=80
    )
    result = train_medusa_heads(cfg, target=target, progress=False)
    heads = load_head(result.final_dir, c, target.params, kind="medusa")
    accuracy = np.array(
        json.loads((result.final_dir / CONFIG_FILE).read_text())["extra"]["rank_accuracy"]
    )
    assert accuracy.shape == (3, 4) and accuracy[0, 0] > accuracy[0, 3]
    rng = np.random.default_rng(1)
    held_out = [[int(x) for x in rng.integers(1, c.V, 6)] for _ in range(4)]
    vanilla = generate(c, target.params, held_out, max_new_tokens=24)
    drafter = MedusaDrafter(tree_from_paths([(0,), (1,), (0, 0), (0, 0, 0)]))
    taus = {}
    for name, h in (("trained", heads), ("untrained", init_heads(target.params, 3))):
        r = generate(c, target.params, held_out, max_new_tokens=24, drafter=drafter, draft_params=h)
        assert r.tokens == vanilla.tokens
        taus[name] = r.tau
    assert taus["trained"] > taus["untrained"] and taus["trained"] > 1.5


def test_a_stopped_medusa_run_resumes_bit_for_bit(tiny_hidden_data, tmp_path):
    from configs.medusa_heads import tiny_medusa
    from tests.conftest import assert_head_run_resumes_bit_for_bit
    from train_heads.train import train_medusa_heads

    target, data_dir = tiny_hidden_data
    cfg = dataclasses.replace(tiny_medusa, data_dir=str(data_dir))
    assert_head_run_resumes_bit_for_bit(train_medusa_heads, cfg, target, tmp_path)
