"""Sharding said once: logical axis names per array, and rules from logical axes to mesh axes.

The mesh has axes ("data", "model"): batch on "data"; attention heads, MLP width and vocab on
"model" (MaxText's `logical_axis_rules` idea). Models and drafters never name devices. A dimension
that the mesh axis does not divide is replicated instead (SmolLM2 has 3 kv heads), so any model runs
on any mesh; GSPMD keeps the numbers identical to the unsharded run.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from models.cache import KVCache
from models.transformer import LayerParams, ModelParams

MESH_AXES = ("data", "model")

# Logical axis -> mesh axis.
RULES = {
    "batch": "data",
    "vocab": "model",
    "qkv": "model",
    "heads": "model",
    "mlp": "model",
    "kv_heads": "model",
}

# Logical axes of every array; None entries are replicated.
LAYER_AXES = LayerParams(
    attn_norm=("layers", "embed"),
    wqkv=("layers", "embed", "qkv"),
    wo=("layers", "heads", "embed"),
    mlp_norm=("layers", "embed"),
    w_in=("layers", "embed", "mlp"),
    w_out=("layers", "mlp", "embed"),
    bqkv=("layers", "qkv"),
    attn_norm_bias=("layers", "embed"),
    bo=("layers", "embed"),
    mlp_norm_bias=("layers", "embed"),
    b_in=("layers", "mlp"),
    b_out=("layers", "embed"),
)
CACHE_AXES = ("layers", "batch", "kv_heads", "length", "head_dim")


def make_mesh(data: int = 1, model: int | None = None) -> Mesh:
    """A ("data", "model") mesh over the local devices; model defaults to all that data leaves."""
    devices = jax.devices()
    model = model or len(devices) // data
    return Mesh(np.asarray(devices[: data * model]).reshape(data, model), MESH_AXES)


def parse_mesh_flag(value: str) -> tuple[int, int] | str:
    """--mesh checked without touching devices: "" or "auto" as given, "DxM" as (D, M)."""
    from models.errors import SpecjaxError

    if value in ("", "auto"):
        return value
    data, _, model = value.partition("x")
    if not (data.isdigit() and model.isdigit()) or int(data) < 1 or int(model) < 1:
        raise SpecjaxError(f"--mesh is auto or DATAxMODEL (2x4, say), got {value!r}")
    return int(data), int(model)


def mesh_from_flag(value: str) -> Mesh | None:
    """The mesh a --mesh flag names: "" none (one device), "auto" the target over every device
    ("model"), "DxM" D-way data by M-way model. A multi-process run always gets a mesh over every
    process's devices ("auto" unless DxM says otherwise)."""
    from models.errors import SpecjaxError

    shape = parse_mesh_flag(value)
    n, processes = jax.device_count(), jax.process_count()
    if shape == "":
        return make_mesh(1) if processes > 1 else None
    if shape == "auto":
        return make_mesh(1)
    data, model = shape
    if data * model > n or (processes > 1 and data * model != n):
        need = "all" if processes > 1 else "at most"
        raise SpecjaxError(f"--mesh={value} needs {data * model} devices; it may use {need} {n}")
    return make_mesh(data, model)


def target_on_mesh(params: ModelParams, value: str) -> tuple[ModelParams, Mesh | None]:
    """(params, mesh) as a --mesh flag asks: the target placed by the rules on `mesh_from_flag`'s
    mesh, or left as it is (and None) when there is no mesh."""
    mesh = mesh_from_flag(value)
    return (params, None) if mesh is None else (shard_params(params, mesh), mesh)


def spec_for(shape: tuple[int, ...], axes: tuple[str | None, ...], mesh: Mesh) -> PartitionSpec:
    """Maps logical axes to mesh axes, replicating any dimension the mesh axis does not divide."""
    out = []
    for dim, name in zip(shape, axes, strict=True):
        mesh_axis = RULES.get(name)
        ok = mesh_axis is not None and dim % mesh.shape[mesh_axis] == 0
        out.append(mesh_axis if ok else None)
    return PartitionSpec(*out)


def _named(x, axes, mesh):
    return NamedSharding(mesh, spec_for(x.shape, axes, mesh))


def param_shardings(params: ModelParams, mesh: Mesh) -> ModelParams:
    """A ModelParams-shaped tree of NamedShardings."""
    layers = jax.tree.map(
        lambda x, axes: None if x is None else _named(x, axes, mesh),
        params.layers,
        LAYER_AXES,
        is_leaf=lambda x: x is None or isinstance(x, tuple),
    )

    def opt(x, axes):
        return None if x is None else _named(x, axes, mesh)

    return ModelParams(
        embed=_named(params.embed, ("vocab", "embed"), mesh),
        layers=layers,
        final_norm=_named(params.final_norm, ("embed",), mesh),
        lm_head=opt(params.lm_head, ("embed", "vocab")),
        final_norm_bias=opt(params.final_norm_bias, ("embed",)),
        pos_embed=opt(params.pos_embed, ("positions", "embed")),
        head_token_ids=opt(params.head_token_ids, (None,)),
    )


def shard_params(params: ModelParams, mesh: Mesh) -> ModelParams:
    """Places the params on the mesh by the rules."""
    return jax.device_put(params, param_shardings(params, mesh))


def constrain_cache(cache: KVCache, mesh: Mesh | None) -> KVCache:
    """Inside jit: kv heads on "model", batch on "data" (no-op without a mesh)."""
    if mesh is None:
        return cache
    s = NamedSharding(mesh, spec_for(cache.k.shape, CACHE_AXES, mesh))
    return cache.replace(
        k=jax.lax.with_sharding_constraint(cache.k, s),
        v=jax.lax.with_sharding_constraint(cache.v, s),
    )


def batch_sharding(mesh: Mesh, shape: tuple[int, ...]) -> NamedSharding:
    """Prompts and per-row arrays: batch on "data"."""
    return NamedSharding(mesh, spec_for(shape, ("batch",) + (None,) * (len(shape) - 1), mesh))


def state_shardings(state_shape, mesh: Mesh, batch: int):
    """NamedShardings for a decode state (any pytree of arrays or ShapeDtypeStructs): the KV
    cache's keys and values by CACHE_AXES, every other array with a leading batch dimension
    batch-sharded on "data" (per-row counters, outputs, keys, a drafter's per-row state), and
    the rest replicated. The jitted loop gets these as its explicit output shardings, so the state
    comes back laid out as it went in and the streaming driver's donated input matches."""

    def one(path, x):
        names = [getattr(p, "name", None) for p in path]
        if names[-1:] in (["k"], ["v"]) and len(x.shape) == len(CACHE_AXES):
            return NamedSharding(mesh, spec_for(x.shape, CACHE_AXES, mesh))
        if x.shape and x.shape[0] == batch:
            return batch_sharding(mesh, x.shape)
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree_util.tree_map_with_path(one, state_shape)


def placement(tree, mesh: Mesh):
    """Each array's own sharding where it is already laid out on `mesh`, else replicated: the
    explicit input shardings of the jitted loop (the engine places its arguments by them)."""
    replicated = NamedSharding(mesh, PartitionSpec())

    def one(x):
        s = getattr(x, "sharding", None)
        return s if isinstance(s, NamedSharding) and s.mesh == mesh else replicated

    return jax.tree.map(one, tree)
