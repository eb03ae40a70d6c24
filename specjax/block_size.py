"""`--gamma=auto`: the draft length that maximises expected tokens per second on this machine.

A step that drafts gamma tokens yields tau(gamma) = 1 + a_1 + a_1 a_2 + ... + a_1...a_gamma tokens
on average (a_k: the chance the k-th draft survives given the ones before it did) and costs one
target forward over gamma + 1 tokens plus the drafting: c(gamma + 1) target forwards and a draft
forward over 2 tokens plus gamma - 1 over one. Both sides are measured, never assumed:
- c(T) and the draft's forward times by `specjax.verify_cost` (once per machine, cached);
- a_k by decoding a few built-in requests with the longest gamma considered and reading the
  engine's accepted-length counts (`GenerationResult.acceptance_by_depth`), cached per target, draft
  and machine.
So one config picks a short block on a CPU, where c(T) climbs, and a long one on a GPU, where it
stays near 1. The choice is for greedy decoding's acceptance; sampling accepts a little less.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import jax
import numpy as np
from absl import logging

from models.config import ModelConfig
from models.derived_cache import cache_root
from models.fingerprint import target_fingerprint
from models.progress import phase
from models.transformer import ModelParams
from specjax.verify_cost import cached_cost_curve

MAX_GAMMA = 8
CALIBRATION_TOKENS = 96
# Requests of the kinds chat traffic has (writing, code, reasoning, explanation), written for
# this module; none is a benchmark question.
CALIBRATION_REQUESTS = (
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Write a Python function that returns the n-th Fibonacci number, with a docstring.",
    "A shop sells pens at 3 dollars each. How much do 7 pens cost? Explain step by step.",
    "Explain how a refrigerator keeps food cold, in simple words.",
)


@dataclasses.dataclass(frozen=True)
class BlockPlan:
    """The chosen gamma, and for every gamma considered the predicted tau and speed vs vanilla."""

    gamma: int
    tau: dict[int, float]
    speedup: dict[int, float]
    acceptance_by_depth: list[float]

    def describe(self) -> str:
        g = self.gamma
        return (
            f"gamma=auto chose {g}: predicted tau {self.tau[g]:.2f}, "
            f"{self.speedup[g]:.2f}x vanilla on this machine (a_k = "
            + ", ".join(f"{a:.2f}" for a in self.acceptance_by_depth[:g])
            + ")"
        )


def expected_tau(acceptance_by_depth: list[float], gamma: int) -> float:
    """1 + sum over k <= gamma of the chance that the first k drafts all survive."""
    survive, tau = 1.0, 1.0
    for a in acceptance_by_depth[:gamma]:
        survive *= a
        tau += survive
    return tau


def plan_gamma(
    acceptance_by_depth: list[float],
    target_ms: dict[int, float],
    draft_ms: dict[int, float],
    max_gamma: int = MAX_GAMMA,
) -> BlockPlan:
    """The gamma in [1, max_gamma] with the most expected tokens per millisecond.

    target_ms[T]: one target forward over T tokens; draft_ms[1], draft_ms[2]: the draft's.
    """
    tau, speedup = {}, {}
    for g in range(1, max_gamma + 1):
        step_ms = target_ms[g + 1] + draft_ms[2] + (g - 1) * draft_ms[1]
        tau[g] = expected_tau(acceptance_by_depth, g)
        speedup[g] = tau[g] / step_ms * target_ms[1]
    best = max(speedup, key=lambda g: (round(speedup[g], 6), -g))  # ties: the shorter block
    return BlockPlan(best, tau, speedup, list(acceptance_by_depth))


def _params_digest(tree) -> str:
    """Identifies a drafter's weights: shapes and a spread of values of every array."""
    h = hashlib.sha256()
    for x in jax.tree.leaves(tree):
        flat = np.asarray(jax.device_get(x)).reshape(-1)
        idx = np.linspace(0, flat.size - 1, num=min(256, flat.size)).astype(np.int64)
        h.update(str((flat.shape, flat.dtype)).encode())
        h.update(flat[idx].astype(np.float32).tobytes())
    return h.hexdigest()[:16]


def measured_acceptance(
    config: ModelConfig, params: ModelParams, drafter, draft_params, tokenizer, remeasure=False
) -> list[float]:
    """a_1 .. a_gamma of `drafter` (built at the longest gamma considered) on the calibration
    requests, greedy; cached per target, draft weights and drafter settings."""
    from specjax.chat import encode_prompt
    from specjax.engine import generate

    ident = json.dumps(
        {
            "target": target_fingerprint(config, params),
            "L": config.L,
            "drafter": repr(drafter),
            "draft": _params_digest(draft_params),
            "backend": jax.default_backend(),
            "tokens": CALIBRATION_TOKENS,
            "requests": CALIBRATION_REQUESTS,
        },
        sort_keys=True,
    )
    path = cache_root() / "acceptance" / f"{hashlib.sha256(ident.encode()).hexdigest()[:16]}.json"
    if not remeasure and path.is_file():
        try:
            return [float(a) for a in json.loads(path.read_text())["acceptance_by_depth"]]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    chat = getattr(tokenizer, "chat_template", None) is not None
    prompts = [encode_prompt(tokenizer, r, chat) for r in CALIBRATION_REQUESTS]
    logging.info("gamma=auto: measuring the draft's acceptance on %d requests", len(prompts))
    result = generate(
        config, params, prompts, max_new_tokens=CALIBRATION_TOKENS, drafter=drafter,
        draft_params=draft_params, eos_ids=config.eos_token_ids,
    )  # fmt: skip
    acceptance = result.acceptance_by_depth
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"acceptance_by_depth": acceptance, "ident": ident}))
    except OSError:
        pass
    return acceptance


def auto_gamma(
    config: ModelConfig,
    params: ModelParams,
    draft_config: ModelConfig,
    draft_params: ModelParams,
    tokenizer,
    remeasure: bool = False,
    max_gamma: int | None = None,
) -> BlockPlan:
    """The sd draft length in [1, max_gamma (default MAX_GAMMA)] for this target, draft and
    machine (see the module docstring)."""
    from specjax.drafters.draft_model import DraftModelDrafter

    max_gamma = max_gamma or MAX_GAMMA

    Ts = tuple(range(1, max_gamma + 2))
    with phase("gamma=auto: the verify cost c(T) on this machine (measured once, then cached)"):
        target = cached_cost_curve(config, params, Ts, "target", remeasure)["ms"]
        draft = cached_cost_curve(draft_config, draft_params, (1, 2), "draft", remeasure)["ms"]
    longest = DraftModelDrafter(config=draft_config, gamma=max_gamma)
    with phase("gamma=auto: the draft's acceptance per depth (measured once, then cached)"):
        acceptance = measured_acceptance(
            config, params, longest, draft_params, tokenizer, remeasure
        )
    return plan_gamma(acceptance, target, draft, max_gamma)
