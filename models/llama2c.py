"""Converts a llama2.c legacy checkpoint + tokenizer.bin into a Hugging Face Llama directory.

Why: the tinyllamas checkpoints (stories260K, ...) are the smallest real pretrained Llamas, so they
are the cheapest end-to-end check of the specjax forward and of speculative decoding; converting
them to the HF layout lets every loader (specjax, transformers) read them the same way.

Usage:
  python -m models.llama2c --checkpoint=stories260K.bin --tokenizer=tok512.bin --out=DIR

Writes `model.safetensors`, `config.json`, `tokenizer.json`, `tokenizer_config.json` and
`special_tokens_map.json`. Two layout changes happen on the way:
  * RoPE: llama2.c rotates adjacent pairs (x[2i], x[2i+1]); HF Llama rotates halves
    (x[i], x[i + H/2]), so the rows of wq and wk are permuted per head
    (`interleaved_to_half_rotary`).
  * Tokenizer: llama2.c stores sentencepiece's '▁' as a plain ' ' and BOS/EOS as "\\n<s>\\n" /
    "\\n</s>\\n"; the HF tokenizer gets '▁', "<s>" and "</s>", and BPE merges ranked by the score
    of the merged piece, so HF's lowest-rank-first merging equals llama2.c's best-score-first one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
from absl import app, flags
from safetensors.numpy import save_file
from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
from tokenizers.models import BPE

from models.bpe_merges import merges_by_score
from models.errors import SpecjaxError

FLAGS = flags.FLAGS

# Fixed by llama2.c (run.c hard-codes both).
RMS_NORM_EPS = 1e-5
ROPE_THETA = 10000.0
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
NUM_BYTE_TOKENS = 256  # ids 3..258 are <0x00>..<0xFF>
FIRST_BYTE_ID = 3
SPIECE_SPACE = "\u2581"  # '▁'
# llama2.c's export.py v1/v2 files start with this uint32 ("ak42"); the legacy (v0) file does not.
_V1_MAGIC = 0x616B3432
_HEADER_FMT = "<7i"
_HEADER_BYTES = struct.calcsize(_HEADER_FMT)


@dataclasses.dataclass(frozen=True)
class Llama2cHeader:
    """The 7-int32 header of a legacy llama2.c checkpoint (vocab_size sign already decoded)."""

    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared_classifier: bool  # header vocab_size > 0: the output layer reuses the embedding

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim


def _check_header(h: Llama2cHeader, path: Path) -> None:
    """Rejects headers that are not a plausible legacy llama2.c file, before sizing anything."""
    fields = {
        "dim": h.dim,
        "hidden_dim": h.hidden_dim,
        "n_layers": h.n_layers,
        "n_heads": h.n_heads,
        "n_kv_heads": h.n_kv_heads,
        "vocab_size": h.vocab_size,
        "seq_len": h.seq_len,
    }
    for name, value in fields.items():
        if value <= 0:
            raise SpecjaxError(
                f"{path}: header field {name}={value} is not positive; "
                "not a legacy llama2.c checkpoint"
            )
    if h.dim % h.n_heads or h.n_heads % h.n_kv_heads or h.head_dim % 2:
        raise SpecjaxError(
            f"{path}: inconsistent header (dim={h.dim}, n_heads={h.n_heads}, "
            f"n_kv_heads={h.n_kv_heads}): dim must split into n_heads even-sized heads and "
            "n_heads must be a multiple of n_kv_heads"
        )


def read_header(path: str | os.PathLike[str]) -> Llama2cHeader:
    """Reads and validates the header; a wrong or truncated file is a one-line SpecjaxError."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(_HEADER_BYTES)
    except OSError as e:
        raise SpecjaxError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if len(raw) < _HEADER_BYTES:
        raise SpecjaxError(
            f"{path}: {len(raw)} bytes is too short for a llama2.c header ({_HEADER_BYTES} bytes)"
        )
    if struct.unpack_from("<I", raw)[0] == _V1_MAGIC:
        raise SpecjaxError(
            f"{path}: this is a llama2.c version-1/2 export (magic 'ak42'); only the legacy "
            "float32 layout is supported (re-export with export.py --version 0)"
        )
    dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab, seq_len = struct.unpack(_HEADER_FMT, raw)
    header = Llama2cHeader(
        dim=dim,
        hidden_dim=hidden_dim,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        vocab_size=abs(vocab),
        seq_len=seq_len,
        shared_classifier=vocab > 0,
    )
    _check_header(header, path)
    return header


