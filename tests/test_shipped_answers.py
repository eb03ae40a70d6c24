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
from train_heads.prompts import build_prompts

ANSWERS = Path(__file__).resolve().parents[1] / "train_heads" / "answers"
DEFAULT = ANSWERS / "smollm2-135m-instruct"
SOURCES = ("chat", "cpython")  # one directory per make_data --source

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


def test_the_chat_answers_answer_the_chat_pool_in_order(target):
    """The prompts hash to the command's (`--source=chat --num_prompts=1305`), so resuming or
    extending the directory with that command is recognised; every example starts with the
    prompt its prompt_index names. (The cpython pool reads the interpreter's own docs, so its
    hash holds only on the Python that made it.)"""
    manifest = load_manifest(DEFAULT / "chat")
    prompts = encode_prompts(target.tokenizer, build_prompts(manifest["num_prompts"], 0, "chat"))
    assert manifest["prompts_sha256"] == _prompts_sha256(prompts)
    for entry in manifest["shards"]:
        arrays = read_shard(DEFAULT / "chat" / entry["file"])
        off, plen = arrays["offsets"], arrays["prompt_len"]
        for k, j in enumerate(arrays["prompt_index"]):
            assert arrays["tokens"][off[k] : off[k] + plen[k]].tolist() == prompts[j]


def test_together_they_hold_at_least_600k_answer_tokens():
    generated = sum(load_manifest(DEFAULT / s)["generated_tokens"] for s in SOURCES)
    assert generated >= 600_000


def test_each_answer_token_is_the_targets_argmax(target):
    """Teacher-forced over an answer of each directory, the target's greedy choice is the recorded
    next token (all but near-ties: the answers were decoded in batches of 32, this is one row)."""
    for source, n in (("chat", 0), ("cpython", -1)):
        tokens, mask = load_dataset(DEFAULT / source)
        tokens, mask = tokens[n], mask[n]
        length = int(np.flatnonzero(mask)[-1]) + 1
        seq = jnp.asarray(tokens[None, :length])
        logits = lm_logits(target.params, sequence_hidden(target.config, target.params, seq))
        greedy = np.asarray(jnp.argmax(logits[0, :-1], -1))
        agree = (greedy == tokens[1:length])[mask[1:length]]
        assert agree.mean() >= 0.98, (source, agree.mean())
