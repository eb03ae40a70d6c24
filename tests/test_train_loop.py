"""train_heads/train.py and checkpoint.py: the loss goes down, a stopped-and-resumed run equals an
unstopped one bit for bit, and a damaged checkpoint is one SpecjaxError line (tiny random draft
on random tokens; CPU, seconds)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from configs.draft_lm import TINY_TARGET
from configs.train_loop import TrainLoop
from models import draft_lm as model_lm
from models.errors import SpecjaxError
from models.transformer import init_params
from train_heads import draft_lm
from train_heads.train import (
    CHECKPOINT_DIR,
    METRICS_FILE,
    TrainState,
    batch_indices,
    fit,
    make_optimizer,
    train_step,
)

N, S = 24, 16


@pytest.fixture(scope="module")
def setup():
    target = init_params(TINY_TARGET, jax.random.key(0))
    config, params = model_lm.init_draft(TINY_TARGET, target, 1, jax.random.key(1))
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, TINY_TARGET.V, size=(N, S)).astype(np.int32)
    mask = np.zeros((N, S), bool)
    mask[:, 4:] = True
    data = draft_lm.Batch(tokens, mask)
    loss = draft_lm.make_loss(config)
    return loss, model_lm.trainable(params), model_lm.shared(params), data


def _hp(tmp_path: Path, **kw) -> TrainLoop:
    base = dict(
        out_dir=str(tmp_path),
        steps=6,
        batch_size=4,
        seq_len=S,
        lr=1e-2,
        warmup_steps=1,
        eval_every=3,
        save_every=3,
        log_every=1,
        eval_examples=4,
    )
    return TrainLoop(**{**base, **kw})


def _fit(setup, hp, **kw):
    loss, own, frozen, data = setup
    train = jax.tree.map(lambda a: a[4:], data)
    held = jax.tree.map(lambda a: a[:4], data)
    return fit(loss, own, frozen, train, held, hp, progress=False, **kw)


def _leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


def test_loss_goes_down_on_a_fixed_batch(setup, tmp_path):
    loss, own, frozen, data = setup
    hp = _hp(tmp_path, steps=30, warmup_steps=3)
    optimizer, schedule = make_optimizer(hp)
    state = TrainState(step=np.int32(0), params=own, opt_state=optimizer.init(own))
    step = jax.jit(lambda s, b: train_step(loss, optimizer, schedule, frozen, s, b))
    batch = jax.tree.map(lambda a: a[:8], data)
    losses = []
    for _ in range(30):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0], losses


def test_batch_order_is_a_seeded_permutation_per_epoch():
    rows = np.concatenate([batch_indices(3, k, 10, 4) for k in range(5)])
    assert sorted(rows[:10]) == list(range(10)) and sorted(rows[10:20]) == list(range(10))
    np.testing.assert_array_equal(batch_indices(3, 4, 10, 4), batch_indices(3, 4, 10, 4))
    assert not np.array_equal(batch_indices(3, 0, 10, 4), batch_indices(4, 0, 10, 4))


def test_resume_equals_an_unstopped_run_bit_for_bit(setup, tmp_path):
    unstopped = _fit(setup, _hp(tmp_path / "a"))
    stopped = _fit(setup, _hp(tmp_path / "b"), stop_after=3)
    assert int(stopped.step) == 3
    resumed = _fit(setup, _hp(tmp_path / "b"), resume=True)
    assert int(resumed.step) == int(unstopped.step) == 6
    assert _leaves_equal(resumed.params, unstopped.params)
    assert _leaves_equal(resumed.opt_state, unstopped.opt_state)
    assert not _leaves_equal(resumed.params, setup[1])
    lines = [json.loads(x) for x in (tmp_path / "b" / METRICS_FILE).read_text().splitlines()]
    train_steps = [x["step"] for x in lines if x["split"] == "train"]
    assert train_steps == list(range(1, 7))
    assert [x["step"] for x in lines if x["split"] == "eval"] == [3, 6]


def test_existing_checkpoints_need_resume(setup, stopped_run):
    with pytest.raises(SpecjaxError, match="pass --resume"):
        _fit(setup, _hp(stopped_run))


def test_resume_with_other_hyperparameters_is_refused(setup, stopped_run):
    with pytest.raises(SpecjaxError, match="different lr") as e:
        _fit(setup, _hp(stopped_run, lr=2e-2), resume=True)
    assert "\n" not in str(e.value)


def _largest_file(root: Path) -> Path:
    return max((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


@pytest.fixture(scope="module")
def stopped_run(setup, tmp_path_factory):
    """A run stopped after step 3: its out_dir, copied by each test that damages it."""
    out = tmp_path_factory.mktemp("stopped")
    _fit(setup, _hp(out), stop_after=3)
    return out


@pytest.mark.parametrize("damage", ["truncate", "garble", "delete_data", "delete_metadata"])
def test_damaged_checkpoint_is_one_line_error(setup, stopped_run, tmp_path, damage):
    out = tmp_path / "run"
    shutil.copytree(stopped_run, out)
    state_dir = out / CHECKPOINT_DIR / "3" / "state"
    if damage == "truncate":
        f = _largest_file(state_dir)
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif damage == "garble":
        f = _largest_file(state_dir)
        raw = bytearray(f.read_bytes())
        mid = len(raw) // 2
        raw[mid : mid + 64] = bytes(64)
        f.write_bytes(bytes(raw))
    elif damage == "delete_data":
        _largest_file(state_dir).unlink()
    else:
        (state_dir / "_METADATA").unlink()
    with pytest.raises(
        SpecjaxError, match="checkpoint .*3 is (incomplete or corrupt|corrupt)"
    ) as e:
        _fit(setup, _hp(out), resume=True)
    assert "\n" not in str(e.value)


def test_intact_copy_resumes(setup, stopped_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(stopped_run, out)
    assert int(_fit(setup, _hp(out), resume=True).step) == 6


def test_bad_hyperparameter_is_one_line_error(setup, tmp_path):
    with pytest.raises(SpecjaxError, match="--warmup_steps must be in"):
        _fit(setup, dataclasses.replace(_hp(tmp_path), warmup_steps=6))
