"""The self-distilled answers that ship in train_heads/answers/ (tokens alone, compressed): they
belong to the embedded default, they answer the prompts their command names, and they are the
target's greedy answers (its argmax at each answer position is the next token)."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from models.fingerprint import target_fingerprint
from models.transformer import lm_logits, sequence_hidden
from train_heads.data import (
    SHARD_ARRAYS,
    _prompts_sha256,
    encode_prompts,
    load_dataset,
    load_manifest,
    read_shard,
)
from train_heads.prompts import build_prompts, prompt_file

ANSWERS = Path(__file__).resolve().parents[1] / "train_heads" / "answers"
DEFAULT = ANSWERS / "smollm2-135m-instruct"
SOURCES = ("chat", "cpython", "selfinstruct")  # one directory per make_data --source
REQUESTS = DEFAULT / "selfinstruct" / "requests.jsonl"  # the self_instruct file it answers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def target(smollm2_path):
    from models.loading import load_model

    return load_model("smollm2")


@pytest.mark.parametrize("source", SOURCES)
def test_answers_are_the_defaults_and_hold_tokens_alone(target, source):
    manifest = load_manifest(DEFAULT / source)
    assert manifest["target_fingerprint"] == target_fingerprint(target.config, target.params)
    assert manifest["settings"]["temperature"] == 0.0 and "hidden" not in manifest["settings"]
    for entry in manifest["shards"]:
        arrays = read_shard(DEFAULT / source / entry["file"])
        assert set(arrays) == set(SHARD_ARRAYS)
        assert entry["tokens"] == len(arrays["tokens"])


def _assert_answers_prompts(source: str, target, prompts: list[str]) -> None:
    """The directory's prompt hash is that of `prompts` (so make_data, given the command that
    made it, resumes or extends it), and every example starts with the prompt its prompt_index
    names."""
    manifest = load_manifest(DEFAULT / source)
    ids = encode_prompts(target.tokenizer, prompts)
    assert manifest["prompts_sha256"] == _prompts_sha256(ids)
    for entry in manifest["shards"]:
        arrays = read_shard(DEFAULT / source / entry["file"])
        off, plen = arrays["offsets"], arrays["prompt_len"]
        for k, j in enumerate(arrays["prompt_index"]):
            assert arrays["tokens"][off[k] : off[k] + plen[k]].tolist() == ids[j]


def test_the_chat_answers_answer_the_chat_pool_in_order(target):
    """`--source=chat --num_prompts=1305`. (The cpython pool reads the interpreter's own docs, so
    its hash holds only on the Python that made it.)"""
    n = load_manifest(DEFAULT / "chat")["num_prompts"]
    _assert_answers_prompts("chat", target, build_prompts(n, 0, "chat"))


def test_the_selfinstruct_answers_answer_the_shipped_requests_in_order(target):
    """`--source=REQUESTS --num_prompts=N`, every request of the shipped file."""
    n = load_manifest(DEFAULT / "selfinstruct")["num_prompts"]
    assert n == len(prompt_file(REQUESTS))
    _assert_answers_prompts("selfinstruct", target, build_prompts(n, 0, str(REQUESTS)))


def test_together_they_hold_at_least_750k_answer_tokens():
    generated = sum(load_manifest(DEFAULT / s)["generated_tokens"] for s in SOURCES)
    assert generated >= 750_000


def test_each_answer_token_is_the_targets_argmax(target):
    """Teacher-forced over an answer of each directory, the target's greedy choice is the recorded
    next token (all but near-ties: the answers were decoded in batches of 32, this is one row)."""
    for source, n in (("chat", 0), ("cpython", -1), ("selfinstruct", 1)):
        tokens, mask = load_dataset(DEFAULT / source)
        tokens, mask = tokens[n], mask[n]
        length = int(np.flatnonzero(mask)[-1]) + 1
        seq = jnp.asarray(tokens[None, :length])
        logits = lm_logits(target.params, sequence_hidden(target.config, target.params, seq))
        greedy = np.asarray(jnp.argmax(logits[0, :-1], -1))
        agree = (greedy == tokens[1:length])[mask[1:length]]
        assert agree.mean() >= 0.98, (source, agree.mean())


def test_the_shipped_answer_store_is_built_from_these_answers(target):
    """models/answer_stores/ holds what `python -m train_heads.answer_store` makes of the three
    answer sets (README), and `--answer_store=shipped` finds it for the default target."""
    from models.answer_store import build_answer_store, load_answer_store
    from models.answer_stores import shipped_answer_store_for
    from train_heads.answer_store import read_answers

    path = shipped_answer_store_for(target.config, target.params)
    assert path is not None and path.name == "smollm2-135m-instruct"
    shipped = load_answer_store(path, target.config, target.params)
    answers, fingerprint = read_answers([DEFAULT / s for s in SOURCES])
    assert fingerprint == target_fingerprint(target.config, target.params)
    rebuilt = build_answer_store(answers, target.config.V, shipped.length)
    for name in ("after_token", "pair_key", "pair_tokens", "pair_next"):
        np.testing.assert_array_equal(np.asarray(getattr(shipped, name)), getattr(rebuilt, name))
