"""The decode loop: prefill, then one jitted `lax.while_loop` of steps with no host round-trip.

State that flows through the loop is a `flax.struct.dataclass`; everything static (model config,
sampling, token budget, EOS ids) is a hashable frozen dataclass passed as a static argument, so the
same shapes never recompile. Prompts are right-padded to a power-of-two bucket for the same reason.
Randomness: each row has its own key, folded with the index of the token being produced, so a row's
tokens depend on its seed and prompt only, never on the rest of the batch.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import Mesh

from models.cache import KVCache, init_cache
from models.config import ModelConfig
from models.errors import SpecjaxError
from models.layer_layout import for_decode
from models.transformer import (
    ModelParams,
    causal_mask,
    hidden_states,
    lm_logits,
)
from specjax.acceptance import AcceptancePolicy, ExactAcceptance
from specjax.candidates import NO_PARENT, Candidates, DraftContext, Prefill, Verified, tree_mask
from specjax.drafter import Drafter
from specjax.multihost import put_global, to_host, tree_to_host
from specjax.sampling import SamplingConfig, sample_token
from specjax.sharding import batch_sharding, constrain_cache, placement, state_shardings

MIN_PROMPT_BUCKET = 32
PAD_TOKEN = 0  # written into prompt padding; never attended to.
NO_TOKEN = -1  # fills the output buffer past each row's end.


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
    """Static description of one generate call (hashable: a jit static argument).

    `acceptance` judges speculative blocks (`specjax.acceptance`); vanilla decoding ignores it.
    """

    max_new_tokens: int
    sampling: SamplingConfig = SamplingConfig()
    eos_ids: tuple[int, ...] = ()
    acceptance: AcceptancePolicy = ExactAcceptance()


@struct.dataclass
class DecodeState:
    """Attributes:
    out_tokens: int32 [B, N] emitted tokens, NO_TOKEN past each row's end (N = max_new_tokens).
    num_new: int32 [B] tokens emitted so far.
    done: bool [B] the row hit EOS or its budget; its cache and outputs are frozen.
    cache: the target's KV cache; holds every emitted token except `next_token`.
    next_token: int32 [B] the last emitted token, fed to the target at the next step.
    row_keys: [B] PRNG keys, one per row.
    target_calls: int32 [B] target forwards that served this row (prefill included).
    drafted: int32 [B] draft tokens proposed to the target.
    accepted: int32 [B] draft tokens the target accepted.
    accept_lengths: int32 [B, A] target calls after which exactly j drafts were accepted (column j,
      A = the block size), over the calls that verified at least one draft: what `--gamma=auto`
      reads the drafter's acceptance per depth from.
    last_hidden: [B, D] the target's hidden state that predicted `next_token`.
    draft_state: the drafter's own pytree (None for vanilla); the engine never looks inside.
    """

    out_tokens: jax.Array
    num_new: jax.Array
    done: jax.Array
    cache: KVCache
    next_token: jax.Array
    row_keys: jax.Array
    target_calls: jax.Array
    drafted: jax.Array
    accepted: jax.Array
    accept_lengths: jax.Array
    last_hidden: jax.Array
    draft_state: Any = None


def emit_tokens(
    state: DecodeState, spec: DecodeSpec, tokens_BA: jax.Array, n_B: jax.Array
) -> DecodeState:
    """Appends the first n[b] of tokens[b] to each active row, cut at EOS and at the budget.

    Returns the state with out_tokens, num_new, next_token and done updated (cache untouched).
    """
    B, A = tokens_BA.shape
    N = spec.max_new_tokens
    a_A = jnp.arange(A, dtype=jnp.int32)
    valid_BA = a_A[None, :] < n_B[:, None]
    if spec.eos_ids:
        is_eos = jnp.isin(tokens_BA, jnp.asarray(spec.eos_ids)) & valid_BA
        first_eos = jnp.min(jnp.where(is_eos, a_A[None, :], A), axis=1)
        n_B = jnp.minimum(n_B, first_eos + 1)
        hit_eos = first_eos < n_B
    else:
        hit_eos = jnp.zeros((B,), bool)
    n_B = jnp.where(state.done, 0, jnp.minimum(n_B, N - state.num_new))
    slots_BA = state.num_new[:, None] + a_A[None, :]
    slots_BA = jnp.where(a_A[None, :] < n_B[:, None], slots_BA, N)  # N is out of range: dropped
    rows = jnp.arange(B)[:, None]
    out = state.out_tokens.at[rows, slots_BA].set(tokens_BA, mode="drop")
    num_new = state.num_new + n_B
    last = jnp.take_along_axis(tokens_BA, jnp.maximum(n_B - 1, 0)[:, None], axis=1)[:, 0]
    next_token = jnp.where(n_B > 0, last, state.next_token)
    done = state.done | (hit_eos & (n_B > 0)) | (num_new >= N)
    return state.replace(out_tokens=out, num_new=num_new, next_token=next_token, done=done)


def _sample_rows(row_keys, index_B, logits_BV, sampling: SamplingConfig):
    keys = jax.vmap(jax.random.fold_in)(row_keys, index_B)
    return jax.vmap(lambda k, lg: sample_token(k, lg, sampling))(keys, logits_BV)


def prefill(
    config: ModelConfig,
    params: ModelParams,
    spec: DecodeSpec,
    prompt_BP: jax.Array,
    prompt_len_B: jax.Array,
    row_keys: jax.Array,
    cache_len: int,
    mesh: Mesh | None = None,
    feature_layers: tuple[int, ...] = (),
    block: int = 1,
) -> tuple[DecodeState, jax.Array, jax.Array | None]:
    """Runs the padded prompts through the target and emits each row's first token.

    Also returns, for drafters, the target's hidden states at every prompt position [B, P, D] and
    the features of `feature_layers` there [B, P, F, D] (None when none are asked for).
    """
    B, P = prompt_BP.shape
    cache = init_cache(config.L, B, config.K, cache_len, config.H, params.dtype)
    cache = constrain_cache(cache, mesh)
    positions = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32), (B, P))
    hidden, k, v, features = hidden_states(
        config, params, prompt_BP, positions, cache, causal_mask(B, P), feature_layers
    )
    cache = cache.append(k, v).replace(length=prompt_len_B)  # forget the padding
    last_hidden = jnp.take_along_axis(hidden, (prompt_len_B - 1)[:, None, None], axis=1)
    logits = lm_logits(params, last_hidden)[:, 0]
    N = spec.max_new_tokens
    state = DecodeState(
        out_tokens=jnp.full((B, N), NO_TOKEN, jnp.int32),
        num_new=jnp.zeros((B,), jnp.int32),
        done=jnp.zeros((B,), bool),
        cache=cache,
        next_token=jnp.zeros((B,), jnp.int32),
        row_keys=row_keys,
        target_calls=jnp.ones((B,), jnp.int32),
        drafted=jnp.zeros((B,), jnp.int32),
        accepted=jnp.zeros((B,), jnp.int32),
        accept_lengths=jnp.zeros((B, block), jnp.int32),
        last_hidden=last_hidden[:, 0],
    )
    first = _sample_rows(row_keys, state.num_new, logits, spec.sampling)
    return emit_tokens(state, spec, first[:, None], jnp.ones((B,), jnp.int32)), hidden, features


def vanilla_step(
    config: ModelConfig, params: ModelParams, spec: DecodeSpec, state: DecodeState
) -> DecodeState:
    """One target forward over each row's last token: the baseline everything is measured against."""
    B = state.next_token.shape[0]
    cache = state.cache

    def run(cache):
        hidden, k_new, v_new, _ = hidden_states(
            config, params, state.next_token[:, None], cache.length[:, None], cache,
            causal_mask(B, 1),
        )  # fmt: skip
        return lm_logits(params, hidden), k_new, v_new

    def skip(cache):
        kv = jnp.zeros((config.L, B, 1, config.K, config.H), cache.k.dtype)
        return jnp.zeros((B, 1, config.V), jnp.float32), kv, kv

    # The forward sits in a branch (never skipped while a row is active, which the loop ensures)
    # so that XLA reads the cache in place and appends after it: with the reads and the append in
    # one computation, XLA:CPU copied every layer's keys and values twice per step.
    logits, k_new, v_new = jax.lax.cond(jnp.any(~state.done), run, skip, cache)
    new_cache = cache.append(k_new, v_new)
    new_cache = new_cache.replace(length=jnp.where(state.done, cache.length, new_cache.length))
    token = _sample_rows(state.row_keys, state.num_new, logits[:, 0], spec.sampling)
    active = ~state.done
    state = state.replace(cache=new_cache, target_calls=state.target_calls + active)
    return emit_tokens(state, spec, token[:, None], jnp.ones((B,), jnp.int32))


