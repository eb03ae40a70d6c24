"""Self-distillation data: the target's own answers to the training prompts, as token shards.

A drafter is judged by how often it proposes what the *target* would say next, so it is trained
on the target's outputs rather than on human text (ReDrafter, Cheng et al. 2024, §4, reports about
10 % better acceptance from self-distilled data). The answers come from the project's own jitted
`generate` (greedy by default), batched with a fixed batch size so every batch shares one
compilation.

On disk (`out_dir/`):
  shard_00000.npz ...  numpy arrays, never pickles: `tokens` int32 [sum of lengths] (prompt then
                       answer, per example, concatenated), `offsets` int64 [n+1], `prompt_len`
                       int32 [n], `prompt_index` int32 [n] (position in the prompt list).
                       With `hidden` / `topk`, the target's teacher-forced outputs at every
                       position of those sequences, aligned with `tokens` (row t is the target
                       after reading tokens[: t+1]): `hidden` float16 [sum, D] (after the final
                       norm, what Medusa/ReDrafter-style heads read) and `topk_ids` int32 /
                       `topk_logits` float32 [sum, k] (its k best next tokens, for KL-style
                       distillation). Off by default: hidden states are 2 x D bytes per token.
  manifest.json        the target and its fingerprint, the settings, and the finished shards.
Each shard and the manifest are written to a temporary name and renamed, so an interrupted run
leaves only whole shards; rerunning with the same settings skips the shards the manifest lists.
Training may read several such directories at once (`data_dir="a,b"`): data grows by adding a
directory, made with `exclude_prompts` so no prompt is answered twice.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import zipfile
from collections.abc import Collection, Sequence
from pathlib import Path

import jax
import numpy as np
from absl import logging
from tqdm import tqdm

from models.config import ModelConfig
from models.errors import SpecjaxError
from models.fingerprint import target_fingerprint
from models.loading import Model
from models.transformer import ModelParams, lm_logits, sequence_hidden
from specjax.chat import encode_prompt
from specjax.engine import generate, prompt_bucket
from specjax.sampling import SamplingConfig

MANIFEST = "manifest.json"
FORMAT = "specjax-selfdistill-v1"
PAD_TOKEN = 0  # fills tokens past each example's end; its loss mask is False
SHARD_ARRAYS = ("tokens", "offsets", "prompt_len", "prompt_index")
FEATURE_ARRAYS = ("hidden", "topk_ids", "topk_logits")  # optional, one row per token


def shard_name(i: int) -> str:
    return f"shard_{i:05d}.npz"


def encode_prompts(tokenizer, prompts: Sequence[str], chat: bool = True) -> list[list[int]]:
    """Token ids of each prompt, with the chat template and generation prompt when `chat`."""
    if tokenizer is None:
        raise SpecjaxError("text prompts need a target with a tokenizer (or pass token ids)")
    return [encode_prompt(tokenizer, p, chat) for p in prompts]


def _prompts_sha256(prompt_ids: Sequence[Sequence[int]]) -> str:
    h = hashlib.sha256()
    for p in prompt_ids:
        h.update(np.asarray(p, np.int32).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_manifest(out: Path, manifest: dict) -> None:
    _write_atomic(out / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))


def data_dirs(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """The directories a `data_dir` value names: one path, a comma-separated list, or a list."""
    parts = str(spec).split(",") if isinstance(spec, str | Path) else [str(d) for d in spec]
    dirs = [Path(d.strip()) for d in parts if d.strip()]
    if not dirs:
        raise SpecjaxError("no data directory given")
    return dirs


def answered_prompts(spec: str | Path | Sequence[str | Path]) -> set[tuple[int, ...]]:
    """The prompt token ids every example in these data directories starts with."""
    answered = set()
    for d in data_dirs(spec):
        for entry in load_manifest(d)["shards"]:
            arrays = read_shard(d / entry["file"])
            off, plen = arrays["offsets"], arrays["prompt_len"]
            for k in range(len(plen)):
                answered.add(tuple(arrays["tokens"][off[k] : off[k] + plen[k]].tolist()))
    return answered


def load_manifest(data_dir: str | Path) -> dict:
    """manifest.json of a data directory; missing or unreadable is one SpecjaxError line."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise SpecjaxError(
            f"no {MANIFEST} in {data_dir}: make the data first "
            f"(python -m train_heads.make_data --out={data_dir})"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SpecjaxError(f"{path} is not valid JSON: {e}") from None
    if manifest.get("format") != FORMAT:
        raise SpecjaxError(f"{path} is not a specjax self-distillation manifest")
    return manifest