def _tensor_shapes(h: Llama2cHeader) -> list[tuple[str, tuple[int, ...]]]:
    """File order and shapes; matrices are nn.Linear weights [out, in], stacked over layers."""
    D, F, L, V, kv = h.dim, h.hidden_dim, h.n_layers, h.vocab_size, h.kv_dim
    shapes = [
        ("emb_VD", (V, D)),
        ("rms_att_LD", (L, D)),
        ("wq_LDD", (L, D, D)),
        ("wk_LKVD", (L, kv, D)),
        ("wv_LKVD", (L, kv, D)),
        ("wo_LDD", (L, D, D)),
        ("rms_ffn_LD", (L, D)),
        ("w1_LFD", (L, F, D)),
        ("w2_LDF", (L, D, F)),
        ("w3_LFD", (L, F, D)),
        ("rms_final_D", (D,)),
        # Precomputed RoPE tables; unused (run.c recomputes them, HF does too).
        ("freq_cis_real_SH2", (h.seq_len, h.head_dim // 2)),
        ("freq_cis_imag_SH2", (h.seq_len, h.head_dim // 2)),
    ]
    if not h.shared_classifier:
        shapes.append(("wcls_VD", (V, D)))
    return shapes


def read_checkpoint(
    path: str | os.PathLike[str],
) -> tuple[Llama2cHeader, dict[str, np.ndarray]]:
    """Reads a legacy llama2.c checkpoint into named float32 arrays (memory-mapped, read-only).

    The file size must match the header exactly, so a truncated download or a file of another
    layout is caught here instead of producing garbage weights.
    """
    path = Path(path)
    header = read_header(path)
    shapes = _tensor_shapes(header)
    n_floats = sum(int(np.prod(s)) for _, s in shapes)
    expected = _HEADER_BYTES + 4 * n_floats
    actual = path.stat().st_size
    if actual != expected:
        kind = "truncated" if actual < expected else "has trailing bytes"
        raise SpecjaxError(
            f"{path}: file {kind} ({actual} bytes, the header "
            f"dim={header.dim} n_layers={header.n_layers} vocab={header.vocab_size} "
            f"implies {expected})"
        )
    flat = np.memmap(path, dtype="<f4", mode="r", offset=_HEADER_BYTES, shape=(n_floats,))
    tensors: dict[str, np.ndarray] = {}
    start = 0
    for name, shape in shapes:
        size = int(np.prod(shape))
        tensors[name] = flat[start : start + size].reshape(shape)
        start += size
    return header, tensors


def interleaved_to_half_rotary(w_out_in: np.ndarray, n_heads: int) -> np.ndarray:
    """Permutes the output rows of a Q or K projection from adjacent-pair to half-split RoPE.

    llama2.c and llama.cpp rotate pairs (x[2i], x[2i+1]) of each head; HF Llama rotates
    (x[i], x[i + H/2]). Reordering each head's rows as [even rows, odd rows] makes the half
    rotation of W' x equal the same permutation of the pair rotation of W x, so q.k is unchanged.

    Args:
      w_out_in: [n_heads * H, ...] (a weight [out, in] or a bias [out]).
      n_heads: heads in the output axis (Q heads for wq, KV heads for wk).

    Returns:
      The array with rows permuted, same shape and dtype.
    """
    out = w_out_in.shape[0]
    if n_heads <= 0 or out % n_heads or (out // n_heads) % 2:
        raise SpecjaxError(
            f"cannot split {out} rows into {n_heads} heads of even size for the RoPE permutation"
        )
    rest = w_out_in.shape[1:]
    w_QxH2x2 = w_out_in.reshape(n_heads, out // n_heads // 2, 2, *rest)
    return np.ascontiguousarray(np.swapaxes(w_QxH2x2, 1, 2).reshape(w_out_in.shape))


def hf_config(header: Llama2cHeader) -> dict:
    """The config.json dict of the equivalent HF LlamaForCausalLM."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": header.dim,
        "intermediate_size": header.hidden_dim,
        "num_hidden_layers": header.n_layers,
        "num_attention_heads": header.n_heads,
        "num_key_value_heads": header.n_kv_heads,
        "head_dim": header.head_dim,
        "vocab_size": header.vocab_size,
        "max_position_embeddings": header.seq_len,
        "rms_norm_eps": RMS_NORM_EPS,
        "rope_theta": ROPE_THETA,
        "tie_word_embeddings": header.shared_classifier,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "hidden_act": "silu",
        "torch_dtype": "float32",
        "use_cache": True,
    }


def hf_state_dict(header: Llama2cHeader, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Maps llama2.c arrays to HF Llama parameter names (contiguous float32, RoPE rows permuted)."""

    def c(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=np.float32)

    out = {"model.embed_tokens.weight": c(tensors["emb_VD"])}
    for i in range(header.n_layers):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = c(tensors["rms_att_LD"][i])
        out[p + "self_attn.q_proj.weight"] = interleaved_to_half_rotary(
            c(tensors["wq_LDD"][i]), header.n_heads
        )
        out[p + "self_attn.k_proj.weight"] = interleaved_to_half_rotary(
            c(tensors["wk_LKVD"][i]), header.n_kv_heads
        )
        out[p + "self_attn.v_proj.weight"] = c(tensors["wv_LKVD"][i])
        out[p + "self_attn.o_proj.weight"] = c(tensors["wo_LDD"][i])
        out[p + "post_attention_layernorm.weight"] = c(tensors["rms_ffn_LD"][i])
        out[p + "mlp.gate_proj.weight"] = c(tensors["w1_LFD"][i])
        out[p + "mlp.down_proj.weight"] = c(tensors["w2_LDF"][i])
        out[p + "mlp.up_proj.weight"] = c(tensors["w3_LFD"][i])
    out["model.norm.weight"] = c(tensors["rms_final_D"])
    if not header.shared_classifier:
        out["lm_head.weight"] = c(tensors["wcls_VD"])
    return out


def read_tokenizer(path: str | os.PathLike[str], vocab_size: int) -> list[tuple[bytes, float]]:
    """Reads llama2.c's tokenizer.bin: (piece bytes, score) for exactly `vocab_size` tokens."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SpecjaxError(f"cannot read tokenizer {path}: {e.strerror or e}") from None
    if len(data) < 4:
        raise SpecjaxError(f"{path}: too short for a llama2.c tokenizer.bin")
    (max_len,) = struct.unpack_from("<i", data)
    if max_len <= 0:
        raise SpecjaxError(
            f"{path}: max_token_length={max_len} is not positive; not a tokenizer.bin"
        )
    pieces: list[tuple[bytes, float]] = []
    offset = 4
    for i in range(vocab_size):
        if offset + 8 > len(data):
            raise SpecjaxError(
                f"{path}: truncated after {i} tokens (the checkpoint has vocab_size={vocab_size})"
            )
        score, length = struct.unpack_from("<fi", data, offset)
        offset += 8
        if not 0 < length <= max_len or offset + length > len(data):
            raise SpecjaxError(
                f"{path}: token {i} has length {length} (max_token_length={max_len}, "
                f"{len(data) - offset} bytes left); corrupt or truncated tokenizer.bin"
            )
        pieces.append((data[offset : offset + length], score))
        offset += length
    if offset != len(data):
        raise SpecjaxError(
            f"{path}: {len(data) - offset} bytes left after {vocab_size} tokens; "
            "this tokenizer does not match the checkpoint's vocab_size"
        )
    return pieces


def _hf_piece(token_id: int, piece: bytes) -> str:
    """llama2.c piece -> sentencepiece/HF piece: '▁' for space, plain <s>/</s> for BOS/EOS."""
    if token_id == BOS_ID:
        return "<s>"
    if token_id == EOS_ID:
        return "</s>"
    try:
        text = piece.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecjaxError(f"tokenizer piece {token_id} ({piece!r}) is not UTF-8") from None
    return text.replace(" ", SPIECE_SPACE)


def build_tokenizer(pieces: list[tuple[bytes, float]]) -> Tokenizer:
    """An HF `tokenizers` BPE tokenizer that encodes and decodes exactly like llama2.c.

    llama2.c merges by the merged piece's score, which `merges_by_score` turns into BPE ranks.
    """
    vocab = {_hf_piece(i, p): i for i, (p, _) in enumerate(pieces)}
    if len(vocab) != len(pieces):
        raise SpecjaxError("tokenizer has duplicate pieces; cannot build a BPE vocab")
    first_normal = FIRST_BYTE_ID + NUM_BYTE_TOKENS
    # <unk>, <s>, </s> and byte pieces are never merge results or parts.
    merges = merges_by_score(
        list(vocab), [score for _, score in pieces], [i >= first_normal for i in vocab.values()]
    )

    tok = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend(SPIECE_SPACE), normalizers.Replace(" ", SPIECE_SPACE)]
    )
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace(SPIECE_SPACE, " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", BOS_ID)]
    )
    return tok


def convert(
    checkpoint: str | os.PathLike[str],
    tokenizer: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
) -> Path:
    """Writes the HF Llama directory for a llama2.c checkpoint + tokenizer.bin; returns it."""
    header, tensors = read_checkpoint(checkpoint)
    pieces = read_tokenizer(tokenizer, header.vocab_size)
    tok = build_tokenizer(pieces)
    state = hf_state_dict(header, tensors)

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SpecjaxError(f"cannot create output directory {out}: {e.strerror or e}") from None
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config(header), indent=2) + "\n")
    tok.save(str(out / "tokenizer.json"))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    tokenizer_config = {
        # Generic fast tokenizer: LlamaTokenizer(Fast) would rebuild parts of tokenizer.json.
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "model_max_length": header.seq_len,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return out


def _define_flags() -> None:
    """Defined only when run as a script, so importing this module adds no global flags."""
    flags.DEFINE_string("checkpoint", None, "llama2.c legacy checkpoint, e.g. stories260K.bin")
    flags.DEFINE_string("tokenizer", None, "llama2.c tokenizer.bin, e.g. tok512.bin")
    flags.DEFINE_string("out", None, "output directory for the HF Llama files")


def main(argv: list[str]) -> None:
    """CLI entry: a SpecjaxError becomes one `error: ...` line on stderr and exit code 2."""
    del argv
    try:
        for name in ("checkpoint", "tokenizer", "out"):
            if not FLAGS[name].value:
                raise SpecjaxError(f"--{name} is required")
        out = convert(FLAGS.checkpoint, FLAGS.tokenizer, FLAGS.out)
    except SpecjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {out}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