def _target_block(
    config, params, cands: Candidates, cache: KVCache, needed, may_skip, sizes, feature_layers
):
    """One target forward over the block: (logits, hidden, features or None, cache).

    The forward covers only the first t slots, for the smallest t of `sizes` (ascending, the
    last = T) that holds every non-empty slot of the rows that need the target: when no row
    drafted anything that is a 1-token forward (n-gram lookup without a match costs what vanilla
    costs), and a drafter with variable-length chains (SPRINTER) declares more sizes. The outputs
    past t are zeros and the cache length moves by T as for a full block, so `commit` finds the
    block start. When no row needs the target at all (`needed` [B] all False) there is no
    forward (zeros, and nothing is accepted); `may_skip` False (static: drafters that never
    skip) keeps the program without that branch."""
    B, T = cands.tokens.shape
    depth, mask = tree_mask(cands.parent)
    F = len(feature_layers)

    # The branches read the cache and return the block's new keys and values; the one append
    # after the switch writes them in place. (A switch that returned the cache copied it whole on
    # the way in and out of every branch: two copies of every layer's keys and values per step.)
    L, K, H = config.L, config.K, config.H

    def forward_over(t):
        def run(cache):
            hidden, k_new, v_new, features = hidden_states(
                config,
                params,
                cands.tokens[:, :t],
                cache.length[:, None] + depth[:, :t],
                cache,
                mask[:, :t, :t],
                feature_layers,
            )
            logits = lm_logits(params, hidden)
            if t == T:
                return logits, hidden, features, k_new, v_new
            pad = ((0, 0), (0, T - t), (0, 0))
            kv_pad = ((0, 0), (0, 0), (0, T - t), (0, 0), (0, 0))
            return (
                jnp.pad(logits, pad),
                jnp.pad(hidden, pad),
                None if features is None else jnp.pad(features, pad + ((0, 0),)),
                jnp.pad(k_new, kv_pad),
                jnp.pad(v_new, kv_pad),
            )

        return run

    def skip(cache):
        logits = jnp.zeros((B, T, config.V), jnp.float32)
        hidden = jnp.zeros((B, T, config.D), params.dtype)
        features = jnp.zeros((B, T, F, config.D), params.dtype) if F else None
        kv = jnp.zeros((L, B, T, K, H), cache.k.dtype)
        return logits, hidden, features, kv, kv

    occupied = (cands.parent != NO_PARENT).at[:, 0].set(True)  # the root always
    last_slot = jnp.max(jnp.where(occupied, jnp.arange(T)[None, :], 0), axis=1)  # [B]
    used = jnp.max(jnp.where(needed, last_slot + 1, 1))
    size_index = jnp.sum(jnp.asarray(sizes[:-1]) < used).astype(jnp.int32)
    branches = tuple(forward_over(t) for t in sizes)
    if not may_skip:
        out = jax.lax.switch(size_index, branches, cache)
    else:
        branch = jnp.where(jnp.any(needed), 1 + size_index, 0)
        out = jax.lax.switch(branch, (skip, *branches), cache)
    logits, hidden, features, k_new, v_new = out
    return logits, hidden, features, cache.append(k_new, v_new)


