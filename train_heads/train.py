"""The optax training loop for learned drafters, and `python -m train_heads.train`.

  python -m train_heads.train --config=smollm2_draft [--steps=N] [--out_dir=DIR] [--resume]

`fit` is generic: any `loss(params, frozen, batch) -> (mean loss, sums)` whose `sums` hold a
`count` and summed metrics trains the same way (the draft LM now, heads later). AdamW with linear
warmup and cosine decay, global-norm clipping, one jitted step `(state, batch) -> (state, metrics)`.

Exact resume: the batch of step k is a function of (seed, k) only (a seeded permutation per
epoch), the state is the whole optimizer state, and orbax restores it bit for bit, so a run
stopped at step k and resumed ends with the same parameters as one that never stopped.
With more than one device, batches are split over a ("data",) mesh axis and the parameters are
replicated; on one device nothing changes. The mesh spans every process of a multi-process run
(`--distributed`, `specjax.multihost`): each process builds only its devices' rows of a batch, and
only process 0 writes the metrics log and final/ (orbax coordinates the checkpoints).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags, logging
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from configs.ctc_draft import CTCTrain
from configs.draft_lm import DraftLMTrain
from configs.medusa_heads import MedusaTrain
from configs.recurrent_head import RecurrentHeadTrain
from configs.sprinter import SprinterTrain
from configs.train_loop import TrainLoop
from models.errors import SpecjaxError
from models.loading import Model
from specjax.cli import parse_flags, run_or_fail
from specjax.multihost import global_rows, is_primary, tree_to_host
from train_heads.checkpoint import Checkpoints

# Fields that may differ when resuming: where things are, how often to report, and how long to go
# (a new `steps` also reshapes the cosine schedule, so the run is then not the unstopped one).
RESUMABLE_CHANGES = ("data_dir", "out_dir", "steps", "eval_every", "save_every", "log_every")
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
FINAL_DIR = "final"

# loss(params, frozen, batch) -> (mean loss, sums): sums["count"] and summed metrics, all scalars.
LossFn = Callable[[Any, Any, Any], tuple[jax.Array, dict[str, jax.Array]]]


@struct.dataclass
class TrainState:
    """Attributes: step int32 [] (steps done); params: the trained pytree; opt_state: optax's."""

    step: jax.Array
    params: Any
    opt_state: Any


def make_optimizer(hp: TrainLoop) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW (weight decay on matrices only, not norms) after global-norm clipping."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=hp.lr,
        warmup_steps=hp.warmup_steps,
        decay_steps=hp.steps,
        end_value=hp.lr * 0.1,
    )
    matrices = lambda params: jax.tree.map(lambda x: x.ndim >= 2, params)
    adamw = optax.adamw(schedule, weight_decay=hp.weight_decay, mask=matrices)
    return optax.chain(optax.clip_by_global_norm(hp.clip_norm), adamw), schedule


def batch_indices(seed: int, step: int, n: int, batch_size: int) -> np.ndarray:
    """Rows of step `step`: position p = step*B + i of the stream of seeded epoch permutations."""
    pos = step * batch_size + np.arange(batch_size)
    epochs = pos // n
    out = np.empty(batch_size, np.int64)
    for e in np.unique(epochs):
        perm = np.random.default_rng([seed, int(e)]).permutation(n)
        sel = epochs == e
        out[sel] = perm[pos[sel] % n]
    return out


def _ratios(sums: dict) -> dict:
    count = jnp.maximum(sums["count"], 1.0)
    return {k: v / count for k, v in sums.items() if k != "count"}


