"""Named settings for the phrase-pool drafters (`--method=ouroboros`, `--method=lookahead`).

The task presets are the Ouroboros paper's scripts (Zhao et al. 2024, appendix and the repo's
benchmark scripts): code (HumanEval/MBPP) gamma 11, W = G = 20, N = 7; math (GSM8K) gamma 4,
W = G = 15, N = 6; summarization and translation gamma 4, W = G = 13, N = 5; chat (its Spec-Bench
script) gamma 6, W = G = 15, N = 5; 3 suffix branches throughout. `cpu` is ours: on a CPU a
forward's cost grows with its tokens (the bench's c(T)), so it trades window and guess set for
small blocks. A field given on the command line overrides the preset.
"""

from __future__ import annotations

import dataclasses

from models.errors import SpecjaxError


@dataclasses.dataclass(frozen=True)
class PhraseDrafting:
    """gamma: draft tokens per step (ouroboros); window: W, the Jacobi window; ngram: N (phrases
    hold N-1 tokens); guess_set: phrases checked per forward; pool_capacity: G, phrases per bucket;
    topk_suffixes: branches after the trunk (ouroboros); buckets: hash buckets of the pool."""

    gamma: int = 6
    window: int = 15
    ngram: int = 5
    guess_set: int = 15
    pool_capacity: int = 15
    topk_suffixes: int = 3
    buckets: int = 4096

    def validate(self) -> None:
        checks = {
            "gamma": self.gamma >= 1,
            "window": self.window >= 0,
            "ngram": self.ngram >= 2,
            "guess_set": self.guess_set >= 0,
            "pool_capacity": self.pool_capacity >= 1,
            "topk_suffixes": self.topk_suffixes >= 0,
            "buckets": self.buckets >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise SpecjaxError(
                f"invalid phrase-drafting setting {bad[0]}={getattr(self, bad[0])} (gamma, "
                "pool_capacity, buckets >= 1; ngram >= 2; the others >= 0)"
            )


PRESETS = {
    "chat": PhraseDrafting(gamma=6, window=15, ngram=5, guess_set=15, pool_capacity=15),
    "code": PhraseDrafting(gamma=11, window=20, ngram=7, guess_set=20, pool_capacity=20),
    "math": PhraseDrafting(gamma=4, window=15, ngram=6, guess_set=15, pool_capacity=15),
    "summarization": PhraseDrafting(gamma=4, window=13, ngram=5, guess_set=13, pool_capacity=13),
    "translation": PhraseDrafting(gamma=4, window=13, ngram=5, guess_set=13, pool_capacity=13),
    "cpu": PhraseDrafting(gamma=4, window=4, ngram=4, guess_set=4, pool_capacity=8),
}


# The Ouroboros paper's setting for each kind of task (benchmark categories), "chat" otherwise.
TASK_PRESETS = {
    "humaneval": "code",
    "coding": "code",
    "math_reasoning": "math",
    "math": "math",
    "summarization": "summarization",
    "translation": "translation",
}


def phrase_drafting(name: str, **overrides) -> PhraseDrafting:
    """A preset with some fields replaced; unknown names or fields are one SpecjaxError line."""
    if name not in PRESETS:
        raise SpecjaxError(f"unknown phrase preset {name!r} (choose from {', '.join(PRESETS)})")
    fields = {f.name for f in dataclasses.fields(PhraseDrafting)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise SpecjaxError(f"unknown phrase-drafting field {unknown[0]!r}")
    cfg = dataclasses.replace(
        PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}
    )
    cfg.validate()
    return cfg
