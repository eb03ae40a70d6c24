"""A trained draft head on disk: `head_config.json` (format, kind, shapes, the target it was
trained for) and `head.safetensors` (bfloat16 weights, int32 head token ids), never a pickle.
Kinds: "recurrent" (ReDrafter's head), "medusa" (Medusa's K heads), "ctc" (the CTC drafter's
module, whose embedding and LM head are the target's and so are not saved) and "sprinter"
(SPRINTER's acceptance verifier, which reads a draft model's state: its config's `extra` also
records that draft's fingerprint, `models.fingerprint.draft_fingerprint`).

A head reads the target's hidden states and embedding, so it is only meaningful for the target it
was trained on. The config records that target's fingerprint (`models.fingerprint`) and its width
and depth, and loading checks them. A missing, partial or corrupt directory, or a head made for
another target, is one SpecjaxError line.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from models import ctc_draft
from models.acceptance_verifier import VerifierParams
from models.config import ModelConfig
from models.ctc_draft import CTCDraftHead
from models.errors import SpecjaxError
from models.fingerprint import check_fingerprint, target_fingerprint
from models.medusa_heads import MedusaHeadsParams
from models.params_file import write_weights_dir
from models.recurrent_head import RecurrentHeadParams
from models.transformer import ModelParams

FORMAT = "specjax-head-v1"
CONFIG_FILE = "head_config.json"
WEIGHTS_FILE = "head.safetensors"


def _recurrent_shapes(config: ModelConfig, tensors) -> tuple[dict, int]:
    """ReDrafter's head: R residual blocks at width 2D (R and the columns read from the file)."""
    D, R, cols = config.D, tensors["res_w"].shape[0], tensors["lm_head"].shape[-1]
    shapes = {
        "rnn_w": (D, D),
        "rnn_u": (D, D),
        "rnn_b": (D,),
        "res_w": (R, 2 * D, 2 * D),
        "res_b": (R, 2 * D),
        "lm_head": (2 * D, cols),
    }
    return shapes, cols


def _medusa_shapes(config: ModelConfig, tensors) -> tuple[dict, int]:
    """Medusa's K heads (K and the columns read from the file)."""
    D, K, cols = config.D, tensors["res_w"].shape[0], tensors["lm_head"].shape[-1]
    return {"res_w": (K, D, D), "res_b": (K, D), "lm_head": (K, D, cols)}, cols


def _ctc_shapes(config: ModelConfig, tensors) -> tuple[dict, int]:
    """The CTC drafter's module: every shape follows from the target's config."""
    ids = tensors.get("head_token_ids")
    return ctc_draft.shapes(config), config.V if ids is None else len(ids)


def _verifier_shapes(config: ModelConfig, tensors) -> tuple[dict, int]:
    """N classifiers over F features (both read from the file; F is checked against the draft
    when the verifier is paired with one)."""
    w = tensors["w"].shape
    if len(w) != 2:
        raise SpecjaxError(f"verifier tensor w has shape {tuple(w)}, expected [N, F]")
    return {"w": tuple(w), "b": (w[0],)}, config.V


# kind -> (params class, (target config, tensors) -> (expected shapes, head columns))
KINDS = {
    "recurrent": (RecurrentHeadParams, _recurrent_shapes),
    "medusa": (MedusaHeadsParams, _medusa_shapes),
    "ctc": (CTCDraftHead, _ctc_shapes),
    "sprinter": (VerifierParams, _verifier_shapes),
}
_WEIGHT_NAMES = {
    "recurrent": ("rnn_w", "rnn_u", "rnn_b", "res_w", "res_b", "lm_head"),
    "medusa": ("res_w", "res_b", "lm_head"),
    "ctc": ctc_draft.WEIGHT_NAMES,
    "sprinter": ("w", "b"),
}


def _kind_of(head) -> str:
    for kind, (cls, _) in KINDS.items():
        if isinstance(head, cls):
            return kind
    raise TypeError(f"not a head: {type(head).__name__}")


def _weight_names(kind: str) -> tuple[str, ...]:
    return _WEIGHT_NAMES[kind]