def train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    frozen: Any,
    state: TrainState,
    batch: Any,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One AdamW step; metrics are this batch's loss/accuracy, the gradient norm and the lr."""
    (_, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, frozen, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = _ratios(sums) | {"grad_norm": optax.global_norm(grads), "lr": schedule(state.step)}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def data_mesh(batch_size: int) -> Mesh | None:
    """A ("data",) mesh over all devices, or None on one device."""
    n = jax.device_count()
    if n == 1:
        return None
    if batch_size % n:
        raise SpecjaxError(f"--batch_size={batch_size} must be a multiple of the {n} devices")
    return Mesh(np.asarray(jax.devices()), ("data",))


def _replicate(tree, mesh: Mesh | None):
    if mesh is None:
        return jax.device_put(tree)
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def _batch(data, idx: np.ndarray, mesh: Mesh | None):
    """Rows idx of `data` on the devices; with a mesh split over "data", each process reading
    only the rows its own devices hold."""
    if mesh is None:
        return jax.device_put(_rows(data, idx))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    return global_rows(lambda local: _rows(data, local), idx, sharding)


def _rows(data, idx: np.ndarray):
    """Rows idx of every leaf; index -1 gives a row of zeros (padding)."""

    def take(a):
        out = a[np.maximum(idx, 0)]
        out[idx < 0] = 0
        return out

    return jax.tree.map(take, data)


def _pad_rows(idx: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([idx, np.full(size - len(idx), -1, idx.dtype)])


def _num_rows(data) -> int:
    return len(jax.tree.leaves(data)[0])


def evaluate(
    eval_fn: Callable, params: Any, frozen: Any, data: Any, batch_size: int, mesh: Mesh | None
) -> dict[str, float]:
    """Metric ratios over every row of `data`; the last batch is padded with zero rows."""
    n = _num_rows(data)
    totals: dict[str, float] = {}
    for lo in range(0, n, batch_size):
        idx = _pad_rows(np.arange(lo, min(lo + batch_size, n)), batch_size)
        sums = tree_to_host(eval_fn(params, frozen, _batch(data, idx, mesh)))
        for k, v in sums.items():
            totals[k] = totals.get(k, 0.0) + float(v)
    count = max(totals.pop("count", 0.0), 1.0)
    return {k: v / count for k, v in totals.items()}


def data_checksum(data: Any) -> str:
    """Identifies the training data in checkpoints, so --resume refuses other data."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(data):
        h.update(np.ascontiguousarray(leaf).tobytes())
    return h.hexdigest()[:16]


def _step_of(line: str) -> float:
    """The step of one metrics line; a torn last line (a crash mid-write) counts as past all."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return float("inf")


class _MetricsLog:
    """Appends one JSON object per line; on resume, lines past the restored step are dropped.
    Only process 0 of a multi-process run writes (the others' records are the same)."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        self._f = None
        if not is_primary():
            return
        if path.is_file():
            kept = [line for line in path.read_text().splitlines() if _step_of(line) <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))
        self._f = open(path, "a")

    def write(self, record: dict) -> None:
        if self._f is not None:
            self._f.write(json.dumps(record) + "\n")
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


def fit(
    loss_fn: LossFn,
    params: Any,
    frozen: Any,
    train_data: Any,
    eval_data: Any,
    hp: TrainLoop,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    on_eval: Callable[[int, TrainState, dict], None] | None = None,
) -> TrainState:
    """Trains `params` (frozen: arrays the loss reads but never updates) for hp.steps steps.

    `train_data`/`eval_data` are host pytrees of arrays with a leading row axis; a row of zeros
    must add nothing to the loss's sums (it pads the last eval batch). Checkpoints go to
    hp.out_dir/checkpoints every hp.save_every steps; `resume` continues from the newest one.
    `stop_after` ends the run early at that step (with a checkpoint), as an interruption would.
    `on_eval(step, state, held-out metrics)` runs after each evaluation (keeping the best one),
    on process 0 only in a multi-process run.
    """
    hp.validate()
    out = Path(hp.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mesh = data_mesh(hp.batch_size)
    optimizer, step_fn, eval_fn = _compiled(loss_fn, hp)
    frozen = _replicate(frozen, mesh)
    state = TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params)
    )
    state = _replicate(state, mesh)  # replicated over the data axis
    meta = {"config": dataclasses.asdict(hp), "data": data_checksum((train_data, eval_data))}
    ckpts = Checkpoints(out / CHECKPOINT_DIR, hp.max_to_keep)
    try:
        state = _restore(ckpts, state, meta, resume, out)
        start = int(state.step)
        end = hp.steps if stop_after is None else min(hp.steps, stop_after)
        log = _MetricsLog(out / METRICS_FILE, start)
        show = progress and is_primary()
        bar = tqdm(total=hp.steps, initial=start, desc="train", unit="step", disable=not show)
        shown: dict[str, str] = {}
        t0 = time.time()
        for step in range(start, end):
            idx = batch_indices(hp.seed, step, _num_rows(train_data), hp.batch_size)
            state, metrics = step_fn(frozen, state, _batch(train_data, idx, mesh))
            done = step + 1
            if done % hp.log_every == 0 or done == end:
                m = {k: float(v) for k, v in tree_to_host(metrics).items()}
                log.write({"step": done, "split": "train", **m, "seconds": time.time() - t0})
                shown.update(loss=f"{m['loss']:.3f}", top1=f"{m.get('top1', 0):.3f}")
            if done % hp.eval_every == 0 or done == hp.steps:
                ev = evaluate(eval_fn, state.params, frozen, eval_data, hp.batch_size, mesh)
                log.write({"step": done, "split": "eval", **ev})
                shown.update(eval_loss=f"{ev['loss']:.3f}", eval_top1=f"{ev.get('top1', 0):.3f}")
                if on_eval is not None and is_primary():
                    on_eval(done, state, ev)
            if done % hp.save_every == 0 or done == end:
                ckpts.save(done, state, meta)
            bar.set_postfix(shown, refresh=False)
            bar.update(1)
        bar.close()
        log.close()
        return state
    finally:
        ckpts.wait()
        ckpts.close()


# Bounded for the reason `specjax.engine._COMPILED` is: live executables hold memory mappings.
_COMPILED: collections.OrderedDict = collections.OrderedDict()
MAX_COMPILED = 4


def _compiled(loss_fn, hp: TrainLoop):
    """(optimizer, jitted train step, jitted eval sums), shared by runs with the same loss and
    schedule so that a resumed run in the same process does not compile again."""
    key = (loss_fn, hp.lr, hp.warmup_steps, hp.steps, hp.weight_decay, hp.clip_norm)
    if key not in _COMPILED:
        optimizer, schedule = make_optimizer(hp)
        step_fn = jax.jit(functools.partial(train_step, loss_fn, optimizer, schedule))
        eval_fn = jax.jit(lambda p, f, b: loss_fn(p, f, b)[1])
        _COMPILED[key] = (optimizer, step_fn, eval_fn)
        while len(_COMPILED) > MAX_COMPILED:
            _COMPILED.popitem(last=False)
    _COMPILED.move_to_end(key)
    return _COMPILED[key]


def _restore(ckpts: Checkpoints, state: TrainState, meta: dict, resume: bool, out: Path):
    """The newest checkpoint's state when resuming, else `state` (a fresh start)."""
    latest = ckpts.latest_step()
    if latest is None:
        return state
    if not resume:
        raise SpecjaxError(
            f"{out} already holds checkpoints (newest step {latest}): pass --resume to continue "
            f"or choose another --out_dir"
        )
    state, saved = ckpts.restore(latest, jax.tree.map(ocp_abstract, state))
    _check_same_run(saved, meta)
    logging.info("resumed from step %d", latest)
    return state


def ocp_abstract(x: jax.Array) -> jax.ShapeDtypeStruct:
    """A ShapeDtypeStruct with x's sharding: where orbax should restore x to."""
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)


def _check_same_run(saved: dict, meta: dict) -> None:
    old, new = saved.get("config", {}), meta["config"]
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    fixed = [k for k in changed if k not in RESUMABLE_CHANGES]
    if fixed:
        raise SpecjaxError(
            f"--resume with a different {', '.join(fixed)} than the checkpoint "
            f"({', '.join(f'{k}={old.get(k)!r}' for k in fixed)}); use the same values or a new --out_dir"
        )
    if "steps" in changed:
        logging.warning(
            "steps changed from %s to %s: the lr schedule changes", old["steps"], new["steps"]
        )
    if saved.get("data") != meta["data"]:
        raise SpecjaxError(
            "--resume with different training data than the checkpoint was trained on"
        )


def _target_and_data(cfg: TrainLoop, target: Model | None):
    """(target, tokens_NS, mask_NS, train rows, eval rows): the config checked, the target loaded
    (unless given), every data directory checked against it, and the seeded eval split."""
    from models.fingerprint import check_fingerprint
    from train_heads.data import data_dirs, load_dataset, load_manifest
    from train_heads.target import load_target

    cfg.validate()
    manifests = {d: load_manifest(d) for d in data_dirs(cfg.data_dir)}
    target = target or load_target(cfg.target, cfg.dtype)
    for d, manifest in manifests.items():
        check_fingerprint(manifest["target_fingerprint"], target.config, target.params, f"data {d}")
    tokens, mask = load_dataset(cfg.data_dir, cfg.seq_len)
    if tokens.max() >= target.config.V:
        raise SpecjaxError(f"data {cfg.data_dir} has token ids beyond the target's vocabulary")
    n = len(tokens)
    if n < 2:
        raise SpecjaxError(
            f"data {cfg.data_dir} has {n} example(s); need at least 2 (train + eval)"
        )
    order = np.random.default_rng(cfg.seed).permutation(n)
    n_eval = min(cfg.eval_examples, n // 2)
    return target, tokens, mask, order[n_eval:], order[:n_eval]


@dataclasses.dataclass
class DraftLMResult:
    """What `train_draft_lm` produced: the final TrainState, the draft config, final/ (or None)."""

    state: TrainState
    config: Any
    final_dir: Path | None


def train_draft_lm(
    cfg: DraftLMTrain,
    *,
    resume: bool = False,
    target: Model | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> DraftLMResult:
    """Self-distils a draft LM from cfg.data_dir; at the last step writes out_dir/final/.

    `target` (a loaded `Model`) skips loading cfg.target (tests pass their tiny model).
    """
    from models import draft_lm as model_lm
    from train_heads import draft_lm

    target, tokens, mask, tr, ev = _target_and_data(cfg, target)
    head_ids = None
    if cfg.draft_vocab:  # chosen on the training split only
        head_ids = draft_lm.frequent_tokens(tokens[tr], mask[tr], cfg.draft_vocab, target.config.V)
    draft_config, draft_params = model_lm.init_draft(
        target.config,
        target.params,
        cfg.draft_layers,
        jax.random.key(cfg.seed),
        from_target=cfg.init_from_target_layers,
        head_token_ids=head_ids,
    )
    own = model_lm.cast(model_lm.trainable(draft_params), jnp.float32)  # fp32 master weights
    frozen = model_lm.shared(draft_params)
    state = fit(
        draft_lm.make_loss(draft_config),
        own,
        frozen,
        draft_lm.Batch(tokens[tr], mask[tr]),
        draft_lm.Batch(tokens[ev], mask[ev]),
        cfg,
        resume=resume,
        stop_after=stop_after,
        progress=progress,
    )
    final_dir = None
    if int(state.step) == cfg.steps and is_primary():
        own = model_lm.cast(tree_to_host(state.params), target.params.dtype)
        final_dir = model_lm.save_draft(
            Path(cfg.out_dir) / FINAL_DIR,
            draft_config,
            model_lm.merge(own, tree_to_host(frozen)),
            target_source=target.source,
        )
    return DraftLMResult(state=state, config=draft_config, final_dir=final_dir)


@dataclasses.dataclass
class HeadResult:
    """What `train_recurrent_head` produced: the final TrainState and final/ (or None)."""

    state: TrainState
    final_dir: Path | None


def _head_data(cfg, target: Model | None, lead: int):
    """(target, head_token_ids or None, train batch, held-out batch, train answer tokens) for a
    hidden-state head: the data checked and split (`_target_and_data`), the hidden states
    loaded, the frequent-token columns chosen on the training split, and both splits cropped to
    what a `lead`-deep loss reads (`answer_windows`)."""
    from train_heads import draft_lm
    from train_heads.data import feature_names, load_features
    from train_heads.head_batch import HeadBatch, answer_windows

    target, tokens, mask, tr, ev = _target_and_data(cfg, target)
    soft = getattr(cfg, "kl_weight", 0.0) > 0  # the top-k logits, for a KL term
    features = load_features(cfg.data_dir, feature_names(True, soft), cfg.seq_len)
    ids = None
    if cfg.head_vocab:  # chosen on the training split only
        V = target.config.V
        ids = jnp.asarray(draft_lm.frequent_tokens(tokens[tr], mask[tr], cfg.head_vocab, V))
    batch = HeadBatch(tokens, mask, **features)
    train = answer_windows(jax.tree.map(lambda x: x[tr], batch), lead)
    held_out = answer_windows(jax.tree.map(lambda x: x[ev], batch), lead)
    return target, ids, train, held_out, int(mask[tr].sum())


def train_recurrent_head(
    cfg: RecurrentHeadTrain,
    *,
    resume: bool = False,
    target: Model | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> HeadResult:
    """Trains ReDrafter's head on cfg.data_dir (made with --hidden); at the last step writes
    out_dir/final/ (`models.head_file`). `target` skips loading cfg.target."""
    from models.head_file import save_head
    from models.recurrent_head import init_head
    from train_heads.recurrent_head import HeadFrozen, make_head_loss

    target, ids, train, held_out, train_tokens = _head_data(cfg, target, cfg.draft_length)
    c = target.config
    own = init_head(jax.random.key(cfg.seed), c.D, c.V, cfg.num_res, ids)
    own = own.replace(head_token_ids=None)
    frozen = HeadFrozen(embed=target.params.embed, head_token_ids=ids)
    run = dict(resume=resume, stop_after=stop_after, progress=progress)
    loss = make_head_loss(cfg.draft_length, cfg.kl_weight)
    state = fit(loss, own, frozen, train, held_out, cfg, **run)
    final_dir = None
    if int(state.step) == cfg.steps and is_primary():
        head = tree_to_host(state.params).replace(head_token_ids=ids)
        extra = {"train_tokens": train_tokens, "config": dataclasses.asdict(cfg)}
        final_dir = save_head(Path(cfg.out_dir) / FINAL_DIR, head, c, target.params, extra=extra)
    return HeadResult(state=state, final_dir=final_dir)


def train_medusa_heads(
    cfg: MedusaTrain,
    *,
    resume: bool = False,
    target: Model | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> HeadResult:
    """Trains Medusa's heads on cfg.data_dir (made with --hidden), starting from K copies of the
    target's own head; at the last step writes out_dir/final/ (`models.head_file`, kind
    "medusa"), with each head's held-out rank accuracies (the tree builder's input) in its
    config."""
    from models.head_file import save_head
    from models.medusa_heads import init_heads
    from train_heads.medusa_heads import MedusaFrozen, make_medusa_loss, rank_accuracy

    target, ids, train, held_out, train_tokens = _head_data(cfg, target, cfg.num_heads)
    c = target.config
    own = init_heads(target.params, cfg.num_heads, ids).replace(head_token_ids=None)
    frozen = MedusaFrozen(head_token_ids=ids, vocab_size=c.V)
    run = dict(resume=resume, stop_after=stop_after, progress=progress)
    state = fit(
        make_medusa_loss(cfg.num_heads, cfg.decay), own, frozen, train, held_out, cfg, **run
    )
    final_dir = None
    if int(state.step) == cfg.steps and is_primary():
        heads = tree_to_host(state.params).replace(head_token_ids=ids)
        accuracy = rank_accuracy(heads, held_out, cfg.tree_ranks)
        extra = {
            "train_tokens": train_tokens,
            "config": dataclasses.asdict(cfg),
            "rank_accuracy": accuracy.round(5).tolist(),
        }
        final_dir = save_head(Path(cfg.out_dir) / FINAL_DIR, heads, c, target.params, extra=extra)
    return HeadResult(state=state, final_dir=final_dir)


def train_ctc_drafter(
    cfg: CTCTrain,
    *,
    resume: bool = False,
    target: Model | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> HeadResult:
    """Trains the CTC drafter's module on cfg.data_dir (made with --hidden); at the last step
    writes out_dir/final/ (`models.head_file`, kind "ctc") with its held-out chain rank
    accuracies (the tree builder's input) and its CTC weight (0: drafts as EAGLE-1) in the
    config. Rows keep their whole context: the module's layer attends over it."""
    from models.ctc_draft import attach, draft_config, init_ctc_head
    from models.head_file import save_head
    from train_heads.ctc_draft import CTCFrozen, chain_rank_accuracy, make_ctc_loss

    target, ids, train, held_out, train_tokens = _head_data(cfg, target, cfg.seq_len)
    c = target.config
    layer_config = draft_config(c)
    head = init_ctc_head(
        c, target.params, jax.random.key(cfg.seed), ids, matched_token=cfg.token_init == "matched"
    )
    frozen_parts = attach(head, target.params)
    frozen = CTCFrozen(
        embed=target.params.embed,
        head_columns=frozen_parts.head_columns.astype(target.params.dtype),
        head_token_ids=ids,
        vocab_size=c.V,
    )
    run = dict(resume=resume, stop_after=stop_after, progress=progress)
    state = fit(
        make_ctc_loss(layer_config, cfg.ctc_weight, cfg.rollout_frames),
        head.replace(head_token_ids=None),
        frozen,
        train,
        held_out,
        cfg,
        **run,
    )
    final_dir = None
    if int(state.step) == cfg.steps and is_primary():
        trained = tree_to_host(state.params).replace(head_token_ids=ids)
        params = attach(trained, target.params)
        accuracy = chain_rank_accuracy(
            layer_config, params, held_out, cfg.frames, cfg.tree_ranks, cfg.ctc_weight > 0
        )
        extra = {
            "train_tokens": train_tokens,
            "config": dataclasses.asdict(cfg),
            "ctc_weight": cfg.ctc_weight,
            "rank_accuracy": accuracy.round(5).tolist(),
        }
        final_dir = save_head(Path(cfg.out_dir) / FINAL_DIR, trained, c, target.params, extra=extra)
    return HeadResult(state=state, final_dir=final_dir)


def train_sprinter_verifier(
    cfg: SprinterTrain,
    *,
    resume: bool = False,
    target: Model | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> HeadResult:
    """Trains SPRINTER's verifier for cfg.draft on cfg.data_dir (made with --hidden): the
    classifiers with the best mean held-out accuracy over the run are kept in out_dir/best/
    (the released code keeps its best epoch) and become out_dir/final/ at the last step
    (`models.head_file`, kind "sprinter", with the draft's fingerprint, the temperatures and
    the held-out accuracy and false-positive rate in its config)."""
    import shutil

    from models.acceptance_verifier import init_verifier
    from models.fingerprint import draft_fingerprint
    from models.head_file import head_extra, is_head_dir, save_head
    from specjax.methods import BuildInputs, resolve_draft
    from train_heads.data import load_hidden
    from train_heads.sprinter import make_verifier_loss, verifier_data, verifier_report

    target, tokens, mask, tr, ev = _target_and_data(cfg, target)
    c = target.config
    inputs = BuildInputs(c, target.params, None, draft=cfg.draft or None, dtype=cfg.dtype)
    draft_config, draft = resolve_draft(inputs, "sprinter")
    hidden = load_hidden(cfg.data_dir, cfg.seq_len)
    temps = tuple(cfg.temperature_list())

    def positions(rows, hidden_NSD):
        return verifier_data(
            draft_config, draft, target.params, tokens[rows], mask[rows], hidden_NSD[rows],
            temps, cfg.with_token, progress,
        )  # fmt: skip

    train, held_out = positions(tr, hidden), positions(ev, hidden)
    features = draft_config.D * (2 if cfg.with_token else 1)
    own = init_verifier(len(temps), features)
    embed = draft.embed if cfg.with_token else None
    out = Path(cfg.out_dir)
    best_dir = out / "best"
    extra = {
        "train_positions": int(len(train.weight)),
        "held_out_positions": int(len(held_out.weight)),
        "config": dataclasses.asdict(cfg),
        "draft_fingerprint": draft_fingerprint(draft_config, draft),
        "temperatures": list(temps),
        "with_token": cfg.with_token,
    }

    def keep_best(step: int, state: TrainState, metrics: dict) -> None:
        accuracy = float(np.mean([metrics[f"acc_{k}"] for k in range(len(temps))]))
        if is_head_dir(best_dir) and head_extra(best_dir).get("mean_accuracy", -1) >= accuracy:
            return
        report = verifier_report(metrics, temps)
        params = tree_to_host(state.params)
        record = {**extra, "step": step, "mean_accuracy": accuracy, "held_out": report}
        save_head(best_dir, params, c, target.params, extra=record)

    run = dict(resume=resume, stop_after=stop_after, progress=progress)
    state = fit(make_verifier_loss(), own, embed, train, held_out, cfg, on_eval=keep_best, **run)
    final_dir = None
    if int(state.step) == cfg.steps and is_primary():
        final_dir = out / FINAL_DIR
        if final_dir.exists():
            shutil.rmtree(final_dir)
        shutil.copytree(best_dir, final_dir)
    return HeadResult(state=state, final_dir=final_dir)


# ---- CLI ---------------------------------------------------------------------------------------

FLAGS = flags.FLAGS
_DEFINE = {
    "int": flags.DEFINE_integer,
    "float": flags.DEFINE_float,
    "str": flags.DEFINE_string,
    "bool": flags.DEFINE_bool,
}


def define_flags() -> None:
    """--config, --resume, and one override flag per config field (defined only by the CLI, so
    importing this module never clashes with other modules' flags)."""
    flags.DEFINE_string("config", "smollm2_draft", "Named config from configs/ (e.g. tiny_test).")
    flags.DEFINE_bool("resume", False, "Continue from the newest checkpoint in out_dir.")
    for field in _OVERRIDABLE:
        _DEFINE[str(field.type)](field.name, None, f"Overrides the config's {field.name}.")


# Every field of every trainable config kind (a field the chosen config lacks is an error).
_OVERRIDABLE = list(
    {
        f.name: f
        for kind in (DraftLMTrain, RecurrentHeadTrain, MedusaTrain, CTCTrain, SprinterTrain)
        for f in dataclasses.fields(kind)
    }.values()
)


def config_from_flags() -> TrainLoop:
    """The named config with every flag the user set applied over it."""
    from configs import get_config

    cfg = get_config(FLAGS.config)
    names = {f.name for f in dataclasses.fields(cfg)}
    overrides = {
        f.name: FLAGS[f.name].value for f in _OVERRIDABLE if FLAGS[f.name].value is not None
    }
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise SpecjaxError(f"--{unknown[0]} does not apply to config {FLAGS.config}")
    cfg = dataclasses.replace(cfg, **overrides)
    cfg.validate()
    return cfg


def main(argv: list[str]) -> None:
    def run():
        cfg = config_from_flags()
        if isinstance(cfg, RecurrentHeadTrain):
            return train_recurrent_head(cfg, resume=FLAGS.resume)
        if isinstance(cfg, MedusaTrain):
            return train_medusa_heads(cfg, resume=FLAGS.resume)
        if isinstance(cfg, CTCTrain):
            return train_ctc_drafter(cfg, resume=FLAGS.resume)
        if isinstance(cfg, SprinterTrain):
            return train_sprinter_verifier(cfg, resume=FLAGS.resume)
        if not isinstance(cfg, DraftLMTrain):
            raise SpecjaxError(f"config {FLAGS.config} trains nothing this command knows")
        return train_draft_lm(cfg, resume=FLAGS.resume)

    result = run_or_fail(argv, run, "--steps=100")
    if not is_primary():
        return
    if isinstance(result, HeadResult) and result.final_dir is not None:
        print(f"head saved to {result.final_dir} (models/head_file.py)")
    elif result.final_dir is not None:
        print(f"draft saved to {result.final_dir} (use: --method=sd --draft={result.final_dir})")
    else:
        print(f"stopped at step {int(result.state.step)}; continue with --resume")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
