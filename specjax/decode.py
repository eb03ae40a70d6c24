"""`python -m specjax.decode`: generate text with any method on any supported checkpoint.

With no flags it runs the embedded default (SmolLM2-135M-Instruct) on a built-in prompt. `--json`
makes the last stdout line one JSON object (DESIGN "Public contracts"). Every user mistake ends as
one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

from specjax.cli import parse_flags, run_or_fail
from specjax.drafters import AVAILABLE_METHODS, METHODS
from specjax.errors import SpecjaxError
from specjax.prompts import encode_prompt

DEFAULT_PROMPT = "Explain in three sentences why the sky is blue."

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "model", "smollm2", "GGUF file, Hugging Face directory, or 'smollm2' (embedded)."
)
flags.DEFINE_string(
    "draft",
    "",
    "Draft model for sd and ouroboros: a path, a trained draft directory, or self:N (the "
    "target's first N layers). Default: the draft shipped for the target, if any.",
)
flags.DEFINE_string("method", "vanilla", f"One of {'|'.join(METHODS)}.")
flags.DEFINE_string("prompt", DEFAULT_PROMPT, "The prompt text.")
flags.DEFINE_integer("max_new_tokens", 128, "Upper bound on generated tokens.")
flags.DEFINE_float("temperature", 0.0, "0 is greedy; > 0 samples.")
flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens when sampling (0: all).")
flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass (1: all).")
flags.DEFINE_integer("seed", 0, "Sampling seed; the same seed gives the same tokens.")
flags.DEFINE_bool("chat", None, "Apply the chat template (default: on when the model has one).")
flags.DEFINE_bool("json", False, "Print the result as one JSON object on the last line.")
flags.DEFINE_string("dtype", "float32", "Parameter dtype: float32 or bfloat16.")
flags.DEFINE_integer("gamma", 4, "sd: tokens the draft model proposes per step.")
flags.DEFINE_integer("ngram_max", 3, "ngram: longest suffix matched against the context.")
flags.DEFINE_integer("ngram_tokens", 10, "ngram: tokens proposed after a match.")
flags.DEFINE_string(
    "phrase_preset",
    "chat",
    "ouroboros/lookahead settings (configs/phrase_drafting.py): chat, code, math, summarization, "
    "translation or cpu.",
)
flags.DEFINE_string(
    "pool",
    "",
    "ouroboros/lookahead: a phrase-pool file; loaded when it exists (warm start) and written "
    "back after the run.",
)
flags.DEFINE_integer(
    "max_cache_len", None, "Cap on prompt + new tokens (default: the model's context)."
)


def _status(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(argv_flags=FLAGS) -> dict:
    """Loads, generates, returns the JSON-able result (raises SpecjaxError on bad input)."""
    from models.loading import load_model
    from specjax.engine import generate
    from specjax.sampling import SamplingConfig

    method = argv_flags.method
    if method not in METHODS:
        raise SpecjaxError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    if method not in AVAILABLE_METHODS:
        raise SpecjaxError(f"method {method} is not available yet")
    if argv_flags.max_new_tokens < 1:
        raise SpecjaxError(f"--max_new_tokens must be >= 1, got {argv_flags.max_new_tokens}")
    if argv_flags.max_cache_len is not None and argv_flags.max_cache_len < 2:
        raise SpecjaxError(f"--max_cache_len must be >= 2, got {argv_flags.max_cache_len}")
    phrase = None
    if argv_flags.pool and method not in ("ouroboros", "lookahead"):
        raise SpecjaxError("--pool is for --method=ouroboros or lookahead")
    if method in ("ouroboros", "lookahead"):
        from configs.phrase_drafting import phrase_drafting

        phrase = phrase_drafting(argv_flags.phrase_preset)
    sampling = SamplingConfig(argv_flags.temperature, argv_flags.top_k, argv_flags.top_p)
    _status(f"loading {argv_flags.model} ...")
    model = load_model(argv_flags.model, argv_flags.dtype)
    if model.tokenizer is None:
        raise SpecjaxError(f"{model.source} has no tokenizer (tokenizer.json) to encode the prompt")
    chat = model.has_chat_template if argv_flags.chat is None else argv_flags.chat
    if chat and not model.has_chat_template:
        raise SpecjaxError(f"--chat: {model.source} has no chat template")
    prompt_ids = encode_prompt(model.tokenizer, argv_flags.prompt, chat)
    from specjax.drafters import make_drafter

    drafter, draft_params = make_drafter(
        method,
        model.config,
        model.params,
        draft=argv_flags.draft or None,
        gamma=argv_flags.gamma,
        max_ngram=argv_flags.ngram_max,
        num_tokens=argv_flags.ngram_tokens,
        dtype=argv_flags.dtype,
        phrase=phrase,
        pool=argv_flags.pool if phrase is not None and os.path.isfile(argv_flags.pool) else None,
    )
    _status(f"generating with {method} (first call compiles) ...")
    result = generate(
        model.config,
        model.params,
        [prompt_ids],
        max_new_tokens=argv_flags.max_new_tokens,
        sampling=sampling,
        eos_ids=model.eos_ids,
        seed=argv_flags.seed,
        max_cache_len=argv_flags.max_cache_len,
        drafter=drafter,
        draft_params=draft_params,
        keep_state=bool(phrase is not None and argv_flags.pool),
    )
    if phrase is not None and argv_flags.pool:
        from specjax.drafters import pool_after
        from specjax.phrase_pool import save_pool

        save_pool(argv_flags.pool, pool_after(result))
    tokens = result.tokens[0]
    return {
        "text": model.tokenizer.decode(tokens, skip_special_tokens=True),
        "tokens": tokens,
        "new_tokens": len(tokens),
        "target_calls": result.target_calls[0],
        "tau": result.tau,
        "drafted": result.drafted[0],
        "accepted": result.accepted[0],
        "acceptance_rate": result.acceptance_rate,
        "seconds": result.seconds,
        "compile_seconds": result.compile_seconds,
        "tokens_per_s": result.tokens_per_s,
        "method": method,
        "model": model.source,
        "prompt_tokens": len(prompt_ids),
        "chat": chat,
    }


def main(argv: list[str]) -> None:
    out = run_or_fail(argv, run, "--prompt='...'")
    if FLAGS.json:
        print(json.dumps(out))
    else:
        print(out["text"])
        _status(
            f"{out['new_tokens']} tokens in {out['seconds']:.2f}s ({out['tokens_per_s']:.1f} tok/s, "
            f"tau {out['tau']:.2f}, compile {out['compile_seconds']:.1f}s)"
        )


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
