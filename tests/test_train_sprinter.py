"""SPRINTER verifier training: the labels are the paper's rule on hand-made p and q, the loss
falls, a trained verifier saves with its draft's fingerprint, loads through the method registry
and decodes exactly (and, under the paper's rule, calls the target less than sd does), and a
stopped run resumes bit for bit."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from train_heads.sprinter import expected_label, greedy_label, kept_for_sure, labels_at


def test_labels_are_the_rule_on_hand_made_p_and_q():
    q = jnp.array([0.5, 0.3, 0.2, 0.0])
    p = jnp.array([0.4, 0.3, 0.1, 0.2])
    assert [float(kept_for_sure(q, p, x)) for x in range(3)] == [0.0, 1.0, 0.0]
    # The expectation over x ~ q: only x = 1 (q = p) is kept for sure, with q(1) = 0.3.
    np.testing.assert_allclose(float(expected_label(q, p)), 0.3)
    draws = jax.random.choice(jax.random.key(0), 4, (20_000,), p=q)
    sampled = np.mean([float(kept_for_sure(q, p, int(x))) for x in draws[:2000]])
    assert abs(sampled - 0.3) < 0.04
    # Temperature 0: one-hot q and p, so "kept for sure" is "the same argmax".
    logits_q = jnp.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    logits_p = jnp.array([[5.0, 0.0, 0.0], [4.0, 0.0, 1.0]])
    assert greedy_label(logits_q, logits_p).tolist() == [1.0, 0.0]
    key = jax.random.key(0)
    cands, both = labels_at(logits_q, logits_p, (0.0, 1.0), key, with_token=False)
    assert both.shape == (2, 2) and both[:, 0].tolist() == [1.0, 0.0]
    assert cands[:, 0].tolist() == [0, 1]  # the draft's argmax at temperature 0
    qs, ps = jax.nn.softmax(logits_q, -1), jax.nn.softmax(logits_p, -1)
    np.testing.assert_allclose(both[:, 1], expected_label(qs, ps), rtol=1e-6)
    # The variant that reads the candidate is labelled by the rule on its own draw.
    cands, drawn = labels_at(logits_q, logits_p, (0.0, 1.0), key, with_token=True)
    for n in range(2):
        x = int(cands[n, 1])
        assert float(drawn[n, 1]) == float(kept_for_sure(qs[n], ps[n], x))


def test_a_trained_verifier_saves_loads_and_decodes(tiny_hidden_data, tmp_path):
    """make_data --hidden -> train_sprinter_verifier -> final/ -> make_drafter("sprinter"):
    the held-out loss fell from log 2, the config records the draft, the temperatures and the
    held-out false-positive rate, the exact mode equals vanilla greedy, and the paper's rule
    needs fewer target calls per token than the same draft in sd with gamma 1."""
    from configs.sprinter import tiny_sprinter
    from models.head_file import CONFIG_FILE
    from specjax.acceptance import ExactAcceptance, LastTokenAcceptance
    from specjax.engine import generate
    from specjax.methods import make_drafter
    from train_heads.train import METRICS_FILE, train_sprinter_verifier

    target, data_dir = tiny_hidden_data
    c = target.config
    cfg = dataclasses.replace(tiny_sprinter, data_dir=str(data_dir), out_dir=str(tmp_path / "r"))
    result = train_sprinter_verifier(cfg, target=target, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "r" / METRICS_FILE).read_text().splitlines()]
    evals = [x for x in lines if x["split"] == "eval"]
    assert evals[-1]["loss"] < 0.95 * np.log(2)
    extra = json.loads((result.final_dir / CONFIG_FILE).read_text())["extra"]
    assert extra["temperatures"] == [0.0, 0.7] and extra["draft_fingerprint"]["L"] == 1
    assert 0 <= extra["held_out"]["0.0"]["false_positive_rate"] <= 1
    for report in extra["held_out"].values():  # the curve --threshold moves along
        curve = report["by_threshold"]
        assert np.isclose(curve["0.5"]["pass_rate"], report["pass_rate"])
        assert np.isclose(curve["0.5"]["false_positive_rate"], report["false_positive_rate"])
        passes = [curve[str(t)]["pass_rate"] for t in (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)]
        assert passes == sorted(passes, reverse=True) and passes[0] > passes[-1]
    best = max(np.mean([e["acc_0"], e["acc_1"]]) for e in evals)  # the best held-out step kept
    assert np.isclose(extra["mean_accuracy"], best)
    rng = np.random.default_rng(1)
    held_out = [[int(x) for x in rng.integers(1, c.V, 6)] for _ in range(4)]
    vanilla = generate(c, target.params, held_out, max_new_tokens=24)
    drafter, dparams = make_drafter(
        "sprinter", c, target.params, draft="self:1", head=str(result.final_dir), max_draft=6
    )
    kw = dict(max_new_tokens=24, drafter=drafter, draft_params=dparams)
    exact = generate(c, target.params, held_out, acceptance=ExactAcceptance(), **kw)
    assert exact.tokens == vanilla.tokens
    paper = generate(c, target.params, held_out, acceptance=LastTokenAcceptance(), **kw)
    sd, sd_params = make_drafter("sd", c, target.params, draft="self:1", gamma=1)
    ref = generate(
        c, target.params, held_out, max_new_tokens=24, drafter=sd, draft_params=sd_params
    )
    assert paper.tau > ref.tau


def test_a_stopped_verifier_run_resumes_bit_for_bit(tiny_hidden_data, tmp_path):
    """The variant that reads the candidate's embedding (the frozen input of the loss)."""
    from configs.sprinter import tiny_sprinter
    from tests.conftest import assert_head_run_resumes_bit_for_bit
    from train_heads.train import train_sprinter_verifier

    target, data_dir = tiny_hidden_data
    cfg = dataclasses.replace(tiny_sprinter, data_dir=str(data_dir), with_token=True)
    assert_head_run_resumes_bit_for_bit(train_sprinter_verifier, cfg, target, tmp_path)
