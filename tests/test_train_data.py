"""train_heads/data.py: self-distillation shards round trip, resume skips finished shards, bad
data is one SpecjaxError line (tiny random target, token prompts: no tokenizer needed)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from configs.draft_lm import TINY_TARGET
from models.cache import init_cache
from models.errors import SpecjaxError
from models.loading import Model
from models.transformer import causal_mask, forward, init_params
from specjax.engine import generate
from train_heads import data
from train_heads.data import load_dataset, load_manifest, make_data, read_shard, shard_name

PROMPTS = [[5, 6, 7, 8], [9, 10], [11, 12, 13, 14, 15, 16]]
SETTINGS = dict(max_new_tokens=8, batch_size=2, shard_size=2, progress=False)


@pytest.fixture(scope="module")
def target():
    return Model(TINY_TARGET, init_params(TINY_TARGET, jax.random.key(0)), None, "tiny")


@pytest.fixture(scope="module")
def made(target, tmp_path_factory):
    out = tmp_path_factory.mktemp("selfdistill")
    return out, make_data(target, PROMPTS, out, **SETTINGS)


def test_shards_hold_prompt_plus_the_targets_greedy_answer(target, made):
    out, manifest = made
    assert [s["file"] for s in manifest["shards"]] == [shard_name(0), shard_name(1)]
    assert manifest["examples"] == 3 and manifest["num_prompts"] == 3
    answers = generate(target.config, target.params, PROMPTS, max_new_tokens=8).tokens
    tokens, mask = load_dataset(out)
    assert tokens.dtype == np.int32 and mask.dtype == bool
    for n, (p, a) in enumerate(zip(PROMPTS, answers, strict=True)):
        seq = p + a
        assert tokens[n, : len(seq)].tolist() == seq
        assert mask[n].tolist() == [len(p) <= s < len(seq) for s in range(tokens.shape[1])]
    assert manifest["generated_tokens"] == int(mask.sum())


def test_shards_are_plain_npz_without_pickles(made):
    out, _ = made
    with np.load(out / shard_name(0), allow_pickle=False) as f:
        assert sorted(f.files) == ["offsets", "prompt_index", "prompt_len", "tokens"]
        assert f["tokens"].dtype == np.int32


def test_seq_len_cuts_and_pads(made):
    out, _ = made
    tokens, mask = load_dataset(out, seq_len=5)
    assert tokens.shape == (3, 5)
    assert mask[1].tolist() == [False, False, True, True, True]
    assert not mask[2].any()  # a 6-token prompt cut to 5 leaves no answer


def test_resume_regenerates_only_unfinished_shards(target, made, tmp_path, monkeypatch):
    out, manifest = made
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / shard_name(0)).write_bytes((out / shard_name(0)).read_bytes())
    interrupted = dict(manifest, shards=manifest["shards"][:1])
    (partial / "manifest.json").write_text(json.dumps(interrupted))
    calls = []
    monkeypatch.setattr(data, "generate", lambda *a, **k: calls.append(a[2]) or generate(*a, **k))
    resumed = make_data(target, PROMPTS, partial, **SETTINGS)
    assert calls == [[PROMPTS[2], PROMPTS[2]]]  # shard 1 only: one prompt, padded to the batch
    assert resumed["shards"] == manifest["shards"]
    assert (partial / shard_name(1)).read_bytes() == (out / shard_name(1)).read_bytes()
    calls.clear()
    make_data(target, PROMPTS, partial, **SETTINGS)
    assert calls == []


def test_resume_with_other_settings_is_one_line_error(target, made):
    out, _ = made
    with pytest.raises(SpecjaxError, match="other settings; use a new --out"):
        make_data(target, PROMPTS, out, **dict(SETTINGS, max_new_tokens=9))


def test_missing_manifest_and_corrupt_shard_are_one_line_errors(made, tmp_path):
    with pytest.raises(SpecjaxError, match="no manifest.json"):
        load_dataset(tmp_path)
    out, manifest = made
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text(json.dumps(manifest))
    (bad / shard_name(0)).write_bytes((out / shard_name(0)).read_bytes()[:50])
    with pytest.raises(SpecjaxError, match="corrupt or missing data shard") as e:
        load_dataset(bad)
    assert "\n" not in str(e.value)


def test_manifest_records_target_and_settings(made):
    out, _ = made
    m = load_manifest(out)
    assert m["target"] == "tiny" and m["target_fingerprint"]["V"] == TINY_TARGET.V
    assert m["settings"]["max_new_tokens"] == 8 and m["seed"] == 0


def test_growing_the_data_skips_answered_prompts_and_reads_both_dirs(target, made, tmp_path):
    out, _ = made
    more_prompts = [PROMPTS[1], [20, 21, 22], PROMPTS[0], [23, 24]]
    more = tmp_path / "more"
    manifest = make_data(
        target, more_prompts, more, exclude_prompts=data.answered_prompts(out), **SETTINGS
    )
    assert manifest["num_prompts"] == 2  # the two prompts `out` already answers are dropped
    assert data.answered_prompts(f"{out},{more}") == {
        tuple(p) for p in PROMPTS + [[20, 21, 22], [23, 24]]
    }
    both, both_mask = load_dataset(f"{out}, {more}", seq_len=12)
    first, first_mask = load_dataset(out, seq_len=12)
    assert both.shape == (5, 12)
    np.testing.assert_array_equal(both[:3], first)
    np.testing.assert_array_equal(both_mask[:3], first_mask)
    assert both[3, :3].tolist() == [20, 21, 22] and both[4, :2].tolist() == [23, 24]
    with pytest.raises(SpecjaxError, match="already answered"):
        make_data(
            target,
            PROMPTS,
            tmp_path / "none",
            exclude_prompts=data.answered_prompts(out),
            **SETTINGS,
        )


def test_recorded_features_are_the_targets_outputs_at_every_position(target, made, tmp_path):
    """hidden / top-k come from a whole-sequence pass; the engine's cached forward must agree,
    and on greedy answers the recorded best token is the next token."""
    out = tmp_path / "features"
    manifest = make_data(target, PROMPTS, out, hidden=True, topk=3, **SETTINGS)
    assert manifest["settings"]["hidden"] and manifest["settings"]["topk"] == 3
    c = target.config
    for entry in manifest["shards"]:
        arrays = read_shard(out / entry["file"])
        assert arrays["hidden"].dtype == np.float16 and arrays["hidden"].shape[1] == c.D
        assert arrays["topk_ids"].shape == (len(arrays["tokens"]), 3)
        off, plen = arrays["offsets"], arrays["prompt_len"]
        for k in range(len(plen)):
            seq = arrays["tokens"][off[k] : off[k + 1]]
            S = len(seq)
            cache = init_cache(c.L, 1, c.K, S, c.H, target.params.dtype)
            logits, hidden, _ = forward(
                c, target.params, seq[None], np.arange(S)[None], cache, causal_mask(1, S)
            )
            rows = slice(off[k], off[k + 1])
            np.testing.assert_allclose(arrays["hidden"][rows], hidden[0], atol=2e-3, rtol=2e-3)
            np.testing.assert_allclose(
                arrays["topk_logits"][rows],
                np.take_along_axis(logits[0], arrays["topk_ids"][rows], axis=1),
                atol=1e-4,
            )
            assert (np.diff(arrays["topk_logits"][rows], axis=1) <= 0).all()  # best first
            answer_rows = arrays["topk_ids"][rows][plen[k] - 1 : S - 1, 0]
            assert answer_rows.tolist() == seq[plen[k] :].tolist()
    # features ride along the tokens: the training view of the data is unchanged
    np.testing.assert_array_equal(load_dataset(out)[0], load_dataset(made[0])[0])


def test_feature_settings_are_part_of_resuming(target, made):
    out, _ = made
    with pytest.raises(SpecjaxError, match="other settings"):
        make_data(target, PROMPTS, out, hidden=True, **SETTINGS)
    with pytest.raises(SpecjaxError, match="topk must be in"):
        make_data(target, PROMPTS, out, topk=-1, **SETTINGS)


def test_token_only_copy_ships_compressed_and_gets_its_features_back(target, tmp_path):
    """The answers are versioned as tokens alone; --from_data with --hidden/--topk rebuilds the
    full data from them, shard for shard, as if they had been answered again."""
    import zipfile

    from train_heads.data import copy_data

    full = tmp_path / "full"
    made = make_data(target, PROMPTS, full, hidden=True, topk=3, **SETTINGS)
    bare = tmp_path / "bare"
    copied = copy_data(target, full, bare, progress=False)
    assert "hidden" not in copied["settings"] and "topk" not in copied["settings"]
    for entry in copied["shards"]:
        assert set(read_shard(bare / entry["file"])) == set(data.SHARD_ARRAYS)
        with zipfile.ZipFile(bare / entry["file"]) as z:
            assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
    rebuilt = copy_data(target, bare, tmp_path / "rebuilt", hidden=True, topk=3, progress=False)
    for key in ("settings", "examples", "tokens", "generated_tokens", "prompts_sha256"):
        assert rebuilt[key] == made[key]
    for entry in made["shards"]:
        want = read_shard(full / entry["file"])
        got = read_shard(tmp_path / "rebuilt" / entry["file"])
        assert set(got) == set(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    # A copy that keeps features already there reads them rather than recomputing them.
    kept = copy_data(target, full, tmp_path / "kept", hidden=True, progress=False)
    assert kept["settings"] == {k: v for k, v in made["settings"].items() if k != "topk"}


def test_copying_answers_of_another_target_or_onto_the_source_is_one_line(target, made, tmp_path):
    from train_heads.data import copy_data

    out, _ = made
    other = Model(TINY_TARGET, init_params(TINY_TARGET, jax.random.key(1)), None, "other")
    with pytest.raises(SpecjaxError, match="answers of another target"):
        copy_data(other, out, tmp_path / "x", progress=False)
    with pytest.raises(SpecjaxError, match="must differ"):
        copy_data(target, out, out, progress=False)