def verify_sizes_of(drafter, T: int) -> tuple[int, ...]:
    """The forward lengths the engine may verify a T-slot block with: 1 (no drafts) and T, plus
    those the drafter declares (`verify_sizes`, for blocks that are often mostly empty)."""
    declared = getattr(drafter, "verify_sizes", ()) or ()
    return tuple(sorted({1, T, *(t for t in declared if 1 < t < T)}))


def feature_layers_of(drafter) -> tuple[int, ...]:
    """The target layers whose outputs the drafter reads (none unless it declares some)."""
    return tuple(getattr(drafter, "feature_layers", ()) or ())


def speculative_step(
    config: ModelConfig,
    params: ModelParams,
    spec: DecodeSpec,
    drafter,
    draft_params,
    state: DecodeState,
) -> DecodeState:
    """propose -> one target forward over the block -> accept -> commit -> update -> emit."""
    B = state.next_token.shape[0]
    step_keys = jax.vmap(jax.random.fold_in)(state.row_keys, state.num_new)
    split = jax.vmap(lambda k: jax.random.split(k, 2))(step_keys)
    draft_keys, verify_keys = split[:, 0], split[:, 1]
    cache = state.cache
    ctx = DraftContext(
        root=state.next_token,
        root_position=cache.length,
        hidden=state.last_hidden,
        done=state.done,
        remaining=spec.max_new_tokens - state.num_new,
    )
    cands, draft_state = drafter.propose(
        draft_params, state.draft_state, ctx, draft_keys, spec.sampling
    )
    T = cands.tokens.shape[1]
    active = ~state.done
    needed = active if cands.needs_target is None else active & cands.needs_target
    num_drafted = jnp.where(needed, cands.num_drafted, 0)
    may_skip = cands.needs_target is not None  # static: only such drafters get the skip branch
    logits, hidden, features, new_cache = _target_block(
        config,
        params,
        cands,
        cache,
        needed,
        may_skip,
        verify_sizes_of(drafter, T),
        feature_layers_of(drafter),
    )
    path, n_path, bonus = spec.acceptance.accept(verify_keys, logits, cands, spec.sampling)
    n_path = jnp.where(needed, n_path, 0)  # a row the target skipped keeps nothing
    new_cache = new_cache.commit(T, path, n_path)
    rows = jnp.arange(B)[:, None]
    path_tokens = cands.tokens[rows, path]
    emitted = jnp.concatenate([path_tokens[:, 1:], jnp.zeros((B, 1), jnp.int32)], axis=1)
    last_slot = jnp.maximum(n_path - 1, 0)
    emitted = emitted.at[jnp.arange(B), last_slot].set(bonus)
    last = path[jnp.arange(B), last_slot]
    verified = Verified(
        path=path,
        n_path=n_path,
        path_tokens=path_tokens,
        bonus=bonus,
        new_root_position=cache.length + n_path,
        target_argmax=jnp.argmax(logits, axis=-1).astype(jnp.int32),
        hidden=hidden,
        features=features,
        target_ran=needed,
        candidates=cands,
    )
    draft_state = drafter.update(draft_params, draft_state, verified)
    state = state.replace(
        cache=new_cache,
        draft_state=draft_state,
        last_hidden=jnp.where(needed[:, None], hidden[jnp.arange(B), last], state.last_hidden),
        target_calls=state.target_calls + needed,
        drafted=state.drafted + num_drafted,
        accepted=state.accepted + jnp.where(needed, n_path - 1, 0),
        accept_lengths=state.accept_lengths.at[jnp.arange(B), n_path - 1].add(
            (needed & (num_drafted > 0)).astype(jnp.int32), mode="drop"
        ),
    )
    after = emit_tokens(state, spec, emitted, n_path)
    # The cache keeps the root and the emitted tokens before the new root: when EOS or the budget
    # cut the emission short, accepted drafts past the cut are forgotten too.
    n_emitted = after.num_new - state.num_new
    length = cache.length + jnp.minimum(n_path, n_emitted)
    return after.replace(cache=after.cache.replace(length=length))


