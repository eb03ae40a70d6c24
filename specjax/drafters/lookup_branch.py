"""A prompt-lookup branch beside a tree drafter's own guesses (`--lookup=K` for medusa and ctc).

Heads that guess from the target's hidden state miss what the answer copies: a name from the
prompt, code it quotes, a phrase said twice. Prompt lookup (`specjax.drafters.ngram`) finds
exactly those, and the two are right at different places: on the 24 bench prompts of the README
the shipped Medusa heads alone predict tau 1.44 in a 4-slot block, the lookup chain alone 1.39
(2 tokens), and the two sharing the 4 slots 1.73 (Performance has the measurement).

The branch shares the block rather than widening it, since every slot costs verify time: where
the context has a match, its chain of up to K tokens takes the slots of the inner tree's least
likely nodes (`priority`: the inner nodes, most valuable first, parents before children); where
it has none, the inner tree keeps all of them. A chain token equal to an inner guess under the
same parent is merged with it (`dedup_prefixes`), so the inner node's subtree hangs under the
chain and its slot goes to the next inner node. Both halves are deterministic, so the exact
policy's one-hot rule keeps greedy output equal to vanilla and sampled output the target's.

The params are `BranchParams`: the inner drafter's, and optionally an answer store
(`models.answer_store`) that the chain comes from where the context has no match.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import struct

from models.answer_store import AnswerStore
from specjax.candidates import (
    Candidates,
    DraftContext,
    Prefill,
    Verified,
    dedup_prefixes,
    pack_tree,
)
from specjax.drafters.ngram import NgramDrafter, NgramState


@struct.dataclass
class BranchParams:
    inner: Any
    store: AnswerStore | None = None


@struct.dataclass
class LookupBranchState:
    inner: Any
    lookup: NgramState


@dataclasses.dataclass(frozen=True)
class LookupBranch:
    """inner: a drafter whose nodes are chosen deterministically (no `q_probs`); priority: its
    draft node indices (1 ... T - 1) in the order they keep their slots, topological; num_tokens:
    K, the longest lookup chain; max_ngram: the longest suffix matched."""

    inner: Any
    priority: tuple[int, ...]
    num_tokens: int
    max_ngram: int = 3

    def __post_init__(self):
        if sorted(self.priority) != list(range(1, self.inner.block_size)):
            raise ValueError(f"priority must order nodes 1..{self.inner.block_size - 1}")

    @property
    def block_size(self) -> int:
        return self.inner.block_size

    @property
    def _lookup(self) -> NgramDrafter:
        return NgramDrafter(max_ngram=self.max_ngram, num_tokens=self.num_tokens)

    def init(self, params: BranchParams, prefill: Prefill, cache_len: int) -> LookupBranchState:
        return LookupBranchState(
            inner=self.inner.init(params.inner, prefill, cache_len),
            lookup=self._lookup.init(None, prefill, cache_len),
        )

    def propose(
        self, params: BranchParams, state: LookupBranchState, ctx: DraftContext, keys_B, sampling
    ):
        inner, inner_state = self.inner.propose(params.inner, state.inner, ctx, keys_B, sampling)
        if inner.q_probs is not None:
            raise ValueError("a lookup branch needs an inner drafter with deterministic nodes")
        chain, _ = self._lookup.propose(
            params.store, state.lookup, ctx, keys_B, sampling
        )  # [B, K + 1]
        order = np.array([0, *self.priority])  # static: the inner nodes by priority
        new_index = jnp.asarray(np.argsort(order), jnp.int32)
        tokens = inner.tokens[:, order]
        parent = inner.parent[:, order]
        parent = jnp.where(parent >= 0, new_index[jnp.maximum(parent, 0)], parent)
        # block before packing: root, the chain (K), the inner nodes (T - 1) shifted past it
        K = self.num_tokens
        tokens = jnp.concatenate([chain.tokens, tokens[:, 1:]], axis=1)
        inner_parent = parent[:, 1:]
        parent = jnp.concatenate(
            [chain.parent, jnp.where(inner_parent >= 1, inner_parent + K, inner_parent)], axis=1
        )
        parent = dedup_prefixes(tokens, parent)
        tokens, parent = pack_tree(tokens, parent, self.block_size)
        return Candidates(tokens=tokens, parent=parent), state.replace(inner=inner_state)

    def update(
        self, params: BranchParams, state: LookupBranchState, verified: Verified
    ) -> LookupBranchState:
        return LookupBranchState(
            inner=self.inner.update(params.inner, state.inner, verified),
            lookup=self._lookup.update(None, state.lookup, verified),
        )


def node_priority(paths, accuracy: np.ndarray | None) -> tuple[int, ...]:
    """Draft node indices 1..len(paths) (node i + 1 is paths[i]) by the chance their whole path
    is right (accuracy[d, r]: head d's rank-r guess is right; independent across depths, as the
    tree builder assumes), likeliest first; shallower first on ties, so parents come before
    their children. Without accuracies: shallowest and best-ranked first."""

    def likelihood(path) -> float:
        if accuracy is None or len(path) > accuracy.shape[0]:
            return 0.0
        return float(
            np.prod([accuracy[d, r] if r < accuracy.shape[1] else 0.0 for d, r in enumerate(path)])
        )

    order = sorted(
        range(len(paths)), key=lambda i: (-likelihood(paths[i]), len(paths[i]), paths[i])
    )
    return tuple(i + 1 for i in order)
