"""`python -m train_heads.draft_agreement`: how often a draft's argmax is the target's greedy token
on benchmark prompts, and the greedy-sd tau that follows, without timing anything.

  python -m train_heads.draft_agreement --draft=runs/smollm2_draft/final --gamma=4 \
      --categories=writing,roleplay,reasoning,math,coding,extraction,stem,humanities
  python -m train_heads.draft_agreement --method=redrafter --head=runs/smollm2_redrafter/final \
      --beam_width=2 --beam_length=4

Heads that draft a tree from the target's hidden state (`--method=redrafter`) are predicted the
same way: the drafter proposes its tree at every answer position from the target's teacher-forced
hidden state, a greedy verify accepts the deepest node whose path is the answer's continuation
(`tree_runs`), and the steps follow from those run lengths (`greedy_tree_steps`).

In greedy sd an accepted draft token equals the target's token, so every drafted token that gets
judged has the true prefix behind it: the draft's teacher-forced argmax over the target's own
answer decides each verification. The steps of greedy sd follow from that agreement mask alone
(`greedy_sd_steps`), so the tau printed here is the one `python -m specjax.bench` measures (up to
numerically tied logits; a test checks it against the engine). One target generation and one
draft forward per prompt: minutes where the bench takes tens, which makes it the quick check of a
freshly trained draft on the prompts it will be judged by. Every user mistake is one `error:` line
and exit code 2.
"""

from __future__ import annotations

import functools
import sys
from collections import defaultdict

import jax
import numpy as np
from absl import app, flags

from models.config import ModelConfig
from models.errors import SpecjaxError
from models.transformer import ModelParams
from specjax import methods
from specjax.cli import parse_flags, run_or_fail

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The CLI's flags (defined only when run as a program, never on import)."""
    flags.DEFINE_string("target", "smollm2", "Target: 'smollm2', a GGUF/HF path.")
    flags.DEFINE_string(
        "draft", "shipped", "'shipped' (the trained draft for this target), a path, or self:N."
    )
    flags.DEFINE_string(
        "prompts", "specbench", "specbench, humaneval, a .jsonl file, or several, comma-separated."
    )
    flags.DEFINE_list("categories", [], "Categories to keep (default: all).")
    flags.DEFINE_integer("per_category", 2, "Prompts per category.")
    flags.DEFINE_integer("max_new_tokens", 128, "Target answer length (EOS ends earlier).")
    flags.DEFINE_enum(
        "method", "sd", ["sd", "redrafter"], "sd (a draft LM) or redrafter (a beam head)."
    )
    # --gamma, --head, --beam_width, ... as decode and the bench define them
    methods.define_flags(FLAGS, names=("sd", "redrafter"))
    flags.DEFINE_string("dtype", "float32", "float32 or bfloat16.")


@functools.partial(jax.jit, static_argnums=0)
def _draft_argmax(config: ModelConfig, params: ModelParams, tokens_1xS: jax.Array) -> jax.Array:
    """int32 [1, S]: the draft's greedy next token after each prefix, as a target token id."""
    from train_heads.draft_lm import next_token_logits

    column_1xS = next_token_logits(config, params, tokens_1xS).argmax(-1)
    if params.head_token_ids is None:
        return column_1xS
    return params.head_token_ids[column_1xS]  # a frequent-token head: column -> target id


def agreement_mask(
    config: ModelConfig, params: ModelParams, prompt: list[int], answer: list[int]
) -> np.ndarray:
    """bool [len(answer) - 1]: entry j-1 says the draft, given prompt + answer[:j], picks answer[j].

    answer[0] comes from the target's prefill and is never drafted. The sequence is padded at the
    end to a power-of-two bucket (causal attention: the padding changes no earlier position) so
    similar lengths share one compilation.
    """
    from specjax.engine import prompt_bucket

    seq = list(prompt) + list(answer)
    S = prompt_bucket(len(seq))
    tokens = np.zeros((1, S), np.int32)
    tokens[0, : len(seq)] = seq
    guess = np.asarray(_draft_argmax(config, params, tokens))[0]
    P, n = len(prompt), len(answer)
    return guess[P : P + n - 1] == np.asarray(answer[1:])


def greedy_sd_steps(agree: np.ndarray, gamma: int) -> int:
    """Verify steps greedy sd takes to produce the answer behind `agree` (prefill not counted).

    A step drafts gamma tokens after the last committed one, accepts the leading run the target
    agrees with and adds the target's own next token.
    """
    n = len(agree) + 1  # answer length; answer[0] comes from the prefill
    committed, steps = 1, 0
    while committed < n:
        run = 0
        while run < gamma and committed + run < n and agree[committed + run - 1]:
            run += 1
        committed = min(n, committed + run + 1)
        steps += 1
    return steps


def tree_runs(
    drafter, draft_params, config: ModelConfig, params: ModelParams, prompt, answer
) -> np.ndarray:
    """int [len(answer)]: entry c (1 <= c < n) is how many draft tokens a greedy verify accepts
    when answer[:c] is committed; entry 0 is unused.

    A stateless tree drafter (ReDrafter's beams) proposes from the root answer[c-1] and the
    target's hidden state that predicted it, which a teacher-forced forward over prompt + answer
    gives for every c at once (one propose call over n - 1 rows).
    """
    from specjax.engine import prompt_bucket

    seq = list(prompt) + list(answer)
    P, n = len(prompt), len(answer)
    S = prompt_bucket(len(seq))
    tokens = np.zeros((1, S), np.int32)
    tokens[0, : len(seq)] = seq
    hidden = _hidden(config, params, tokens)[0]  # [S, D]
    c = np.arange(1, n)
    roots = np.asarray(answer, np.int32)[c - 1]
    tree_tokens, parent = (
        np.asarray(x) for x in _propose(drafter, draft_params, hidden[P + c - 2], roots, P + c - 1)
    )
    runs = np.zeros(n, np.int64)
    for row, committed in enumerate(c):
        depth, match = {0: 0}, {0: True}
        for i in range(1, tree_tokens.shape[1]):
            p = int(parent[row, i])
            if p < 0:
                continue
            depth[i] = depth[p] + 1
            at = committed + depth[i] - 1  # the answer token node i stands for
            match[i] = match[p] and at < n and int(tree_tokens[row, i]) == answer[at]
            if match[i]:
                runs[committed] = max(runs[committed], depth[i])
    return runs


