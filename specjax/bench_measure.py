"""What the bench measures besides a run's own counts: the machine's copy bandwidth (the memory
roofline), peak memory, and how far an approximate method's output is from the target (agreement
with vanilla greedy and with the target's own greedy choice at each position; the target's NLL of a
sampled output). The verify-cost curve c(T) is
`specjax.verify_cost`'s, shared with `--gamma=auto`."""

from __future__ import annotations

import time


def copy_bandwidth_gbs() -> float:
    """Read + write bytes per second of a large memcpy (the machine's memory roofline)."""
    import numpy as np

    a = np.ones(64 * 1024 * 1024, np.float32)
    b = np.empty_like(a)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(b, a)
        times.append(time.perf_counter() - t0)
    return 2 * a.nbytes / min(times) / 1e9


def peak_memory_mb() -> dict:
    """Peak host RSS of this process so far, and the accelerator's peak where JAX reports it."""
    import resource

    import jax

    out = {"host_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
    return out


def agreement(tokens: list[int], vanilla: list[int]) -> float:
    """Fraction of positions (over the longer output) where the tokens equal vanilla greedy's:
    how far an approximate method strays from the target (1.0 for a lossless one)."""
    n = max(len(tokens), len(vanilla), 1)
    return sum(a == b for a, b in zip(tokens, vanilla, strict=False)) / n


def _output_logits(config, params, prompt: list[int], tokens: list[int]):
    """float32 [len(tokens), V]: the target's logits for each output token, given the prompt and
    the output before it (one forward over the whole sequence)."""
    import jax.numpy as jnp
    import numpy as np

    from models.transformer import lm_logits, sequence_hidden

    seq = np.asarray([prompt + tokens], np.int32)
    hidden = sequence_hidden(config, params, jnp.asarray(seq))
    return lm_logits(params, hidden[:, len(prompt) - 1 : -1])[0]


def target_nll(config, params, prompt: list[int], tokens: list[int], temperature: float) -> float:
    """The target's mean negative log-likelihood per token of `tokens` after `prompt`, at the
    sampling temperature (no top-k/top-p truncation, so every token has finite NLL): a sampled
    output's distance from the target's distribution. An exact method's value matches vanilla's
    within sampling noise; an approximate one drifts above it."""
    import jax
    import jax.numpy as jnp

    if not tokens:
        return 0.0
    logits = _output_logits(config, params, prompt, tokens) / temperature
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, jnp.asarray(tokens)[:, None], axis=1)
    return float(-jnp.mean(picked))


def target_choice_rate(config, params, prompt: list[int], tokens: list[int]) -> float:
    """Fraction of a greedy output's tokens that are the target's own argmax after the output's
    own prefix (1.0 for a lossless method): the per-token error of an approximate rule. Agreement
    with vanilla's whole answer falls to the point of the first wrong token and stays there, since
    the rest of the answer follows that token; this counts each unchecked wrong token once."""
    import jax.numpy as jnp

    if not tokens:
        return 1.0
    argmax = jnp.argmax(_output_logits(config, params, prompt, tokens), axis=-1)
    return float(jnp.mean(argmax == jnp.asarray(tokens)))