def _step_fn(config, spec, drafter, params, draft_params):
    if drafter is None:
        return lambda s: vanilla_step(config, params, spec, s)
    return lambda s: speculative_step(config, params, spec, drafter, draft_params, s)


def _start(
    config, spec, drafter, params, draft_params, prompt_BP, prompt_len_B, row_keys, cache_len, mesh
) -> DecodeState:
    """Prefill, the first token, and the drafter's initial state."""
    layers = feature_layers_of(drafter)
    block = 1 if drafter is None else drafter.block_size
    state, hidden_BPD, features_BPFD = prefill(
        config, params, spec, prompt_BP, prompt_len_B, row_keys, cache_len, mesh, layers, block
    )
    if drafter is not None:
        prompt = Prefill(
            tokens=prompt_BP, length=prompt_len_B, hidden=hidden_BPD, features=features_BPFD
        )
        state = state.replace(draft_state=drafter.init(draft_params, prompt, cache_len))
    return state


def _decode(
    config, spec, drafter, params, draft_params, prompt_BP, prompt_len_B, row_keys, cache_len, mesh
) -> DecodeState:
    """The fused driver: start, then steps until every row is done, in one jitted call."""
    state = _start(
        config,
        spec,
        drafter,
        params,
        draft_params,
        prompt_BP,
        prompt_len_B,
        row_keys,
        cache_len,
        mesh,
    )
    step = _step_fn(config, spec, drafter, params, draft_params)
    return jax.lax.while_loop(lambda s: ~jnp.all(s.done), step, state)


