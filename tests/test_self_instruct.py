"""train_heads/self_instruct.py and prompt files: requests the target writes itself, kept one line
each, resumable to the same file, and read back by make_data's `--source=FILE.jsonl`."""

from __future__ import annotations

import json

import pytest

from models.errors import SpecjaxError
from train_heads.prompts import build_prompts, prompt_file
from train_heads.self_instruct import (
    FEW_SHOT,
    example_pool,
    few_shot_prompt,
    first_request,
    read_requests,
    write_requests,
)


def test_few_shot_prompt_numbers_the_examples_and_asks_for_the_next():
    text = few_shot_prompt(["Write a poem.", "What is rain?"])
    assert text.endswith("1. Write a poem.\n2. What is rain?\n3.")


@pytest.mark.parametrize(
    "continuation, kept",
    [
        (
            ' "What is the best diet for a honeybee?"\n6. Next one',
            "What is the best diet for a honeybee?",
        ),
        (" Explain tides to a child.", "Explain tides to a child."),
        ("\n7. Justify your moral standing.", None),  # skipped ahead to another number
        (" Hi!", None),  # too short to be a request
        (" 42 + 17 = 59 = 13 * 4", None),  # no word in it
        ("", None),
        (" " + "word " * 80, None),  # longer than a request
    ],
)
def test_first_request_keeps_one_line_requests_only(continuation, kept):
    assert first_request(continuation) == kept


def test_prompt_file_reads_prompts_and_rejects_bad_lines(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text("".join(json.dumps({"prompt": f"Request {i}?"}) + "\n" for i in range(5)))
    assert prompt_file(good) == [f"Request {i}?" for i in range(5)]
    assert sorted(build_prompts(5, seed=1, source=str(good))) == prompt_file(good)
    assert build_prompts(3, seed=1, source=str(good)) == build_prompts(3, seed=1, source=str(good))
    with pytest.raises(SpecjaxError, match=r"num_prompts must be in \[1, 5\]"):
        build_prompts(6, source=str(good))
    bad = tmp_path / "bad.jsonl"
    for text, message in [
        ('{"text": "x"}\n', 'bad.jsonl:1 is not a JSON object with a "prompt"'),
        ("not json\n", "bad.jsonl:1 is not a JSON object"),
        ('{"prompt": "  "}\n', '"prompt" must be non-empty text'),
        ("", "is empty"),
    ]:
        bad.write_text(text)
        with pytest.raises(SpecjaxError, match=message):
            prompt_file(bad)
    with pytest.raises(SpecjaxError, match="does not exist"):
        build_prompts(1, source=str(tmp_path / "missing.jsonl"))


def test_a_corrupt_request_file_is_one_error(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"prompt": "fine", "batch": 0}\n{"prompt": "no batch"}\n')
    with pytest.raises(SpecjaxError, match="r.jsonl:2 is not a self_instruct row"):
        read_requests(path)


def test_the_real_target_writes_distinct_requests_and_a_resumed_file_is_the_same(tmp_path):
    """Two runs (3 requests, then up to 6) write the file one run of 6 writes: batches are seeded
    by their index. The requests are new one-line texts, not copies of the few-shot examples."""
    from models.embedded import default_gguf_path
    from train_heads.target import load_target

    try:
        default_gguf_path()
    except SpecjaxError as e:
        pytest.skip(f"SmolLM2 GGUF unavailable: {e}")
    target = load_target("smollm2")
    once, twice = tmp_path / "once.jsonl", tmp_path / "twice.jsonl"
    requests = write_requests(target, once, 6, batch_size=4, seed=3)
    write_requests(target, twice, 3, batch_size=4, seed=3)
    assert write_requests(target, twice, 6, batch_size=4, seed=3) == requests
    assert once.read_text() == twice.read_text()
    assert len(requests) == len(set(requests)) == 6
    assert all("\n" not in r and first_request(r) == r for r in requests)
    assert not set(requests) & set(example_pool(3))
    assert FEW_SHOT <= len(example_pool(3))


def test_bad_counts_are_one_error_before_any_model_work(tmp_path):
    for n, batch_size in ((0, 4), (4, 0)):
        with pytest.raises(SpecjaxError, match="must be >= 1"):
            write_requests(None, tmp_path / "r.jsonl", n, batch_size=batch_size, seed=0)
