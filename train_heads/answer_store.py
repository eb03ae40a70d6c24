"""`python -m train_heads.answer_store`: an answer store (`models.answer_store`) from the target's
self-distilled answers, for `--answer_store=DIR` beside prompt lookup.

  python -m train_heads.answer_store \
      --data_dir=train_heads/answers/smollm2-135m-instruct/chat,train_heads/answers/smollm2-135m-instruct/cpython \
      --out=runs/answer_store

Only the answers are read, never the prompts: the store should hold what the target writes. The
data directories' manifests name the target, so the store records it without loading the model;
directories made for different targets are one error line.
"""

from __future__ import annotations

import sys

from absl import app, flags

from models.answer_store import build_answer_store, save_answer_store
from models.errors import SpecjaxError
from specjax.cli import parse_flags, run_or_fail
from train_heads.data import data_dirs, load_manifest, read_shard

FLAGS = flags.FLAGS
MAX_LENGTH = 64  # a [V, length] table per single token: past this it is memory, not drafting


def define_flags() -> None:
    """The CLI's flags (defined only when run as a program, never on import)."""
    flags.DEFINE_string("data_dir", None, "make_data output directories, comma-separated.")
    flags.DEFINE_string("out", None, "Directory to write the store to.")
    flags.DEFINE_integer("length", 8, f"Longest continuation kept per key (1-{MAX_LENGTH} tokens).")


def read_answers(spec) -> tuple[list[list[int]], dict]:
    """(every example's answer tokens, the target fingerprint all the directories record)."""
    answers, fingerprint = [], None
    for d in data_dirs(spec):
        manifest = load_manifest(d)
        recorded = manifest.get("target_fingerprint")
        if not isinstance(recorded, dict) or "V" not in recorded:
            raise SpecjaxError(f"{d}: its manifest records no target fingerprint")
        if fingerprint is not None and recorded != fingerprint:
            raise SpecjaxError(f"{d} was made for another target than the directories before it")
        fingerprint = recorded
        for entry in manifest["shards"]:
            arrays = read_shard(d / entry["file"])
            off, plen = arrays["offsets"], arrays["prompt_len"]
            for k in range(len(plen)):
                answers.append(arrays["tokens"][off[k] + plen[k] : off[k + 1]].tolist())
    return answers, fingerprint


def run() -> str:
    if not FLAGS.data_dir or not FLAGS.out:
        raise SpecjaxError("give --data_dir=DIR[,DIR...] and --out=DIR")
    if not 1 <= FLAGS.length <= MAX_LENGTH:
        raise SpecjaxError(f"--length must be in [1, {MAX_LENGTH}], got {FLAGS.length}")
    answers, fingerprint = read_answers(FLAGS.data_dir)
    tokens = sum(len(a) for a in answers)
    if tokens == 0:
        raise SpecjaxError(f"{FLAGS.data_dir} holds no answer tokens")
    print(f"building from {len(answers)} answers, {tokens} tokens ...", file=sys.stderr, flush=True)
    store = build_answer_store(answers, int(fingerprint["V"]), FLAGS.length)
    built = {"data_dir": FLAGS.data_dir, "answers": len(answers), "tokens": tokens}
    out = save_answer_store(FLAGS.out, store, fingerprint, built)
    return f"wrote {out} ({int(store.pair_key.shape[0]) - 1} token pairs, continuations of {store.length})"


def main(argv: list[str]) -> None:
    print(run_or_fail(argv, run, "--data_dir=DIR"))


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
