"""--gamma=auto: the planner's arithmetic, the engine's accepted-length counts it reads, and the
measure-once-then-cache path end to end on a tiny model."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from models.config import ModelConfig
from models.transformer import init_params
from specjax import block_size, verify_cost
from specjax.block_size import auto_gamma, expected_tau, plan_gamma
from specjax.engine import generate
from specjax.methods import make_drafter

TINY = ModelConfig(model_type="llama", V=64, D=32, L=2, Q=4, K=2, H=8, F=48, max_positions=512)


def test_expected_tau_sums_the_chances_that_every_draft_so_far_survives():
    assert expected_tau([0.5, 0.5, 0.5], 0) == 1.0
    assert expected_tau([0.5, 0.5, 0.5], 2) == pytest.approx(1 + 0.5 + 0.25)
    assert expected_tau([1.0] * 4, 4) == 5.0


def test_the_plan_drafts_long_where_verifying_is_flat_and_short_where_it_climbs():
    acceptance = [0.8] * 8
    draft = {1: 1.0, 2: 1.2}  # a draft forward costs 1/20 of the target's
    flat = {T: 20.0 for T in range(1, 10)}
    steep = {T: 20.0 * (1 + 0.4 * (T - 1)) for T in range(1, 10)}
    long_plan, short_plan = (
        plan_gamma(acceptance, flat, draft),
        plan_gamma(acceptance, steep, draft),
    )
    assert long_plan.gamma == 8 and short_plan.gamma < 4
    g = short_plan.gamma
    step = steep[g + 1] + draft[2] + (g - 1) * draft[1]
    assert short_plan.speedup[g] == pytest.approx(expected_tau(acceptance, g) * 20.0 / step)
    assert all(short_plan.speedup[g] >= s for s in short_plan.speedup.values())
    assert f"chose {g}" in short_plan.describe()


def test_accepted_length_counts_add_up_to_the_engines_totals():
    params = init_params(TINY, jax.random.key(0))
    prompts = [[3, 5, 7, 9, 11], [2, 4]]
    drafter, dparams = make_drafter("sd", TINY, params, draft="self:1", gamma=3)
    r = generate(TINY, params, prompts, max_new_tokens=40, drafter=drafter, draft_params=dparams)
    counts = np.asarray(r.accept_lengths)  # [B, gamma + 1]
    assert counts.shape == (2, 4)
    assert (counts.sum(axis=1) == np.asarray(r.target_calls) - 1).all()  # every step but prefill
    assert (counts @ np.arange(4) == np.asarray(r.accepted)).all()
    # The target as its own draft: every draft survives, at every depth.
    same, same_params = make_drafter("sd", TINY, params, draft=_Target(TINY, params), gamma=3)
    full = generate(
        TINY, params, prompts, max_new_tokens=40, drafter=same, draft_params=same_params
    )
    assert full.acceptance_by_depth == [1.0, 1.0, 1.0]


class _Target:
    """A loaded `Model`'s shape, as `make_drafter(draft=...)` accepts one."""

    def __init__(self, config, params):
        self.config, self.params, self.source = config, params, "the target itself"


class _CharTokenizer:
    """Bytes as token ids (mod V): enough text-to-ids for a tiny random model's calibration."""

    chat_template = None

    def __call__(self, text):
        return {"input_ids": [1 + b % (TINY.V - 1) for b in text.encode()]}


def test_auto_gamma_measures_once_caches_and_remeasures_on_request(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECJAX_CACHE", str(tmp_path))
    monkeypatch.setattr(block_size, "CALIBRATION_TOKENS", 24)
    params = init_params(TINY, jax.random.key(1))
    _, draft_params = make_drafter("sd", TINY, params, draft="self:1", gamma=2)
    draft_config = make_drafter("sd", TINY, params, draft="self:1", gamma=2)[0].config
    plan = auto_gamma(TINY, params, draft_config, draft_params, _CharTokenizer(), max_gamma=3)
    assert 1 <= plan.gamma <= 3 and len(plan.acceptance_by_depth) == 3
    assert len(list((tmp_path / "verify_cost").glob("*.json"))) == 2
    assert len(list((tmp_path / "acceptance").glob("*.json"))) == 1

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again although this machine's numbers are cached")

    monkeypatch.setattr(verify_cost, "verify_cost_curve", no_measuring)
    monkeypatch.setattr("specjax.engine.generate", no_measuring)
    again = auto_gamma(TINY, params, draft_config, draft_params, _CharTokenizer(), max_gamma=3)
    assert again == plan
    with pytest.raises(AssertionError, match="measured again"):
        auto_gamma(TINY, params, draft_config, draft_params, _CharTokenizer(), True, max_gamma=3)


def test_gamma_auto_builds_an_sd_drafter_of_the_planned_length(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECJAX_CACHE", str(tmp_path))
    monkeypatch.setattr(block_size, "CALIBRATION_TOKENS", 24)
    monkeypatch.setattr(block_size, "MAX_GAMMA", 3)
    params = init_params(TINY, jax.random.key(2))
    drafter, _ = make_drafter(
        "sd", TINY, params, draft="self:1", gamma="auto", tokenizer=_CharTokenizer()
    )
    assert 1 <= drafter.gamma <= 3
