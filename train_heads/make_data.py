"""`python -m train_heads.make_data`: the target's answers to the training prompts, as shards.

  python -m train_heads.make_data --target=smollm2 --num_prompts=2000 --max_new_tokens=256 \
      --batch_size=16 --out=data/selfdistill

Rerunning the same command resumes: finished shards are skipped. To grow the data, write a new
directory with `--exclude_data=data/selfdistill` (its prompts are skipped) and train on both
(`--data_dir=data/selfdistill,data/more`). Prompts come from
`train_heads.prompts` (chat-style prompts from this project's word lists and CPython's own
documentation, both disjoint from the benchmarks) or from a JSONL file (`--source=FILE.jsonl`, for
example the target's own requests written by `train_heads.self_instruct`); a target without
a tokenizer (the "tiny-random" test model) gets seeded random token prompts instead.
The slow part is answering; `--from_data=DIR` copies answers already made, adding their hidden
states or top-k logits (`--hidden`, `--topk`) in one teacher-forced forward each, or, with
neither, writing the compressed token-only copy that ships in `train_heads/answers/`.
Every user mistake is one `error:` line and exit code 2.
"""

from __future__ import annotations

import sys

import numpy as np
from absl import app, flags

from models.errors import SpecjaxError
from specjax.cli import parse_flags, run_or_fail

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The CLI's flags (defined only when run as a program, never on import)."""
    flags.DEFINE_string("target", "smollm2", "'smollm2', a GGUF/HF path, or 'tiny-random'.")
    flags.DEFINE_integer("num_prompts", 2000, "Prompts to answer.")
    flags.DEFINE_string(
        "source",
        "mixed",
        "Prompt source (train_heads/prompts.py): chat (word-list prompts), cpython (CPython-doc "
        'prompts), mixed (both), or a .jsonl file of {"prompt": ...} lines, such as the '
        "target's own requests from train_heads.self_instruct.",
    )
    flags.DEFINE_integer("max_new_tokens", 256, "Answer length cap (EOS ends earlier).")
    flags.DEFINE_integer("batch_size", 16, "Prompts per generate call.")
    flags.DEFINE_integer("shard_size", 256, "Prompts per shard (the unit of resuming).")
    flags.DEFINE_integer("max_prompt_tokens", 512, "Longer prompts are skipped.")
    flags.DEFINE_float("temperature", 0.0, "0 is greedy; > 0 samples.")
    flags.DEFINE_integer("seed", 0, "Prompt order and sampling seed.")
    flags.DEFINE_string("dtype", "float32", "Target dtype: float32 or bfloat16.")
    flags.DEFINE_string("out", "data/selfdistill", "Output directory.")
    flags.DEFINE_bool(
        "hidden",
        False,
        "Also record the target's final hidden states (float16, 2 x D bytes/token).",
    )
    flags.DEFINE_integer("topk", 0, "Also record the target's k best next-token logits (0: off).")
    flags.DEFINE_string(
        "from_data",
        "",
        "Copy this data directory's answers instead of answering prompts: with --hidden / --topk "
        "their features are added (one teacher-forced forward per answer), without them the copy "
        "is the compressed tokens alone (how the embedded default's answers ship).",
    )
    flags.DEFINE_string(
        "exclude_data",
        "",
        "Comma-separated data directories whose prompts are skipped here (grow the data with a "
        "new --out without answering a prompt twice).",
    )


RANDOM_PROMPT_LEN = (4, 24)  # token prompts for tokenizer-less targets: lengths in [lo, hi)


def random_token_prompts(n: int, vocab: int, seed: int) -> list[list[int]]:
    """Seeded random token-id prompts, for targets that have no tokenizer."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(*RANDOM_PROMPT_LEN, size=n)
    return [rng.integers(1, vocab, size=k).tolist() for k in lengths]


def run() -> dict:
    from train_heads.data import answered_prompts, copy_data, make_data
    from train_heads.prompts import build_prompts
    from train_heads.target import load_target

    if FLAGS.num_prompts < 1:
        raise SpecjaxError(f"--num_prompts must be >= 1, got {FLAGS.num_prompts}")
    if FLAGS.topk < 0:
        raise SpecjaxError(f"--topk must be >= 0, got {FLAGS.topk}")
    print(f"loading {FLAGS.target} ...", file=sys.stderr, flush=True)
    target = load_target(FLAGS.target, FLAGS.dtype)
    if FLAGS.from_data:
        return copy_data(target, FLAGS.from_data, FLAGS.out, hidden=FLAGS.hidden, topk=FLAGS.topk)
    if target.tokenizer is None:
        prompts = random_token_prompts(FLAGS.num_prompts, target.config.V, FLAGS.seed)
    else:
        prompts = build_prompts(FLAGS.num_prompts, FLAGS.seed, FLAGS.source)
    exclude = answered_prompts(FLAGS.exclude_data) if FLAGS.exclude_data else ()
    return make_data(
        target,
        prompts,
        FLAGS.out,
        max_new_tokens=FLAGS.max_new_tokens,
        batch_size=FLAGS.batch_size,
        shard_size=FLAGS.shard_size,
        temperature=FLAGS.temperature,
        seed=FLAGS.seed,
        max_prompt_tokens=FLAGS.max_prompt_tokens,
        chat=target.has_chat_template,
        exclude_prompts=exclude,
        hidden=FLAGS.hidden,
        topk=FLAGS.topk,
    )


def main(argv: list[str]) -> None:
    manifest = run_or_fail(argv, run, "--out=DIR")
    print(
        f"{manifest['examples']} examples, {manifest['generated_tokens']} generated tokens "
        f"in {len(manifest['shards'])} shards -> {FLAGS.out}"
    )


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
