"""The answer store (`models.answer_store`, `--answer_store`): what it keeps from hand-made answers,
how it is read on device, its file, and that prompt lookup and the lookup branch drafting from it
still decode exactly what vanilla does (tiny random target, B = 1 and 3 ragged). The sampled case
is `test_speculative`'s chi-square test of Medusa with a lookup branch and a store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.answer_store import (
    NONE,
    build_answer_store,
    load_answer_store,
    pair_key,
    save_answer_store,
    store_lookup,
)
from models.config import ModelConfig
from models.errors import SpecjaxError
from models.fingerprint import target_fingerprint
from models.medusa_heads import init_heads
from models.transformer import init_params
from specjax.candidates import DraftContext, Prefill
from specjax.drafters.lookup_branch import BranchParams, LookupBranch, node_priority
from specjax.drafters.medusa import MedusaDrafter
from specjax.drafters.ngram import NgramDrafter
from specjax.engine import generate
from specjax.static_tree import tree_from_paths
from tests.cli_batch import run_batch

TARGET = ModelConfig(model_type="llama", V=64, D=32, L=3, F=64, Q=4, K=2, H=8, max_positions=256)
# After token 2 come 8 8 (once) and 3 4, 3 5 (twice 3): the store keeps 3, then 4 (a tie with 5:
# the smaller id). After the pair (7, 2) it keeps 8 8 (all that ever followed it).
ANSWERS = [[7, 2, 8, 8], [1, 2, 3, 4], [1, 2, 3, 5]]


def _lookup(store, seq, k=4):
    proposal, count = store_lookup(store, jnp.asarray(seq + [0, 0], jnp.int32), len(seq), k)
    return proposal.tolist()[: int(count)]


def test_continuations_are_chosen_token_by_token():
    store = build_answer_store(ANSWERS, vocab_size=10, length=4)
    assert store.after_token[2].tolist() == [3, 4, NONE, NONE]
    assert store.after_token[1].tolist() == [2, 3, 4, NONE]
    assert store.after_token[8].tolist() == [8, NONE, NONE, NONE]  # the answer ended there
    assert store.after_token[9].tolist() == [NONE] * 4  # never written
    rows = {
        tuple(t): n.tolist()
        for t, n in zip(store.pair_tokens.tolist(), store.pair_next, strict=True)
    }
    assert rows[(7, 2)] == [8, 8, NONE, NONE] and rows[(1, 2)] == [3, 4, NONE, NONE]
    assert rows[(NONE, NONE)] == [NONE] * 4  # the sentinel after the sorted keys
    assert np.all(np.diff(store.pair_key.astype(np.int64)) > 0)


def test_lookup_prefers_the_pair_then_the_last_token():
    store = jax.tree.map(jnp.asarray, build_answer_store(ANSWERS, vocab_size=10, length=4))
    assert _lookup(store, [5, 7, 2]) == [8, 8]  # the pair (7, 2)
    assert _lookup(store, [5, 9, 2]) == [3, 4]  # (9, 2) unseen: after 2 alone
    assert _lookup(store, [2]) == [3, 4]  # one token of context
    assert _lookup(store, [5, 9]) == []  # 9 was never written
    assert _lookup(store, [7, 2], k=1) == [8]  # cut to k
    proposal, count = store_lookup(store, jnp.asarray([1, 2, 0], jnp.int32), 2, 6)
    assert proposal.shape == (6,) and int(count) == 2  # k past the kept length: padded


def test_pairs_sharing_a_key_keep_the_commoner_and_never_answer_for_the_other():
    """With V > 65536, a * V + b wraps modulo 2^32: (0, 100) and (61356, 47396) share a key at
    V = 70000. The commoner pair, here the wrapping one, keeps the row; the other falls back to
    what follows its last token alone, never to the kept pair's continuation."""
    V = 70000
    assert int(pair_key(0, 100, V)) == int(pair_key(61356, 47396, V))
    answers = (
        [[61356, 47396, 1]] * 2  # the commoner pair
        + [[0, 100, 2]]
        + [[5, 100, 3], [6, 100, 3]]  # after 100 alone: 3
        + [[7, 47396, 4], [8, 47396, 4], [9, 47396, 4]]  # after 47396 alone: 4
    )
    store = jax.tree.map(jnp.asarray, build_answer_store(answers, vocab_size=V, length=2))
    assert _lookup(store, [61356, 47396]) == [1]  # the kept pair, found by its wrapped key
    assert _lookup(store, [0, 100]) == [3]  # lost its row: after 100 alone, not the other's 1
    key = pair_key(jnp.int32(61356), jnp.int32(47396), V)
    assert key.dtype == jnp.uint32 and int(key) == int(pair_key(61356, 47396, V))  # device == host


