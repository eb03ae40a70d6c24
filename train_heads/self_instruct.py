"""`python -m train_heads.self_instruct`: chat requests written by the target itself.

  python -m train_heads.self_instruct --num_prompts=1000 --out=data/self_instruct.jsonl
  python -m train_heads.make_data --source=data/self_instruct.jsonl --num_prompts=1000 ...

Why: the word-list chat pool (`train_heads.chat_prompts`) repeats a few hundred topics and a few
dozen templates, and heads trained on the target's answers to it agree with the target far more on
held-out answers to that pool than on benchmark prompts. A drafter has to follow the target's
answers to requests it has never seen, so the requests should vary as real traffic does. With no
chat data set at hand (nothing is downloaded), the target writes them: it continues a numbered list
of FEW_SHOT requests drawn from the word-list pool, sampled, and the first line it writes is kept
(Self-Instruct, Wang et al. 2023, in its simplest form). The requests are odd more often than
real users' are; what matters for a drafter is that the target's answers to them are in its own
voice over many more topics.

Batches are seeded by their index, so a rerun appends the batches not yet written and the file is
the same whether it was written in one run or several. Every user mistake is one `error:` line and
exit code 2.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

from absl import app, flags

from models.errors import SpecjaxError
from specjax.cli import parse_flags, run_or_fail

FLAGS = flags.FLAGS

FEW_SHOT = 4  # requests shown before the one the target writes
EXAMPLE_MAX_CHARS = 200  # one-line pool requests short enough to keep the few-shot prompt small
REQUEST_TOKENS = 40  # enough for one request line; the rest of the continuation is dropped
REQUEST_CHARS = (16, 300)  # kept requests' length bounds, in characters
TEMPERATURE, TOP_P = 0.9, 0.95  # varied but mostly on-format continuations
HEADER = "Requests that users sent to an AI assistant:\n"


def define_flags() -> None:
    """The CLI's flags (defined only when run as a program, never on import)."""
    flags.DEFINE_string("target", "smollm2", "'smollm2' or a GGUF/HF path (it needs a tokenizer).")
    flags.DEFINE_integer("num_prompts", 1000, "Distinct requests to write.")
    flags.DEFINE_integer("batch_size", 32, "Requests sampled per generate call.")
    flags.DEFINE_integer("seed", 0, "Seed of the few-shot examples and of the sampling.")
    flags.DEFINE_string("out", "data/self_instruct.jsonl", "Output file, one {'prompt'} per line.")


def few_shot_prompt(examples: list[str]) -> str:
    """A numbered list of `examples` whose next item the target is asked to write."""
    lines = "".join(f"{i + 1}. {e}\n" for i, e in enumerate(examples))
    return f"{HEADER}{lines}{len(examples) + 1}."


def first_request(continuation: str) -> str | None:
    """The request on the continuation's first line, or None when that line is not one."""
    line = continuation.strip().split("\n", 1)[0].strip().strip('"').strip()
    if not REQUEST_CHARS[0] <= len(line) <= REQUEST_CHARS[1]:
        return None
    if re.match(r"^\d+[.)]", line) or not re.search(r"[A-Za-z]{3}", line):
        return None  # the target skipped ahead to the next number, or wrote no words
    return line


def example_pool(seed: int) -> list[str]:
    """One-line requests of the word-list chat pool, the few-shot examples."""
    from train_heads.chat_prompts import chat_pool

    return [p for p in chat_pool(seed) if "\n" not in p and len(p) <= EXAMPLE_MAX_CHARS]


def request_batch(target, pool: list[str], batch: int, batch_size: int, seed: int) -> list[str]:
    """Batch `batch`'s requests (seeded by seed and batch alone), before deduplication."""
    from specjax.chat import encode_prompt
    from specjax.engine import generate
    from specjax.sampling import SamplingConfig

    rng = random.Random(seed * 1_000_003 + batch)
    prompts = [few_shot_prompt(rng.sample(pool, FEW_SHOT)) for _ in range(batch_size)]
    ids = [encode_prompt(target.tokenizer, p, chat=False) for p in prompts]
    result = generate(
        target.config,
        target.params,
        ids,
        max_new_tokens=REQUEST_TOKENS,
        sampling=SamplingConfig(temperature=TEMPERATURE, top_p=TOP_P),
        eos_ids=target.eos_ids,
        seed=[(seed * 1_000_003 + batch * batch_size + i) % 2**32 for i in range(batch_size)],
    )
    texts = [target.tokenizer.decode(t, skip_special_tokens=True) for t in result.tokens]
    return [r for r in map(first_request, texts) if r is not None]


def read_requests(path: Path) -> list[dict]:
    """The rows written so far ({'prompt', 'batch'}), or [] when the file does not exist."""
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            rows.append({"prompt": str(row["prompt"]), "batch": int(row["batch"])})
        except (ValueError, KeyError, TypeError) as e:
            raise SpecjaxError(f"{path}:{n} is not a self_instruct row ({e})") from None
    return rows


def write_requests(target, out: Path, n: int, batch_size: int, seed: int) -> list[str]:
    """Appends batches to `out` until it holds n distinct requests; returns the first n."""
    from tqdm import tqdm

    if n < 1 or batch_size < 1:
        raise SpecjaxError(f"num_prompts and batch_size must be >= 1, got {n} and {batch_size}")
    if target.tokenizer is None:
        raise SpecjaxError(f"{target.source} has no tokenizer to write requests with")
    pool = example_pool(seed)
    rows = read_requests(out)
    seen = set(pool) | {r["prompt"] for r in rows}
    batch = 1 + max((r["batch"] for r in rows), default=-1)
    out.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=n, initial=min(len(rows), n), desc="self-instruct", unit="request")
    misses = 0
    with out.open("a", encoding="utf-8") as f:
        while len(rows) < n:
            new = list(dict.fromkeys(request_batch(target, pool, batch, batch_size, seed)))
            new = [r for r in new if r not in seen]
            for r in new:
                seen.add(r)
                rows.append({"prompt": r, "batch": batch})
                f.write(json.dumps(rows[-1]) + "\n")
            f.flush()
            bar.update(min(len(new), max(0, n - bar.n)))
            misses = 0 if new else misses + 1
            if misses == 20:
                raise SpecjaxError(f"20 batches in a row gave no new request; kept {len(rows)}")
            batch += 1
    bar.close()
    return [r["prompt"] for r in rows[:n]]


def run() -> dict:
    from train_heads.target import load_target

    print(f"loading {FLAGS.target} ...", file=sys.stderr, flush=True)
    target = load_target(FLAGS.target)
    out = Path(FLAGS.out)
    requests = write_requests(target, out, FLAGS.num_prompts, FLAGS.batch_size, FLAGS.seed)
    return {"requests": len(requests), "out": str(out)}


def main(argv: list[str]) -> None:
    summary = run_or_fail(argv, run, "--out=FILE.jsonl")
    print(f"{summary['requests']} requests -> {summary['out']}")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