def greedy_tree_steps(runs: np.ndarray) -> int:
    """Verify steps to produce the answer behind `runs` (`tree_runs`; prefill not counted)."""
    n = len(runs)
    committed, steps = 1, 0
    while committed < n:
        committed = min(n, committed + int(runs[committed]) + 1)
        steps += 1
    return steps


@functools.partial(jax.jit, static_argnums=0)
def _hidden(config: ModelConfig, params: ModelParams, tokens_1xS: jax.Array) -> jax.Array:
    from models.transformer import sequence_hidden

    return sequence_hidden(config, params, tokens_1xS)


@functools.partial(jax.jit, static_argnums=0)
def _propose(drafter, draft_params, hidden_ND, root_N, position_N):
    """(tokens, parent) of the trees a stateless drafter proposes for N (root, hidden) pairs."""
    from specjax.candidates import DraftContext
    from specjax.sampling import SamplingConfig

    N = root_N.shape[0]
    ctx = DraftContext(
        root=root_N, root_position=position_N, hidden=hidden_ND, done=jax.numpy.zeros(N, bool)
    )
    keys = jax.random.split(jax.random.key(0), N)
    cands, _ = drafter.propose(draft_params, None, ctx, keys, SamplingConfig())
    return cands.tokens, cands.parent


def run() -> dict[str, dict[str, float]]:
    """{category or "all": {prompts, tokens, top1, tau}} for the flags' draft and prompts."""
    from tqdm import tqdm

    from specjax.chat import encode_prompt
    from specjax.engine import generate
    from specjax.methods import make_drafter
    from specjax.prompt_sets import load_prompts
    from train_heads.target import load_target

    gamma = methods.parse_gamma(FLAGS.gamma)
    settings = methods.settings_from_flags(FLAGS.method, FLAGS)  # checked before any loading
    if gamma == "auto" and FLAGS.method == "sd":
        raise SpecjaxError("--gamma: this tool predicts a fixed gamma's calls; give an integer")
    if FLAGS.max_new_tokens < 2:
        raise SpecjaxError(f"--max_new_tokens must be >= 2, got {FLAGS.max_new_tokens}")
    items = load_prompts(FLAGS.prompts, FLAGS.categories, FLAGS.per_category)
    print(f"loading {FLAGS.target} ...", file=sys.stderr, flush=True)
    target = load_target(FLAGS.target, FLAGS.dtype)
    if target.tokenizer is None:
        raise SpecjaxError(f"{FLAGS.target} has no tokenizer to encode text prompts with")
    spec = None if FLAGS.draft in ("", "shipped") else FLAGS.draft
    drafter, draft_params = make_drafter(
        FLAGS.method,
        target.config,
        target.params,
        draft=spec,
        dtype=FLAGS.dtype,
        settings=settings,
    )
    # per category and "all": prompts, answer tokens, drafts the target agrees with, target calls
    sums: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(4, np.int64))
    for category, text in tqdm(items, desc="agreement", unit="prompt", file=sys.stderr):
        prompt = encode_prompt(target.tokenizer, text, target.has_chat_template)
        answer = generate(
            target.config,
            target.params,
            [prompt],
            max_new_tokens=FLAGS.max_new_tokens,
            eos_ids=target.eos_ids,
        ).tokens[0]
        if FLAGS.method == "sd":
            agree = agreement_mask(drafter.config, draft_params, prompt, answer)
            row = np.array([1, len(answer), agree.sum(), 1 + greedy_sd_steps(agree, gamma)])
        else:  # top-1: the first drafted token matches (a beam's, any of them)
            runs = tree_runs(drafter, draft_params, target.config, target.params, prompt, answer)
            row = np.array([1, len(answer), (runs[1:] > 0).sum(), 1 + greedy_tree_steps(runs)])
        sums[category] += row
        sums["all"] += row
    if sums["all"][1] == sums["all"][0]:
        raise SpecjaxError("every answer ended at its first token: nothing to draft")
    return {
        k: {"prompts": int(p), "tokens": int(t), "top1": h / max(t - p, 1), "tau": t / c}
        for k, (p, t, h, c) in sums.items()
    }


def main(argv: list[str]) -> None:
    table = run_or_fail(argv, run, "--draft=DIR")
    if FLAGS.method == "sd":
        print(f"greedy sd, gamma {FLAGS.gamma}, draft {FLAGS.draft}")
    else:
        width, length = methods.settings_from_flags("redrafter", FLAGS).beam_shape()
        print(f"greedy redrafter, W {width}, L {length}, head {FLAGS.head or 'shipped'}")
    print("| category | prompts | answer tokens | draft top-1 | predicted tau |")
    print("|---|---|---|---|---|")
    for key in [k for k in table if k != "all"] + ["all"]:
        r = table[key]
        print(f"| {key} | {r['prompts']} | {r['tokens']} | {r['top1']:.3f} | {r['tau']:.2f} |")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