def test_building_from_ids_outside_the_vocabulary_is_one_error_line():
    with pytest.raises(SpecjaxError, match="outside the vocabulary of 10"):
        build_answer_store([[1, 2, 10]], vocab_size=10)


@pytest.fixture(scope="module")
def target():
    return init_params(TARGET, jax.random.key(0))


def test_a_saved_store_loads_back_for_its_target_only(tmp_path, target):
    store = build_answer_store(ANSWERS, vocab_size=TARGET.V, length=3)
    out = save_answer_store(tmp_path / "s", store, target_fingerprint(TARGET, target), {"x": 1})
    back = load_answer_store(out, TARGET, target)
    for name in ("after_token", "pair_key", "pair_tokens", "pair_next"):
        np.testing.assert_array_equal(np.asarray(getattr(back, name)), getattr(store, name))
    other = init_params(TARGET, jax.random.key(1))
    with pytest.raises(SpecjaxError, match="made for a different target"):
        load_answer_store(out, TARGET, other)


DAMAGE = {  # case -> what the error line names
    "no_arrays": "missing store.safetensors",
    "a_file_not_a_directory": "missing store_config.json",
    "bad_json": "not a valid answer store",
    "json_not_an_object": "is not a specjax-answer-store-v1 config",
    "garbage_arrays": "not a valid answer store",
    "wrong_shape": "after_token is int32",
    "extra_tensor_only": "not a valid answer store",
    "id_past_the_vocabulary": "pair_next holds ids outside [-1, 64)",
    "unsorted": "pair keys not sorted",
    "keys_of_other_pairs": "pair keys do not match their pairs",
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_store_is_one_error_line_naming_the_fault(tmp_path, target, damage):
    from safetensors.numpy import load_file, save_file

    store = build_answer_store(ANSWERS, vocab_size=TARGET.V, length=3)
    fingerprint = target_fingerprint(TARGET, target)
    out = save_answer_store(tmp_path / "s", store, fingerprint, {})
    meta = json.loads((out / "store_config.json").read_text())
    arrays = load_file(str(out / "store.safetensors"))
    if damage == "no_arrays":
        (out / "store.safetensors").unlink()
    elif damage == "a_file_not_a_directory":
        out = out / "store.safetensors"
    elif damage == "bad_json":
        (out / "store_config.json").write_text("{")
    elif damage == "json_not_an_object":
        (out / "store_config.json").write_text("[]")
    elif damage == "garbage_arrays":
        (out / "store.safetensors").write_bytes(b"\x00" * 64)
    elif damage == "wrong_shape":
        (out / "store_config.json").write_text(json.dumps({**meta, "length": 5}))
    elif damage == "extra_tensor_only":
        save_file({"other": arrays["pair_key"]}, str(out / "store.safetensors"))
    elif damage == "id_past_the_vocabulary":
        store = store.replace(pair_next=np.where(store.pair_next == 8, TARGET.V, store.pair_next))
        save_answer_store(out, store, fingerprint, {})
    elif damage == "unsorted":
        save_answer_store(out, store.replace(pair_key=store.pair_key[::-1].copy()), fingerprint, {})
    else:  # two pairs swap rows: each key now sits beside another pair
        swapped = store.pair_tokens.copy()
        swapped[[0, 1]] = swapped[[1, 0]]
        save_answer_store(out, store.replace(pair_tokens=swapped), fingerprint, {})
    with pytest.raises(SpecjaxError) as e:
        load_answer_store(out, TARGET, target)
    message = str(e.value)
    assert "\n" not in message and str(out) in message and DAMAGE[damage] in message, message


def _one_row_ngram_block(store, history: list[int], root: int) -> list[int]:
    drafter = NgramDrafter(max_ngram=2, num_tokens=3)
    prefill = Prefill(
        tokens=jnp.asarray([history], jnp.int32),
        length=jnp.asarray([len(history)], jnp.int32),
        hidden=jnp.zeros((1, len(history), 4)),
    )
    ctx = DraftContext(
        root=jnp.asarray([root], jnp.int32), root_position=jnp.asarray([len(history)]),
        hidden=jnp.zeros((1, 4)), done=jnp.zeros((1,), bool),
    )  # fmt: skip
    cands, _ = drafter.propose(store, drafter.init(store, prefill, 16), ctx, None, None)
    parent = cands.parent[0].tolist()
    return [t for t, p in zip(cands.tokens[0].tolist(), parent, strict=True) if p >= 0]


def test_prompt_lookup_takes_the_store_only_where_the_context_has_no_match():
    store = jax.tree.map(jnp.asarray, build_answer_store(ANSWERS, vocab_size=TARGET.V, length=4))
    assert _one_row_ngram_block(store, [7], root=2) == [8, 8]  # no 2 before: the store
    assert _one_row_ngram_block(store, [2, 30, 31, 7], root=2) == [30, 31, 7]  # the context's
    assert _one_row_ngram_block(None, [7], root=2) == []  # no store: nothing


PROMPTS = [[5, 6, 7, 8, 9, 5, 6, 7], [3, 4], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]]
TREE = ((0,), (1,), (0, 0), (0, 1), (1, 0))