def make_data(
    target: Model,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    out_dir: str | Path,
    *,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    shard_size: int = 256,
    temperature: float = 0.0,
    seed: int = 0,
    max_prompt_tokens: int = 512,
    chat: bool = True,
    exclude_prompts: Collection[tuple[int, ...]] = (),
    hidden: bool = False,
    topk: int = 0,
    progress: bool = True,
) -> dict:
    """Generates the target's answers to `prompts` into shards; returns the final manifest.

    `prompts` are text (encoded with the target's tokenizer, chat template if `chat`) or token-id
    lists used as they are (tests, tokenizer-less targets). Prompts longer than
    `max_prompt_tokens` are skipped. Shard i holds prompts [i*shard_size, (i+1)*shard_size).
    Prompts whose ids are in `exclude_prompts` (see `answered_prompts`) are dropped first.
    `hidden` and `topk` > 0 also record the target's final hidden states and its top-k next-token
    logits at every position (see the module docstring).
    """
    if max_new_tokens < 1 or batch_size < 1 or shard_size < 1 or max_prompt_tokens < 1:
        raise SpecjaxError(
            "max_new_tokens, batch_size, shard_size and max_prompt_tokens must be >= 1"
        )
    if topk < 0 or topk > target.config.V:
        raise SpecjaxError(f"topk must be in [0, {target.config.V}], got {topk}")
    if temperature < 0:
        raise SpecjaxError(f"temperature must be >= 0, got {temperature}")
    if not prompts:
        raise SpecjaxError("no prompts to generate from")
    if isinstance(prompts[0], str):
        prompt_ids = encode_prompts(target.tokenizer, prompts, chat)
    else:
        prompt_ids = [[int(t) for t in p] for p in prompts]
    if exclude_prompts:
        exclude = set(exclude_prompts)
        prompt_ids = [p for p in prompt_ids if tuple(p) not in exclude]
        if not prompt_ids:
            raise SpecjaxError("every prompt is already answered in the excluded data")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "shard_size": shard_size,
        "temperature": temperature,
        "seed": seed,
        "max_prompt_tokens": max_prompt_tokens,
        "chat": bool(chat and isinstance(prompts[0], str)),
    }
    if hidden:  # recorded only when asked, so older manifests still resume
        settings["hidden"] = True
    if topk:
        settings["topk"] = topk
    manifest = {
        "format": FORMAT,
        "target": target.source,
        "target_fingerprint": target_fingerprint(target.config, target.params),
        "num_prompts": len(prompt_ids),
        "prompts_sha256": _prompts_sha256(prompt_ids),
        "seed": seed,
        "settings": settings,
        "shards": [],
        "examples": 0,
        "tokens": 0,
        "generated_tokens": 0,
    }
    done = _finished_shards(out, manifest)
    manifest["shards"] = [done[i] for i in sorted(done)]
    num_shards = -(-len(prompt_ids) // shard_size)
    sampling = SamplingConfig(temperature=temperature)
    skipped = sum(done[i]["prompts"] for i in done)
    bar = tqdm(
        total=len(prompt_ids),
        initial=skipped,
        desc="self-distill",
        unit="prompt",
        disable=not progress,
    )
    for i in range(num_shards):
        if i in done:
            continue
        lo, hi = i * shard_size, min((i + 1) * shard_size, len(prompt_ids))
        shard = _make_shard(
            target, prompt_ids, lo, hi, out / shard_name(i), sampling, settings, bar
        )
        entry = {"index": i, **shard}
        _record_shard(out, manifest, entry)
    bar.close()
    _totals(manifest)
    _write_manifest(out, manifest)
    return manifest


def _record_shard(out: Path, manifest: dict, entry: dict) -> None:
    """Lists a finished shard in the manifest on disk: what a rerun resumes from."""
    manifest["shards"].append(entry)
    manifest["shards"].sort(key=lambda s: s["index"])
    _totals(manifest)
    _write_manifest(out, manifest)


def feature_names(hidden: bool, topk: bool) -> list[str]:
    """The FEATURE_ARRAYS that `--hidden` and `--topk` record."""
    return (["hidden"] if hidden else []) + (["topk_ids", "topk_logits"] if topk else [])


def _totals(manifest: dict) -> None:
    for key in ("examples", "tokens", "generated_tokens"):
        manifest[key] = sum(s[key] for s in manifest["shards"])


def _finished_shards(out: Path, manifest: dict) -> dict[int, dict]:
    """Shards a previous run with the same settings finished; other settings are an error."""
    if not (out / MANIFEST).is_file():
        return {}
    old = load_manifest(out)
    same = ("target_fingerprint", "num_prompts", "prompts_sha256", "settings")
    changed = [k for k in same if old.get(k) != manifest[k]]
    if changed:
        raise SpecjaxError(
            f"{out} holds data made with other {', '.join(changed)}; use a new --out to start over"
        )
    return {s["index"]: s for s in old.get("shards", []) if (out / s["file"]).is_file()}


def _make_shard(target, prompt_ids, lo, hi, path, sampling, settings, bar) -> dict:
    B = settings["batch_size"]
    keep = [j for j in range(lo, hi) if len(prompt_ids[j]) <= settings["max_prompt_tokens"]]
    if len(keep) < hi - lo:
        logging.warning(
            "%s: skipped %d prompts over max_prompt_tokens", path.name, hi - lo - len(keep)
        )
    bar.update(hi - lo - len(keep))
    # Answered shortest first: a batch pads to its longest prompt, so batching neighbours in
    # length keeps the prefill's padding and the cache (which every decode step attends over)
    # small. A row's answer depends on its own prompt and seed, so the shard still lists the
    # examples in prompt order.
    by_length = sorted(keep, key=lambda j: len(prompt_ids[j]))
    answers = {}
    for start in range(0, len(by_length), B):
        idx = by_length[start : start + B]
        # A short last batch is padded with copies of its first prompt: one compiled batch size.
        batch = [prompt_ids[j] for j in idx] + [prompt_ids[idx[0]]] * (B - len(idx))
        seeds = [(settings["seed"] * 1_000_003 + j) % 2**32 for j in idx]
        seeds += seeds[:1] * (B - len(idx))
        result = generate(
            target.config,
            target.params,
            batch,
            max_new_tokens=settings["max_new_tokens"],
            sampling=sampling,
            eos_ids=target.eos_ids,
            seed=seeds,
        )
        answers |= dict(zip(idx, result.tokens, strict=False))
        bar.update(len(idx))
    seqs = [list(prompt_ids[j]) + list(answers[j]) for j in keep]
    prompt_len = [len(prompt_ids[j]) for j in keep]
    lengths = np.asarray([len(s) for s in seqs], np.int64)
    arrays = {
        "tokens": np.asarray([t for s in seqs for t in s], np.int32),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "prompt_len": np.asarray(prompt_len, np.int32),
        "prompt_index": np.asarray(keep, np.int32),
    }
    if settings.get("hidden") or settings.get("topk"):
        arrays |= _target_features(
            target, seqs, settings.get("hidden", False), settings.get("topk", 0)
        )
    _write_atomic(path, lambda f: np.savez(f, **arrays))
    n_tokens = int(lengths.sum())
    return {
        "file": path.name,
        "prompts": hi - lo,
        "examples": len(seqs),
        "tokens": n_tokens,
        "generated_tokens": n_tokens - int(sum(prompt_len)),
    }


def copy_data(
    target: Model,
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    hidden: bool = False,
    topk: int = 0,
    progress: bool = True,
) -> dict:
    """Copies a data directory with the target features asked for; returns the new manifest.

    Answering the prompts is the slow part of making data (decode is one token per row per step);
    the features are one teacher-forced forward per answer. So the answers are kept as tokens
    alone (no features: a compressed copy small enough to version), and the hidden states or top-k
    logits are added back from them with `hidden` / `topk`: recomputed from the tokens, or copied
    when the source holds them. The source must have been made by this target. Resumes like
    `make_data`.
    """
    if topk < 0 or topk > target.config.V:
        raise SpecjaxError(f"topk must be in [0, {target.config.V}], got {topk}")
    src, out = Path(src_dir), Path(out_dir)
    if src.resolve() == out.resolve():
        raise SpecjaxError(f"--out must differ from the source data directory {src}")
    manifest = load_manifest(src)
    fingerprint = target_fingerprint(target.config, target.params)
    if manifest["target_fingerprint"] != fingerprint:
        raise SpecjaxError(
            f"{src} holds answers of another target ({manifest['target']}), not {target.source}"
        )
    settings = {k: v for k, v in manifest["settings"].items() if k not in ("hidden", "topk")}
    if hidden:
        settings["hidden"] = True
    if topk:
        settings["topk"] = topk
    entries = manifest["shards"]
    manifest = {**manifest, "settings": settings, "shards": []}
    out.mkdir(parents=True, exist_ok=True)
    done = _finished_shards(out, manifest)
    manifest["shards"] = [done[i] for i in sorted(done)]
    todo = [e for e in entries if e["index"] not in done]
    for entry in tqdm(todo, desc="features", unit="shard", disable=not progress):
        arrays = read_shard(src / entry["file"])
        copy = {k: arrays[k] for k in SHARD_ARRAYS}
        reusable = (not hidden or "hidden" in arrays) and (
            not topk or ("topk_ids" in arrays and arrays["topk_ids"].shape[1] == topk)
        )
        if reusable:
            copy |= {k: arrays[k] for k in feature_names(hidden, topk)}
        else:
            off = arrays["offsets"]
            seqs = [arrays["tokens"][off[k] : off[k + 1]] for k in range(len(off) - 1)]
            copy |= _target_features(target, seqs, hidden, topk)
        save = np.savez if hidden or topk else np.savez_compressed
        _write_atomic(out / entry["file"], lambda f, a=copy, save=save: save(f, **a))
        _record_shard(out, manifest, dict(entry))
    _totals(manifest)
    _write_manifest(out, manifest)
    return manifest


@functools.partial(jax.jit, static_argnums=(0, 3))
def _teacher_forced(config: ModelConfig, params: ModelParams, tokens_1xS: jax.Array, topk: int):
    """(hidden_1xSxD, top-k logits and ids [1, S, k] or None when k is 0) over one sequence."""
    hidden = sequence_hidden(config, params, tokens_1xS)
    if not topk:
        return hidden, None, None
    values, ids = jax.lax.top_k(lm_logits(params, hidden), topk)
    return hidden, values, ids


def _target_features(target: Model, seqs: list[list[int]], hidden: bool, topk: int) -> dict:
    """The FEATURE_ARRAYS asked for, rows aligned with the shard's concatenated tokens.

    One sequence at a time, padded at the end to a power-of-two bucket (causal attention: padding
    changes no earlier row) so similar lengths share one compilation.
    """
    parts: dict[str, list[np.ndarray]] = {"hidden": [], "topk_ids": [], "topk_logits": []}
    for seq in seqs:
        n = len(seq)
        tokens = np.full((1, prompt_bucket(n)), PAD_TOKEN, np.int32)
        tokens[0, :n] = seq
        h, values, ids = _teacher_forced(target.config, target.params, tokens, topk)
        if hidden:
            parts["hidden"].append(np.asarray(h[0, :n], np.float16))
        if topk:
            parts["topk_logits"].append(np.asarray(values[0, :n], np.float32))
            parts["topk_ids"].append(np.asarray(ids[0, :n], np.int32))
    return {k: np.concatenate(v) for k, v in parts.items() if v}


def read_shard(path: str | Path) -> dict[str, np.ndarray]:
    """One shard's arrays (no pickles), the recorded FEATURE_ARRAYS among them; a missing or
    damaged file is one SpecjaxError line."""
    try:
        with np.load(path, allow_pickle=False) as f:
            names = list(SHARD_ARRAYS) + [k for k in FEATURE_ARRAYS if k in f.files]
            arrays = {k: f[k] for k in names}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise SpecjaxError(f"corrupt or missing data shard {path}: {e}") from None
    n = len(arrays["prompt_len"])
    if len(arrays["offsets"]) != n + 1 or arrays["offsets"][-1] != len(arrays["tokens"]):
        raise SpecjaxError(f"corrupt data shard {path}: offsets do not match the tokens")
    if any(len(arrays[k]) != len(arrays["tokens"]) for k in FEATURE_ARRAYS if k in arrays):
        raise SpecjaxError(f"corrupt data shard {path}: target features do not match the tokens")
    return arrays


def load_dataset(
    data_dir: str | Path | Sequence[str | Path], seq_len: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """All examples as (tokens_NS int32, loss_mask_NS bool), right-padded with PAD_TOKEN.

    `data_dir` is one directory or several (see `data_dirs`), read in the order given.
    mask[n, s] is True iff tokens[n, s] was generated by the target (not prompt, not padding): a
    next-token loss predicts tokens[:, 1:] from tokens[:, :-1] where mask[:, 1:]. With `seq_len`,
    longer examples are cut to their first seq_len tokens and S == seq_len; else S is the longest.
    """
    seqs, starts = [], []
    for d in data_dirs(data_dir):
        for entry in load_manifest(d)["shards"]:
            arrays = read_shard(d / entry["file"])
            off = arrays["offsets"]
            for k in range(len(arrays["prompt_len"])):
                seqs.append(arrays["tokens"][off[k] : off[k + 1]])
                starts.append(int(arrays["prompt_len"][k]))
    if not seqs:
        raise SpecjaxError(f"{data_dir} holds no examples")
    S = seq_len or max(len(s) for s in seqs)
    tokens = np.full((len(seqs), S), PAD_TOKEN, np.int32)
    mask = np.zeros((len(seqs), S), bool)
    for n, (s, p) in enumerate(zip(seqs, starts, strict=True)):
        s = s[:S]
        tokens[n, : len(s)] = s
        mask[n, p : len(s)] = True
    return tokens, mask


def load_features(
    data_dir: str | Path | Sequence[str | Path], names: Sequence[str], seq_len: int | None = None
) -> dict[str, np.ndarray]:
    """FEATURE_ARRAYS `names` as [N, S, ...] arrays aligned with `load_dataset`'s tokens (zeros
    past each example's end): what heads that read the target's state or distribution train on."""
    seqs: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for d in data_dirs(data_dir):
        for entry in load_manifest(d)["shards"]:
            arrays = read_shard(d / entry["file"])
            missing = [k for k in names if k not in arrays]
            if missing:
                how = " ".join(
                    (["--hidden"] if "hidden" in names else [])
                    + (["--topk=K"] if "topk_ids" in names else [])
                )
                raise SpecjaxError(
                    f"data {d} has no {', '.join(missing)}: make it with make_data {how} (or add "
                    f"them to the answers with make_data --from_data={d} {how} --out=NEW)"
                )
            off = arrays["offsets"]
            for k in names:
                seqs[k] += [arrays[k][off[n] : off[n + 1]] for n in range(len(off) - 1)]
    if not seqs[names[0]]:
        raise SpecjaxError(f"{data_dir} holds no examples")
    S = seq_len or max(len(x) for x in seqs[names[0]])
    out = {}
    for k, rows in seqs.items():
        out[k] = np.zeros((len(rows), S) + rows[0].shape[1:], rows[0].dtype)
        for n, x in enumerate(rows):
            out[k][n, : min(len(x), S)] = x[:S]
    return out


def load_hidden(
    data_dir: str | Path | Sequence[str | Path], seq_len: int | None = None
) -> np.ndarray:
    """float16 [N, S, D]: the target's hidden states aligned with `load_dataset`'s tokens."""
    return load_features(data_dir, ["hidden"], seq_len)["hidden"]
