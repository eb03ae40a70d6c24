"""train_heads.draft_agreement: the greedy-sd steps predicted from a draft's teacher-forced
agreement equal the target calls the engine makes (tiny random models), and the CLI's bad input is
one error line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from models.transformer import init_params
from specjax.engine import generate
from specjax.methods import make_drafter
from tests.test_speculative import PROMPTS, TARGET
from train_heads.draft_agreement import (
    agreement_mask,
    greedy_sd_steps,
    greedy_tree_steps,
    tree_runs,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "agree,gamma,steps",
    [
        ([False] * 9, 4, 9),  # nothing accepted: one token per step
        ([True] * 9, 4, 2),  # 10 tokens: prefill + 5 + 4
        ([True] * 9, 2, 3),
        ([True, True, False, True, False, False], 4, 3),  # 7 tokens: prefill + 3 + 2 + 1
        ([], 4, 0),  # a one-token answer is all prefill
    ],
)
def test_steps_follow_the_leading_runs_of_agreement(agree, gamma, steps):
    assert greedy_sd_steps(np.array(agree, bool), gamma) == steps


@pytest.mark.parametrize("gamma", [1, 4])
def test_predicted_target_calls_equal_the_engines(gamma):
    """self:2 of the tiny target agrees partly; the shipped draft's frequent-token head is checked
    on the real model (tests/test_real_models.py)."""
    target = init_params(TARGET, jax.random.key(0))
    drafter, dparams = make_drafter("sd", TARGET, target, draft="self:2", gamma=gamma)
    answers = generate(TARGET, target, PROMPTS, max_new_tokens=40).tokens
    hits = judged = 0
    for prompt, answer in zip(PROMPTS, answers, strict=True):
        spec = generate(
            TARGET, target, [prompt], max_new_tokens=40, drafter=drafter, draft_params=dparams
        )
        agree = agreement_mask(drafter.config, dparams, prompt, answer)
        assert spec.target_calls[0] == 1 + greedy_sd_steps(agree, gamma)
        hits, judged = hits + agree.sum(), judged + agree.size
    assert 0 < hits < judged  # partial agreement: both accepting and rejecting steps occur


@pytest.mark.parametrize("slots", [0, 4], ids=["full_tree", "packed_into_4_slots"])
def test_predicted_target_calls_of_a_beam_head_equal_the_engines(slots):
    """ReDrafter with a head trained for a few steps on the target's own answers (so that beams
    are sometimes right and sometimes wrong): the steps predicted from teacher-forced trees are
    the engine's target calls, prompt by prompt."""
    import optax

    from models.recurrent_head import init_head
    from models.transformer import sequence_hidden
    from specjax.drafters.redrafter import ReDrafterDrafter, ReDrafterParams
    from train_heads.head_batch import HeadBatch
    from train_heads.recurrent_head import HeadFrozen, make_head_loss

    target = init_params(TARGET, jax.random.key(0))
    answers = generate(TARGET, target, PROMPTS, max_new_tokens=40).tokens
    S = 64
    rows = np.zeros((len(PROMPTS), S), np.int32)
    mask = np.zeros((len(PROMPTS), S), bool)
    for b, (p, a) in enumerate(zip(PROMPTS, answers, strict=True)):
        rows[b, : len(p) + len(a)] = p + a
        mask[b, len(p) : len(p) + len(a)] = True
    batch = HeadBatch(rows, mask, sequence_hidden(TARGET, target, jax.numpy.asarray(rows)))
    frozen, loss = HeadFrozen(embed=target.embed), make_head_loss(3)
    head = init_head(jax.random.key(1), TARGET.D, TARGET.V)
    opt = optax.adam(1e-2)
    opt_state = opt.init(head)
    grad = jax.jit(jax.grad(lambda h: loss(h, frozen, batch)[0]))
    for _ in range(15):
        updates, opt_state = opt.update(grad(head), opt_state)
        head = optax.apply_updates(head, updates)
    drafter = ReDrafterDrafter(width=2, length=3, slots=slots)
    dparams = ReDrafterParams(head=head, embed=target.embed)
    accepted = judged = 0
    for prompt, answer in zip(PROMPTS, answers, strict=True):
        spec = generate(
            TARGET, target, [prompt], max_new_tokens=40, drafter=drafter, draft_params=dparams
        )
        assert spec.tokens[0] == answer
        runs = tree_runs(drafter, dparams, TARGET, target, prompt, answer)
        assert spec.target_calls[0] == 1 + greedy_tree_steps(runs)
        accepted, judged = accepted + spec.accepted[0], judged + spec.target_calls[0] - 1
    assert 0 < accepted and judged > len(PROMPTS)  # some steps accept, and not all at once


@pytest.mark.parametrize(
    "args,message",
    [
        (["--gamma=0"], "--gamma must be >= 1"),
        (["--max_new_tokens=1"], "--max_new_tokens must be >= 2"),
        (["--prompts=/nonexistent.jsonl"], "prompt file not found"),
        (["stray"], "unexpected argument"),
        (["--method=redrafter", "--beam_width=0"], "must be >= 1"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(args, message):
    r = subprocess.run(
        [sys.executable, "-m", "train_heads.draft_agreement", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]
