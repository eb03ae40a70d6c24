"""Training checkpoints: orbax `CheckpointManager`, verified on restore.

Orbax writes each step into a temporary directory and renames it when complete, so a crash never
leaves a half-written step under its final name. What it cannot see is a step damaged later (a
truncated or garbled file, a deleted one): restoring may fail deep inside tensorstore, or worse,
succeed with wrong numbers. So every save also stores a sha256 of the state's bytes next to it
(a JSON item), and `restore` recomputes it; any failure becomes one SpecjaxError line that names
the step directory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from models.errors import SpecjaxError

STATE, META = "state", "meta"


def tree_checksum(tree: Any) -> str:
    """sha256 over every leaf's dtype, shape and bytes, in tree order."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        a = np.asarray(leaf)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


class Checkpoints:
    """Steps of one run under `directory`, the newest `max_to_keep` kept."""

    def __init__(self, directory: str | Path, max_to_keep: int):
        self.directory = Path(directory).resolve()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=(STATE, META)
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Starts an asynchronous save of `state` with `meta` (a JSON dict) and its checksum."""
        meta = dict(meta, step=step, checksum=tree_checksum(state))
        self._manager.save(
            step,
            args=ocp.args.Composite(
                **{STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(meta)}
            ),
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        """(state, meta) of `step`, shaped and placed like `abstract_state`; damage is one line."""
        where = self.directory / str(step)
        others = [s for s in self.all_steps() if s != step]
        hint = f"; earlier steps here: {others}" if others else ""
        hint += " (delete the damaged step directory to resume from another)"
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    **{
                        STATE: ocp.args.StandardRestore(abstract_state),
                        META: ocp.args.JsonRestore(),
                    }
                ),
            )
            state, meta = restored[STATE], restored[META]
        except Exception as e:  # orbax/tensorstore raise many types; all mean the same here
            first = (str(e).strip().splitlines() or [""])[0].split(". See full")[0][:200]
            raise SpecjaxError(
                f"checkpoint {where} is incomplete or corrupt ({type(e).__name__}: {first}){hint}"
            ) from None
        if not isinstance(meta, dict) or tree_checksum(state) != meta.get("checksum"):
            raise SpecjaxError(f"checkpoint {where} is corrupt (checksum mismatch){hint}")
        return state, meta

    def wait(self) -> None:
        """Blocks until every started save is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
