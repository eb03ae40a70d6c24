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

from models.errors import SpecjaxError
from specjax.acceptance import POLICIES
from specjax.chat import encode_prompt
from specjax.cli import parse_flags, run_or_fail
from specjax.methods import (
    REGISTRY,
    acceptance_for,
    define_flags,
    method_with_needs,
    settings_from_flags,
)
from specjax.multihost import is_primary

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
flags.DEFINE_string("method", "vanilla", f"One of {'|'.join(REGISTRY)}.")
flags.DEFINE_string("prompt", DEFAULT_PROMPT, "The prompt text.")
flags.DEFINE_integer("max_new_tokens", 128, "Upper bound on generated tokens.")
flags.DEFINE_float("temperature", 0.0, "0 is greedy; > 0 samples.")
flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens when sampling (0: all).")
flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass (1: all).")
flags.DEFINE_integer("seed", 0, "Sampling seed; the same seed gives the same tokens.")
flags.DEFINE_bool("chat", None, "Apply the chat template (default: on when the model has one).")
flags.DEFINE_bool("json", False, "Print the result as one JSON object on the last line.")
flags.DEFINE_string("dtype", "float32", "Parameter dtype: float32 or bfloat16.")
define_flags(FLAGS)  # every registered method's settings (--gamma, --ngram_max, ...)
flags.DEFINE_string(
    "pool",
    "",
    "ouroboros/lookahead: a phrase-pool file; loaded when it exists (warm start) and written "
    "back after the run.",
)
flags.DEFINE_integer(
    "max_cache_len", None, "Cap on prompt + new tokens (default: the model's context)."
)
flags.DEFINE_enum(
    "accept",
    "auto",
    ["auto", *POLICIES],
    "Acceptance policy for speculative methods: exact (lossless), typical (Medusa's typical "
    "acceptance) or sprinter (SPRINTER's: only the last draft checked); the last two are "
    "approximate, reported as lossless=false. auto: the method's own (exact, but sprinter for "
    "sprinter).",
)
flags.DEFINE_string(
    "mesh",
    "",
    "Shard the target over a device mesh: auto (every device, on the model axis) or DATAxMODEL "
    "(2x4). Default: none on one process; auto in a multi-process run (--distributed).",
)
flags.DEFINE_bool(
    "stream",
    None,
    "Print the text as it is produced (default: on when stdout is a terminal; --json never streams).",
)


def _status(msg: str) -> None:
    if is_primary():  # one process of a multi-process run speaks for all
        print(msg, file=sys.stderr, flush=True)


def run(argv_flags=FLAGS, on_text=None) -> dict:
    """Loads, generates, returns the JSON-able result (raises SpecjaxError on bad input).

    `on_text(piece)`, when given, receives the new text as it is produced (streaming).
    """
    from models.loading import load_model
    from specjax.engine import generate, stream
    from specjax.sampling import SamplingConfig
    from specjax.sharding import parse_mesh_flag, target_on_mesh

    parse_mesh_flag(argv_flags.mesh)  # a malformed --mesh fails before any loading
    method = argv_flags.method
    spec = method_with_needs(method, pool=bool(argv_flags.pool), head=bool(argv_flags.head))
    settings = settings_from_flags(method, argv_flags)
    if argv_flags.max_new_tokens < 1:
        raise SpecjaxError(f"--max_new_tokens must be >= 1, got {argv_flags.max_new_tokens}")
    if argv_flags.max_cache_len is not None and argv_flags.max_cache_len < 2:
        raise SpecjaxError(f"--max_cache_len must be >= 2, got {argv_flags.max_cache_len}")
    accept, acceptance = acceptance_for(method, argv_flags.accept)
    keep_pool = bool(argv_flags.pool)
    sampling = SamplingConfig(argv_flags.temperature, argv_flags.top_k, argv_flags.top_p)
    _status(f"loading {argv_flags.model} ...")
    model = load_model(argv_flags.model, argv_flags.dtype)
    if model.tokenizer is None:
        raise SpecjaxError(f"{model.source} has no tokenizer (tokenizer.json) to encode the prompt")
    chat = model.has_chat_template if argv_flags.chat is None else argv_flags.chat
    if chat and not model.has_chat_template:
        raise SpecjaxError(f"--chat: {model.source} has no chat template")
    prompt_ids = encode_prompt(model.tokenizer, argv_flags.prompt, chat)
    from specjax.methods import make_drafter

    drafter, draft_params = make_drafter(
        method,
        model.config,
        model.params,
        draft=argv_flags.draft or None,
        dtype=argv_flags.dtype,
        pool=argv_flags.pool if keep_pool and os.path.isfile(argv_flags.pool) else None,
        settings=settings,
        tokenizer=model.tokenizer,
    )
    if getattr(settings, "gamma", None) == "auto":
        _status(f"--gamma=auto chose gamma {drafter.gamma} for this machine")
    params, mesh = target_on_mesh(model.params, argv_flags.mesh)
    if mesh is not None:
        _status(f"target sharded over a {dict(mesh.shape)} mesh of {mesh.size} devices")
    _status(f"generating with {method} (first call compiles) ...")
    kwargs = dict(
        mesh=mesh,
        max_new_tokens=argv_flags.max_new_tokens,
        sampling=sampling,
        eos_ids=model.eos_ids,
        seed=argv_flags.seed,
        max_cache_len=argv_flags.max_cache_len,
        drafter=drafter,
        draft_params=draft_params,
        acceptance=acceptance,
        keep_state=keep_pool,
    )
    if on_text is None:
        result = generate(model.config, params, [prompt_ids], **kwargs)
    else:
        tokens_stream = stream(model.config, params, [prompt_ids], **kwargs)
        _print_as_produced(tokens_stream, model.tokenizer, on_text)
        result = tokens_stream.result
    if keep_pool and is_primary():
        from specjax.methods import pool_after
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
        "accept": accept if spec.speculative else None,
        "lossless": spec.lossless and acceptance.lossless,
        "model": model.source,
        "prompt_tokens": len(prompt_ids),
        "chat": chat,
    }


def _print_as_produced(tokens_stream, tokenizer, on_text) -> None:
    """Decodes the growing answer after every chunk and hands on the new text; text that ends in
    an incomplete UTF-8 sequence waits for the next chunk."""
    tokens: list[int] = []
    shown = ""
    for chunk in tokens_stream:
        tokens += chunk[0]
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        if text.endswith("\ufffd") or not text.startswith(shown):
            continue
        if len(text) > len(shown):
            on_text(text[len(shown) :])
            shown = text
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    if text.startswith(shown) and len(text) > len(shown):
        on_text(text[len(shown) :])


def _write(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def main(argv: list[str]) -> None:
    streaming = not FLAGS.json and (sys.stdout.isatty() if FLAGS.stream is None else FLAGS.stream)
    streaming = streaming and is_primary()
    out = run_or_fail(argv, lambda: run(FLAGS, _write if streaming else None), "--prompt='...'")
    if not is_primary():
        return
    if FLAGS.json:
        print(json.dumps(out))
        return
    print("" if streaming else out["text"], flush=True)
    _status(
        f"{out['new_tokens']} tokens in {out['seconds']:.2f}s ({out['tokens_per_s']:.1f} tok/s, "
        f"tau {out['tau']:.2f}, compile {out['compile_seconds']:.1f}s)"
    )


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
