"""What the auto planners read from this machine: the target's verify cost and the CTC module's
cost per depth, each measured once and cached (the target's cache is also checked through
`auto_gamma` in test_block_size)."""

from __future__ import annotations

import jax
import pytest

from models.config import ModelConfig
from models.ctc_draft import attach, draft_config, init_ctc_head
from models.transformer import init_params
from specjax import verify_cost

TARGET = ModelConfig(model_type="llama", V=64, D=32, L=2, F=64, Q=4, K=2, H=8, max_positions=256)


def test_median_ms_times_every_run_in_turns_after_one_warm_call():
    calls = []
    runs = {k: (lambda k=k: calls.append(k)) for k in (1, 2, 3)}
    ms = verify_cost.median_ms(runs, repeats=4)
    assert sorted(ms) == [1, 2, 3] and all(v >= 0 for v in ms.values())
    # one warm call each, then four rounds of 1, 2, 3: never one key's timings back to back
    assert calls == [1, 2, 3] + [1, 2, 3] * 4


def test_the_ctc_chain_cost_is_measured_once_per_machine_and_again_on_request(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("SPECJAX_CACHE", str(tmp_path))
    target = init_params(TARGET, jax.random.key(0))
    params = attach(init_ctc_head(TARGET, target, jax.random.key(1)), target)
    config = draft_config(TARGET)

    ms = verify_cost.cached_chain_ms(config, params, depth=3)
    assert sorted(ms) == [1, 2, 3] and all(v > 0 for v in ms.values())
    assert len(list((tmp_path / "verify_cost").glob("ctc-chain-*.json"))) == 1

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again although this machine's numbers are cached")

    monkeypatch.setattr(verify_cost, "draft_chain_ms", no_measuring)
    assert verify_cost.cached_chain_ms(config, params, depth=3) == ms
    assert verify_cost.cached_chain_ms(config, params, depth=2) == ms  # fewer depths: cached too
    with pytest.raises(AssertionError, match="measured again"):
        verify_cost.cached_chain_ms(config, params, depth=4)  # a deeper chain was never timed
    with pytest.raises(AssertionError, match="measured again"):
        verify_cost.cached_chain_ms(config, params, depth=3, remeasure=True)
