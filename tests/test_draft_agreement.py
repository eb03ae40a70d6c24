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
from train_heads.draft_agreement import agreement_mask, greedy_sd_steps

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


@pytest.mark.parametrize(
    "args,message",
    [
        (["--gamma=0"], "--gamma must be >= 1"),
        (["--max_new_tokens=1"], "--max_new_tokens must be >= 2"),
        (["--prompts=/nonexistent.jsonl"], "prompt file not found"),
        (["stray"], "unexpected argument"),
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
