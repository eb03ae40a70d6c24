"""The contract between the decode loop and a drafting method, written once.

A drafter is a frozen (hashable) dataclass, a static argument of the jitted loop; its arrays
(`params`: draft-model weights, a trained head, a phrase pool) travel separately as a traced
pytree, and its per-row state is a pytree the engine carries but never looks inside. One step is

    propose -> one target forward over the block -> accept (an `AcceptancePolicy`) -> commit the
    target's cache -> update -> emit,

so a new method is one file implementing this protocol plus one registry entry.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax

from specjax.candidates import Candidates, DraftContext, Prefill, Verified
from specjax.sampling import SamplingConfig


class Drafter(Protocol):
    """Attributes and methods the engine relies on.

    block_size: T, the static number of slots of every block (root + draft nodes).
    feature_layers: optional (default none), a static tuple of target layer indices whose
      outputs the drafter reads (EAGLE-3 style): they arrive as `Prefill.features` and
      `Verified.features`; a drafter that names none leaves the target forward as it is.
    init: the drafter's state after the prompts (`prefill` carries the target's hidden states at
      every prompt position); `cache_len` is the number of slots the target's cache has.
    propose: the block to verify, from the state and what the target last produced (`ctx`);
      `keys_B` is one PRNG key per row for drafters that sample.
    update: the state after the target judged the block (accepted path, bonus token, the target's
      hidden states at every node).
    """

    @property
    def block_size(self) -> int: ...

    def init(self, params: Any, prefill: Prefill, cache_len: int) -> Any: ...

    def propose(
        self,
        params: Any,
        state: Any,
        ctx: DraftContext,
        keys_B: jax.Array,
        sampling: SamplingConfig,
    ) -> tuple[Candidates, Any]: ...

    def update(self, params: Any, state: Any, verified: Verified) -> Any: ...