def _advance(config, spec, drafter, max_steps, params, draft_params, state) -> DecodeState:
    """The streaming driver's chunk: at most `max_steps` of the same step, state donated."""
    step = _step_fn(config, spec, drafter, params, draft_params)

    def cond(carry):
        i, s = carry
        return (i < max_steps) & ~jnp.all(s.done)

    def body(carry):
        i, s = carry
        return i + 1, step(s)

    return jax.lax.while_loop(cond, body, (jnp.int32(0), state))[1]


_decode_jit = jax.jit(_decode, static_argnums=(0, 1, 2, 8, 9))
_start_jit = jax.jit(_start, static_argnums=(0, 1, 2, 8, 9))
_advance_jit = jax.jit(_advance, static_argnums=(0, 1, 2, 3), donate_argnums=(6,))


@dataclasses.dataclass
class GenerationResult:
    """Host-side result of one `generate` call.

    Attributes:
      tokens: the new token ids of each row (prompt excluded, EOS included if emitted).
      target_calls, drafted, accepted: per-row counts from the jitted loop.
      seconds: generation wall time after compilation; compile_seconds: the first call's compile.
    """

    tokens: list[list[int]]
    target_calls: list[int]
    drafted: list[int]
    accepted: list[int]
    seconds: float
    compile_seconds: float
    final_state: DecodeState | None = None
    accept_lengths: list[list[int]] = dataclasses.field(default_factory=list)

    @property
    def acceptance_by_depth(self) -> list[float]:
        """a_k for k = 1 .. A-1: the chance that the k-th draft is accepted given the k-1 before it
        were (over all rows; 0 where no call reached depth k-1). `--gamma=auto` plans from these."""
        if not self.accept_lengths:
            return []
        counts = np.asarray(self.accept_lengths, np.int64).sum(axis=0)  # [A]
        reached = np.cumsum(counts[::-1])[::-1]  # reached[j]: calls that accepted >= j drafts
        return [float(reached[k] / reached[k - 1]) if reached[k - 1] else 0.0
                for k in range(1, len(counts))]  # fmt: skip

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft tokens / drafted tokens (0 when nothing was drafted)."""
        return sum(self.accepted) / max(1, sum(self.drafted))

    @property
    def new_tokens(self) -> int:
        return sum(len(t) for t in self.tokens)

    @property
    def tau(self) -> float:
        """Mean new tokens per target call (1.0 for vanilla)."""
        return self.new_tokens / max(1, sum(self.target_calls))

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float("inf")


def prompt_bucket(n: int) -> int:
    """Pads prompt lengths to powers of two (>= 32) so similar prompts share one compilation."""
    return max(MIN_PROMPT_BUCKET, 1 << (max(n, 1) - 1).bit_length())


# Compiled drivers by call signature, least recently used first. Bounded: every XLA:CPU executable
# keeps its machine code in memory mappings of its own (hundreds for one decode loop), and a
# process that compiles shape after shape (a server, a notebook, a test session) would otherwise
# reach the kernel's limit on mappings (vm.max_map_count, 65530 by default), where allocations
# fail and XLA crashes inside a later compile. JAX's own caches keep every executable whose trace
# they hold, so dropping our reference alone frees nothing: an eviction also clears them
# (`jax.clear_caches`); the drivers still held here stay compiled.
_COMPILED: collections.OrderedDict = collections.OrderedDict()
MAX_COMPILED = 8

# On XLA:CPU the decode gives the forward the layer weights one array per layer as well
# (`models.layer_layout`): the 1-token step 1.4x faster, its compile 4x slower.
# SPECJAX_CPU_LAYERS=stacked keeps every forward scanned.
PER_LAYER_ON_CPU = os.environ.get("SPECJAX_CPU_LAYERS", "per_layer") != "stacked"


@dataclasses.dataclass(frozen=True)
class _Call:
    """One generate/stream call made ready for the jitted drivers."""

    config: ModelConfig
    spec: DecodeSpec
    drafter: Any
    cache_len: int
    mesh: Mesh | None
    args: tuple  # (params, draft_params, prompt_BP, prompt_len_B, row_keys)

    @property
    def batch(self) -> int:
        return self.args[2].shape[0]

    def state_shardings(self):
        """Explicit shardings of the decode state under a mesh (None without one)."""
        if self.mesh is None:
            return None
        c = self
        shape = jax.eval_shape(
            lambda *args: _start(c.config, c.spec, c.drafter, *args, c.cache_len, c.mesh), *c.args
        )
        return state_shardings(shape, self.mesh, self.batch)

    def lower(self, driver):
        """`driver` (`_decode` or `_start`) jitted for this call: with a mesh, under explicit
        input shardings (the arguments' own placement) and output shardings (`state_shardings`)."""
        c = self
        if c.mesh is None:
            jitted = _decode_jit if driver is _decode else _start_jit
            return jitted.lower(c.config, c.spec, c.drafter, *c.args, c.cache_len, c.mesh)
        fn = jax.jit(
            lambda *args: driver(c.config, c.spec, c.drafter, *args, c.cache_len, c.mesh),
            in_shardings=placement(c.args, c.mesh),
            out_shardings=c.state_shardings(),
        )
        return fn.lower(*c.args)

    def lower_advance(self, steps: int, state: DecodeState):
        """The streaming chunk for this call, state donated (and, with a mesh, its layout fixed)."""
        c = self
        params, draft_params = c.args[:2]
        if c.mesh is None:
            return _advance_jit.lower(
                c.config, c.spec, c.drafter, steps, params, draft_params, state
            )
        layout = c.state_shardings()
        fn = jax.jit(
            lambda p, d, s: _advance(c.config, c.spec, c.drafter, steps, p, d, s),
            in_shardings=placement((params, draft_params), c.mesh) + (layout,),
            out_shardings=layout,
            donate_argnums=(2,),
        )
        return fn.lower(params, draft_params, state)

    def compiled(self, name: str, fn, *static) -> tuple[Any, float]:
        """The AOT-compiled driver for this call's shapes, and the seconds its compile took."""
        signature = jax.tree.map(lambda x: (x.shape, x.dtype, x.sharding), self.args)
        key = (name, self.config, self.spec, self.drafter, self.cache_len, self.mesh, signature)
        if key in _COMPILED:
            _COMPILED.move_to_end(key)
            return _COMPILED[key], 0.0
        t0 = time.perf_counter()
        _COMPILED[key] = fn(*static)
        if len(_COMPILED) > MAX_COMPILED:
            while len(_COMPILED) > MAX_COMPILED:
                _COMPILED.popitem(last=False)
            jax.clear_caches()
        return _COMPILED[key], time.perf_counter() - t0


def decode_layout(tree, mesh: Mesh | None = None):
    """Every ModelParams in `tree` as the decode runs it: with per-layer arrays for the short
    forwards where the scan would copy stacked ones every step (XLA:CPU, unsharded)."""
    on_cpu = mesh is None and jax.default_backend() == "cpu" and PER_LAYER_ON_CPU
    return for_decode(tree, on_cpu)


def _prepare(
    config: ModelConfig,
    params: ModelParams,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    sampling: SamplingConfig,
    eos_ids: Sequence[int],
    seed: int | Sequence[int],
    max_cache_len: int | None,
    mesh: Mesh | None,
    drafter: Drafter | None,
    draft_params: Any,
    acceptance: AcceptancePolicy,
) -> _Call:
    """Checks the prompts and pads them into one static-shape batch."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise SpecjaxError("every prompt needs at least one token")
    if max_new_tokens < 1:
        raise SpecjaxError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    capacity = min(config.max_positions, max_cache_len or config.max_positions)
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > capacity:
        raise SpecjaxError(
            f"prompt of {longest} tokens + max_new_tokens {max_new_tokens} exceeds the cache of "
            f"{capacity} tokens"
        )
    block = 1 if drafter is None else drafter.block_size
    if block > 1 and longest + max_new_tokens + block > capacity:
        # The last step may write a whole verify block past the budget (a W*L+1 beam tree, say).
        raise SpecjaxError(
            f"a draft block of {block} slots past a prompt of {longest} tokens + max_new_tokens "
            f"{max_new_tokens} exceeds the cache of {capacity} tokens: lower the block (beams, "
            "tree slots, gamma) or max_new_tokens"
        )
    for p in prompts:
        if min(p) < 0 or max(p) >= config.V:
            raise SpecjaxError(f"prompt token ids must be in [0, {config.V})")
    B = len(prompts)
    P = min(prompt_bucket(longest), capacity)
    prompt_BP = np.full((B, P), PAD_TOKEN, np.int32)
    for b, p in enumerate(prompts):
        prompt_BP[b, : len(p)] = p
    prompt_len_B = np.array([len(p) for p in prompts], np.int32)
    seeds = [seed] * B if isinstance(seed, int) else list(seed)
    row_keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))  # one op, any B
    spec = DecodeSpec(max_new_tokens, sampling, tuple(int(e) for e in eos_ids), acceptance)
    cache_len = P + max_new_tokens + block + 1  # slack: a full block may be written past the end
    rows = (jnp.asarray(prompt_BP), jnp.asarray(prompt_len_B), row_keys)
    weights = decode_layout((params, draft_params), mesh)
    if mesh is not None:
        rows = tuple(put_global(x, batch_sharding(mesh, x.shape)) for x in rows)
        # Anything not yet on the mesh (a draft model left unsharded) goes there replicated.
        weights = put_global(weights, placement(weights, mesh))
    return _Call(config, spec, drafter, cache_len, mesh, (*weights, *rows))


def _result(state: DecodeState, seconds: float, compile_seconds: float, keep_state: bool):
    # to_host: under a mesh spanning several processes, each holds only its rows' shards.
    out = to_host(state.out_tokens)
    num_new = to_host(state.num_new)
    return GenerationResult(
        tokens=[out[b, : num_new[b]].tolist() for b in range(out.shape[0])],
        target_calls=to_host(state.target_calls).tolist(),
        drafted=to_host(state.drafted).tolist(),
        accepted=to_host(state.accepted).tolist(),
        seconds=seconds,
        compile_seconds=compile_seconds,
        final_state=state if keep_state else None,
        accept_lengths=to_host(state.accept_lengths).tolist(),
    )


def generate(
    config: ModelConfig,
    params: ModelParams,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    sampling: SamplingConfig = SamplingConfig(),
    eos_ids: Sequence[int] = (),
    seed: int | Sequence[int] = 0,
    max_cache_len: int | None = None,
    mesh: Mesh | None = None,
    drafter: Drafter | None = None,
    draft_params: Any = None,
    acceptance: AcceptancePolicy = ExactAcceptance(),
    keep_state: bool = False,
) -> GenerationResult:
    """Decodes a batch of token-id prompts of different lengths in one jitted loop.

    `drafter` None is vanilla decoding; otherwise a drafter from `specjax.drafters` (a hashable,
    static description, see `specjax.drafter.Drafter`) with its `draft_params` pytree (e.g. the
    draft model's weights), judged by `acceptance` (exact by default; see `specjax.acceptance`).
    `keep_state` returns the final DecodeState (device arrays, caches included) for inspection.
    With a mesh, `params` should already be placed by `specjax.sharding.shard_params`; prompts go
    batch-sharded on "data" and the cache is constrained to the cache rules.
    """
    call = _prepare(
        config, params, prompts, max_new_tokens, sampling, eos_ids, seed, max_cache_len, mesh,
        drafter, draft_params, acceptance,
    )  # fmt: skip
    c = call
    run, compile_seconds = c.compiled("decode", lambda: c.lower(_decode).compile())
    t0 = time.perf_counter()
    state = jax.block_until_ready(run(*c.args))
    return _result(state, time.perf_counter() - t0, compile_seconds, keep_state)


class TokenStream:
    """Iterating yields, chunk by chunk, each row's new tokens (a list per row, maybe empty);
    once exhausted, `result` holds the same GenerationResult `generate` returns."""

    def __init__(self, call: _Call, steps_per_chunk: int, keep_state: bool):
        self._call, self._k, self._keep = call, steps_per_chunk, keep_state
        self.result: GenerationResult | None = None

    def __iter__(self):
        c, k = self._call, self._k
        params, draft_params = c.args[:2]
        start, t_start = c.compiled("start", lambda: c.lower(_start).compile())
        t0 = time.perf_counter()
        state = start(*c.args)
        seconds = time.perf_counter() - t0
        advance, t_advance = c.compiled(f"advance{k}", lambda: c.lower_advance(k, state).compile())
        sent = np.zeros((c.batch,), np.int64)
        while True:
            t0 = time.perf_counter()
            out, num_new, done = tree_to_host((state.out_tokens, state.num_new, state.done))
            seconds += time.perf_counter() - t0
            yield [out[b, sent[b] : num_new[b]].tolist() for b in range(c.batch)]
            sent = num_new.astype(np.int64)
            if done.all():
                break
            t0 = time.perf_counter()
            state = advance(params, draft_params, state)
            state.num_new.block_until_ready()
            seconds += time.perf_counter() - t0
        self.result = _result(state, seconds, t_start + t_advance, self._keep)


def stream(
    config: ModelConfig,
    params: ModelParams,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    sampling: SamplingConfig = SamplingConfig(),
    eos_ids: Sequence[int] = (),
    seed: int | Sequence[int] = 0,
    max_cache_len: int | None = None,
    mesh: Mesh | None = None,
    drafter: Drafter | None = None,
    draft_params: Any = None,
    acceptance: AcceptancePolicy = ExactAcceptance(),
    steps_per_chunk: int = 4,
    keep_state: bool = False,
) -> TokenStream:
    """`generate`, but yielding tokens as they are accepted: the same jitted step, run in chunks
    of at most `steps_per_chunk` steps (a jitted `while_loop` with the state donated), with one
    host read per chunk. Same arguments and same tokens as `generate`."""
    if steps_per_chunk < 1:
        raise SpecjaxError(f"steps_per_chunk must be >= 1, got {steps_per_chunk}")
    call = _prepare(
        config, params, prompts, max_new_tokens, sampling, eos_ids, seed, max_cache_len, mesh,
        drafter, draft_params, acceptance,
    )  # fmt: skip
    return TokenStream(call, steps_per_chunk, keep_state)
