"""An answer store: what the target usually writes after one or two tokens, read from its own answers.

Prompt lookup (`specjax.drafters.ngram`) copies from the context, so it proposes nothing where
the answer says something the context never did. The target's answers to other requests often
do say it: a small instruct model reuses its phrasings ("Here's a ...", "In conclusion, ...",
the boilerplate of a Python function). Retrieval-based drafting (REST, He et al. 2023) drafts
from such a datastore; this one is a table from the last one or two tokens to the continuation
that followed them most often in the target's self-distilled answers (`train_heads.make_data`),
chosen token by token: the commonest next token, then the commonest one after it among the
occurrences that agreed so far, and so on. Drafting from it is deterministic, so the exact
acceptance rule keeps a method lossless whatever the store holds.

On disk: `store_config.json` (format, the target's fingerprint, the shapes, how it was built)
and `store.safetensors` (int32 and uint32 arrays), never a pickle. A store reads token ids, so it
belongs to one tokenizer: loading checks the target's fingerprint, and a missing, corrupt or
foreign directory is one SpecjaxError line.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from models.config import ModelConfig
from models.errors import SpecjaxError
from models.fingerprint import check_fingerprint
from models.transformer import ModelParams

FORMAT = "specjax-answer-store-v1"
CONFIG_FILE = "store_config.json"
ARRAYS_FILE = "store.safetensors"
NONE = -1  # no token: the continuation ended (or nothing followed the key)


@struct.dataclass
class AnswerStore:
    """Attributes (L: the longest continuation kept, N: the distinct token pairs seen):
    after_token: int32 [V, L] the continuation after a single token (NONE-padded).
    pair_key: uint32 [N + 1] `pair_key(a, b)` of every pair, sorted, then a sentinel.
    pair_tokens: int32 [N + 1, 2] the pair itself (two pairs may share a key when V^2 > 2^32).
    pair_next: int32 [N + 1, L] the continuation after the pair (NONE-padded).
    """

    after_token: jax.Array
    pair_key: jax.Array
    pair_tokens: jax.Array
    pair_next: jax.Array

    @property
    def length(self) -> int:
        return int(self.after_token.shape[1])


def pair_key(a, b, vocab_size: int):
    """uint32 key of the token pair (a, b): a * V + b, modulo 2^32 (exact for V <= 65536); on
    device for traced tokens, on the host (Python ints, no overflow warnings) for the build."""
    if isinstance(a, jax.Array) or isinstance(b, jax.Array):
        return jnp.asarray(a).astype(jnp.uint32) * jnp.uint32(vocab_size) + jnp.asarray(b).astype(
            jnp.uint32
        )
    return np.uint32((int(a) * vocab_size + int(b)) % 2**32)


def _greedy_continuation(seqs: Sequence[Sequence[int]], starts, length: int) -> list[int]:
    """The continuation chosen token by token among `starts` ((sequence, position) pairs): the
    commonest token at each offset among the occurrences that agree so far (ties: smaller id)."""
    out: list[int] = []
    for i in range(length):
        counts = Counter(seqs[s][p + i] for s, p in starts if p + i < len(seqs[s]))
        if not counts:
            break
        best = min(counts, key=lambda t: (-counts[t], t))
        out.append(best)
        starts = [(s, p) for s, p in starts if p + i < len(seqs[s]) and seqs[s][p + i] == best]
    return out + [NONE] * (length - len(out))


def build_answer_store(
    answers: Sequence[Sequence[int]], vocab_size: int, length: int = 8
) -> AnswerStore:
    """The store of `answers` (token id lists, the target's answers without their prompts)."""
    if length < 1:
        raise SpecjaxError(f"an answer store keeps continuations of >= 1 token, got {length}")
    seqs = [list(map(int, a)) for a in answers]
    bad = next((t for seq in seqs for t in seq if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise SpecjaxError(f"answer token id {bad} is outside the vocabulary of {vocab_size}")
    after_one, after_two = defaultdict(list), defaultdict(list)
    for s, seq in enumerate(seqs):
        for p in range(1, len(seq)):
            after_one[seq[p - 1]].append((s, p))
            if p >= 2:
                after_two[(seq[p - 2], seq[p - 1])].append((s, p))
    after_token = np.full((vocab_size, length), NONE, np.int32)
    for t, starts in after_one.items():
        after_token[t] = _greedy_continuation(seqs, starts, length)
    # sorted by key; where two pairs share a key (V^2 > 2^32), the commoner one is kept
    key_of = {ab: int(pair_key(*ab, vocab_size)) for ab in after_two}
    pairs = sorted(after_two, key=lambda ab: (key_of[ab], -len(after_two[ab]), ab))
    keys = [key_of[ab] for ab in pairs]
    keep = [i for i in range(len(pairs)) if i == 0 or keys[i] != keys[i - 1]]
    pair_next = np.full((len(keep) + 1, length), NONE, np.int32)
    for row, i in enumerate(keep):
        pair_next[row] = _greedy_continuation(seqs, after_two[pairs[i]], length)
    sentinel_key = np.iinfo(np.uint32).max
    return AnswerStore(
        after_token=after_token,
        pair_key=np.array([keys[i] for i in keep] + [sentinel_key], np.uint32),
        pair_tokens=np.array([pairs[i] for i in keep] + [(NONE, NONE)], np.int32).reshape(-1, 2),
        pair_next=pair_next,
    )


def store_lookup(store: AnswerStore, seq_S: jax.Array, length, k: int):
    """(proposal int32 [k], count) for one row whose sequence (root included) is seq[:length]:
    the store's continuation after its last two tokens, or after its last one where the pair was
    never seen; `count` is how many of the proposal's leading tokens the store has."""
    V = store.after_token.shape[0]
    last = seq_S[jnp.maximum(length - 1, 0)]
    prev = seq_S[jnp.maximum(length - 2, 0)]
    i = jnp.minimum(
        jnp.searchsorted(store.pair_key, pair_key(prev, last, V)), store.pair_key.shape[0] - 1
    )
    pair_hit = (length >= 2) & (store.pair_tokens[i, 0] == prev) & (store.pair_tokens[i, 1] == last)
    nxt = jnp.where(pair_hit, store.pair_next[i], store.after_token[jnp.clip(last, 0, V - 1)])
    L = nxt.shape[0]
    nxt = nxt[:k] if k <= L else jnp.concatenate([nxt, jnp.full((k - L,), NONE, jnp.int32)])
    count = jnp.sum(jnp.cumprod(nxt >= 0)) * (length >= 1)
    return jnp.maximum(nxt, 0), count.astype(jnp.int32)


def save_answer_store(out: str | Path, store: AnswerStore, fingerprint: dict, built: dict) -> Path:
    """Writes `store` to the directory `out` (`built`: how it was made, for the record)."""
    from safetensors.numpy import save_file

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SpecjaxError(f"{out} is a file, not a directory to write an answer store to")
    out.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(getattr(store, k)) for k in _SHAPES}
    save_file(arrays, str(out / ARRAYS_FILE))
    meta = {
        "format": FORMAT,
        "target": {"fingerprint": fingerprint},
        "vocab_size": int(store.after_token.shape[0]),
        "length": store.length,
        "pairs": int(store.pair_key.shape[0] - 1),
        "built": built,
    }
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return out


_SHAPES = {  # field: (dtype, shape from V, N + 1, L)
    "after_token": (np.int32, lambda V, N, L: (V, L)),
    "pair_key": (np.uint32, lambda V, N, L: (N,)),
    "pair_tokens": (np.int32, lambda V, N, L: (N, 2)),
    "pair_next": (np.int32, lambda V, N, L: (N, L)),
}


def load_answer_store(path: str | Path, config: ModelConfig, params: ModelParams) -> AnswerStore:
    """The store at `path`, checked against the target; one SpecjaxError line when it is not one."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    what = f"answer store {path}"
    for name in (CONFIG_FILE, ARRAYS_FILE):
        if not (path / name).is_file():
            raise SpecjaxError(f"{what}: missing {name}")
    try:
        meta = json.loads((path / CONFIG_FILE).read_text())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{CONFIG_FILE} is not a {FORMAT} config")
        recorded = meta["target"]["fingerprint"]
        if not isinstance(recorded, dict):
            raise ValueError("no target fingerprint")
        arrays = load_file(str(path / ARRAYS_FILE))
        V, L = int(meta["vocab_size"]), int(meta["length"])
        N = int(meta["pairs"]) + 1
        for name, (dtype, shape) in _SHAPES.items():
            a = arrays[name]
            if a.dtype != dtype or a.shape != shape(V, N, L):
                raise ValueError(f"{name} is {a.dtype}{list(a.shape)}")
        arrays = {name: arrays[name] for name in _SHAPES}
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
        raise SpecjaxError(f"{what} is not a valid answer store ({e})") from None
    check_fingerprint(recorded, config, params, what)
    if V != config.V:
        raise SpecjaxError(f"{what} has {V} token ids, the target {config.V}")
    _check_contents(arrays, V, what)
    return AnswerStore(**{k: jnp.asarray(v) for k, v in arrays.items()})


def _check_contents(arrays: dict[str, np.ndarray], V: int, what: str) -> None:
    """Every id a draft could take lies in the vocabulary (an id past it would reach the
    target's embedding as a NaN row), and the pair keys are sorted, their pairs' own, with the
    sentinel last: one SpecjaxError line otherwise."""
    pairs, keys = arrays["pair_tokens"], arrays["pair_key"]
    problems = []
    for name in ("after_token", "pair_next"):
        if np.any((arrays[name] < NONE) | (arrays[name] >= V)):
            problems.append(f"{name} holds ids outside [-1, {V})")
    if np.any((pairs[:-1] < 0) | (pairs[:-1] >= V)) or np.any(pairs[-1] != NONE):
        problems.append("pair_tokens holds ids outside the vocabulary")
    elif np.any(np.diff(keys.astype(np.int64)) < 0):
        problems.append("pair keys not sorted")
    elif len(pairs) > 1 and not np.array_equal(
        keys[:-1], pair_key(jnp.asarray(pairs[:-1, 0]), jnp.asarray(pairs[:-1, 1]), V)
    ):
        problems.append("pair keys do not match their pairs")
    if problems:
        raise SpecjaxError(f"{what} is not a valid answer store ({'; '.join(problems)})")