def save_head(
    path: str | Path,
    head: RecurrentHeadParams | MedusaHeadsParams | CTCDraftHead,
    target_config: ModelConfig,
    target_params: ModelParams,
    *,
    extra: dict | None = None,
) -> Path:
    """Writes `head` for this target to `path/` (files written to temporary names, then renamed).
    `extra` (training data size, settings, metrics) goes into the config as-is."""
    path = Path(path)
    kind = _kind_of(head)
    tensors = {
        n: np.asarray(jax.device_get(getattr(head, n))).astype(ml_dtypes.bfloat16)
        for n in _weight_names(kind)
    }
    if head.head_token_ids is not None:
        tensors["head_token_ids"] = np.asarray(jax.device_get(head.head_token_ids), np.int32)
    meta = {
        "format": FORMAT,
        "kind": kind,
        "shapes": {n: list(t.shape) for n, t in tensors.items()},
        "target": {
            "fingerprint": target_fingerprint(target_config, target_params),
            "D": target_config.D,
            "L": target_config.L,
        },
        **({"extra": extra} if extra else {}),
    }
    return write_weights_dir(path, WEIGHTS_FILE, tensors, FORMAT, CONFIG_FILE, meta)


def head_extra(path: str | Path) -> dict:
    """The `extra` a saved head's config records (training settings, metrics), {} if none; a
    missing or unreadable config is one SpecjaxError line."""
    cfg_file = Path(path) / CONFIG_FILE
    try:
        return json.loads(cfg_file.read_text()).get("extra", {})
    except (OSError, ValueError, AttributeError) as e:
        raise SpecjaxError(f"corrupt head config {cfg_file}: {type(e).__name__}: {e}") from None


def is_head_dir(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def load_head(
    path: str | Path,
    target_config: ModelConfig,
    target_params: ModelParams,
    kind: str = "recurrent",
) -> RecurrentHeadParams | MedusaHeadsParams | CTCDraftHead:
    """The `kind` head saved at `path`, checked against the target, in the target's dtype."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    cfg_file, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not cfg_file.is_file():
        raise SpecjaxError(f"{path} is not a saved head: {CONFIG_FILE} is missing")
    if not weights.is_file():
        raise SpecjaxError(f"head {path} is incomplete: {WEIGHTS_FILE} is missing")
    try:
        meta = json.loads(cfg_file.read_text())
        if meta.get("format") != FORMAT or meta.get("kind") not in KINDS:
            raise SpecjaxError(f"{cfg_file} is not a specjax head config ({FORMAT})")
        if meta["kind"] != kind:
            raise SpecjaxError(f"{path} holds a {meta['kind']} head, not a {kind} head")
        recorded, D, L = (meta["target"][k] for k in ("fingerprint", "D", "L"))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise SpecjaxError(f"corrupt head config {cfg_file}: {type(e).__name__}: {e}") from None
    check_fingerprint(recorded, target_config, target_params, f"head {path}")
    if (D, L) != (target_config.D, target_config.L):
        raise SpecjaxError(
            f"head {path} was trained for a target of width {D} and {L} layers, not "
            f"{target_config.D} and {target_config.L}"
        )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise SpecjaxError(f"corrupt or truncated head weights {weights}: {e}") from None
    V = target_config.V
    names = _weight_names(kind)
    for name in names:
        if name not in tensors:
            raise SpecjaxError(f"head weights {weights} lack tensor {name}")
    cls, shapes = KINDS[kind]
    want, cols = shapes(target_config, tensors)
    for name, shape in want.items():
        if tuple(tensors[name].shape) != shape:
            raise SpecjaxError(
                f"head tensor {name} has shape {tuple(tensors[name].shape)}, expected {shape}"
            )
    ids = None
    if "head_token_ids" in tensors:
        ids = np.asarray(tensors["head_token_ids"])
        if ids.shape != (cols,) or ids.dtype != np.int32 or ids.min() < 0 or ids.max() >= V:
            raise SpecjaxError(f"head weights {weights}: head_token_ids are not valid token ids")
        ids = jnp.asarray(ids)
    elif cols != V:
        raise SpecjaxError(f"head {path} has {cols} columns but no head_token_ids")
    dtype = target_params.dtype
    return cls(**{n: jnp.asarray(tensors[n], dtype=dtype) for n in names}, head_token_ids=ids)