@pytest.mark.parametrize(
    "batch", [pytest.param("one", marks=pytest.mark.extended), "three_ragged"]
)  # B = 1 is the batched check's twin
@pytest.mark.parametrize("method", ["ngram", "medusa_lookup"])
def test_greedy_equals_vanilla_drafting_from_a_store(target, method, batch):
    """The store holds the target's answers to other prompts (every prompt, shifted by one
    token), so it knows how the random target goes on; greedy output stays vanilla's and more
    drafted tokens are accepted than without it."""
    prompts = PROMPTS[2:] if batch == "one" else PROMPTS
    others = [[(t + 1) % TARGET.V for t in p] for p in PROMPTS]
    answers = generate(TARGET, target, others, max_new_tokens=40).tokens
    store = jax.tree.map(jnp.asarray, build_answer_store(answers, vocab_size=TARGET.V, length=4))
    if method == "ngram":
        drafter, with_store, without = NgramDrafter(num_tokens=4), store, None
    else:
        heads = init_heads(target, num_heads=2)
        heads = heads.replace(res_w=0.3 * jax.random.normal(jax.random.key(2), heads.res_w.shape))
        inner = MedusaDrafter(tree_from_paths(TREE))
        drafter = LookupBranch(inner, node_priority(TREE, None), num_tokens=4)
        with_store, without = BranchParams(heads, store), BranchParams(heads)
    vanilla = generate(TARGET, target, prompts, max_new_tokens=40)
    spec = generate(
        TARGET, target, prompts, max_new_tokens=40, drafter=drafter, draft_params=with_store
    )
    assert spec.tokens == vanilla.tokens
    alone = generate(
        TARGET, target, prompts, max_new_tokens=40, drafter=drafter, draft_params=without
    )
    assert sum(spec.accepted) > sum(alone.accepted)


CHAT_ANSWERS = (
    Path(__file__).resolve().parents[1] / "train_heads/answers/smollm2-135m-instruct/chat"
)


def test_the_build_cli_writes_a_store_and_refuses_bad_input_in_one_line(tmp_path):
    """`python -m train_heads.answer_store` on the shipped chat answers (no model is loaded: the
    manifest names the target), and its bad inputs: no --out, a directory without answers, two
    directories made for different targets, --out a file, an absurd --length."""
    foreign = tmp_path / "foreign"
    shutil.copytree(CHAT_ANSWERS, foreign)
    manifest = json.loads((foreign / "manifest.json").read_text())
    manifest["target_fingerprint"]["embed_sha256"] = "0" * 16
    (foreign / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "store"
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = [
        [f"--data_dir={CHAT_ANSWERS}", f"--out={out}", "--length=4"],
        [f"--data_dir={CHAT_ANSWERS}"],
        [f"--data_dir={tmp_path}", f"--out={out}2"],
        [f"--data_dir={CHAT_ANSWERS},{foreign}", f"--out={out}3"],
        [f"--data_dir={CHAT_ANSWERS}", f"--out={a_file}"],
        [f"--data_dir={CHAT_ANSWERS}", f"--out={out}4", "--length=100000"],
    ]
    built, no_out, no_data, mixed, out_a_file, too_long = run_batch(
        "train_heads.answer_store", cases
    )
    assert built["returncode"] == 0, built["stderr"]
    assert built["stdout"].startswith(f"wrote {out}")
    meta = json.loads((out / "store_config.json").read_text())
    recorded = json.loads((CHAT_ANSWERS / "manifest.json").read_text())["target_fingerprint"]
    assert meta["target"]["fingerprint"] == recorded and meta["length"] == 4
    assert meta["built"]["tokens"] > 200_000  # the answers alone: 204,404 generated tokens
    for result, says in (
        (no_out, "give --data_dir=DIR[,DIR...] and --out=DIR"),
        (no_data, "no manifest.json"),
        (mixed, "was made for another target"),
        (out_a_file, "is a file, not a directory"),
        (too_long, "--length must be in [1, 64]"),
    ):
        lines = result["stderr"].strip().splitlines()
        assert result["returncode"] == 2 and lines[-1].startswith("error: ") and says in lines[-1]
