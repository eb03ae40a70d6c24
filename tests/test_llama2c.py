"""The llama2.c -> HF converter against llama2.c's published stories260K facts."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.errors import SpecjaxError
from models.llama2c import convert, interleaved_to_half_rotary, read_checkpoint

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CHECKPOINT = DATA / "stories260K.bin"
TOKENIZER = DATA / "tok512.bin"
PROMPT = "Once upon a time"
PROMPT_IDS = [1, 403, 407, 261, 378]
# Published by llama2.c: greedy continuation of PROMPT by stories260K.
CONTINUATION = (
    ", there was a little girl named Lily. She loved to play outside in the park. One day, she "
    "saw a big, red ball. She wanted to play with it, but it was too high."
)

needs_data = pytest.mark.skipif(
    not (CHECKPOINT.is_file() and TOKENIZER.is_file()),
    reason=f"stories260K.bin / tok512.bin not found under {DATA} (reference data is CI-only)",
)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The converted stories260K directory, built once for the module."""
    if not (CHECKPOINT.is_file() and TOKENIZER.is_file()):
        pytest.skip(f"stories260K.bin / tok512.bin not found under {DATA}")
    return convert(CHECKPOINT, TOKENIZER, tmp_path_factory.mktemp("stories260K_hf"))


@needs_data
def test_tokenizer_encodes_like_llama2c_and_round_trips(hf_dir: Path) -> None:
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    assert tok(PROMPT).input_ids == PROMPT_IDS
    for text in [
        PROMPT,
        "Lily and Ben went to the park.  They saw a dog!",
        "Tab\tand newline\nand café, naïve, 日本.",
        "",
    ]:
        ids = tok(text).input_ids
        assert ids[0] == 1
        assert tok.decode(ids, skip_special_tokens=True) == text


@needs_data
@pytest.mark.slow
def test_transformers_greedy_matches_published_text(hf_dir: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    model = transformers.LlamaForCausalLM.from_pretrained(hf_dir)
    ids_1xT = torch.tensor([PROMPT_IDS])
    with torch.no_grad():
        out_1xS = model.generate(ids_1xT, max_new_tokens=60, do_sample=False, pad_token_id=2)
    text = tok.decode(out_1xS[0, len(PROMPT_IDS) :], skip_special_tokens=True)
    assert text[: len(CONTINUATION)] == CONTINUATION


def _rope_adjacent(x_QH: np.ndarray, pos: int, theta: float = 10000.0) -> np.ndarray:
    """llama2.c: rotate pairs (x[2i], x[2i+1]) by pos * theta^(-2i/H)."""
    H = x_QH.shape[-1]
    ang_H2 = pos * theta ** (-np.arange(0, H, 2) / H)
    cos, sin = np.cos(ang_H2), np.sin(ang_H2)
    a, b = x_QH[..., 0::2], x_QH[..., 1::2]
    out = np.empty_like(x_QH)
    out[..., 0::2] = a * cos - b * sin
    out[..., 1::2] = a * sin + b * cos
    return out


def _rope_half(x_QH: np.ndarray, pos: int, theta: float = 10000.0) -> np.ndarray:
    """HF Llama: rotate (x[i], x[i + H/2]) by pos * theta^(-2i/H)."""
    H = x_QH.shape[-1]
    ang_H2 = pos * theta ** (-np.arange(0, H, 2) / H)
    cos, sin = np.cos(ang_H2), np.sin(ang_H2)
    a, b = x_QH[..., : H // 2], x_QH[..., H // 2 :]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


def test_interleaved_to_half_rotary_preserves_rope_and_scores() -> None:
    rng = np.random.default_rng(0)
    Q, K, H, D = 4, 2, 8, 12
    wq_QHD = rng.standard_normal((Q * H, D))
    wk_KHD = rng.standard_normal((K * H, D))
    x_D, y_D = rng.standard_normal(D), rng.standard_normal(D)
    wq_half = interleaved_to_half_rotary(wq_QHD, Q)
    wk_half = interleaved_to_half_rotary(wk_KHD, K)
    assert wq_half.shape == wq_QHD.shape
    # Per head: [even rows, odd rows].
    perm_H = np.concatenate([np.arange(0, H, 2), np.arange(1, H, 2)])
    q_ref_QH = _rope_adjacent((wq_QHD @ x_D).reshape(Q, H), pos=7)
    q_new_QH = _rope_half((wq_half @ x_D).reshape(Q, H), pos=7)
    np.testing.assert_allclose(q_new_QH, q_ref_QH[:, perm_H], atol=1e-12)
    # Attention scores (GQA: head q uses kv head q // (Q // K)) are unchanged.
    k_ref_KH = _rope_adjacent((wk_KHD @ y_D).reshape(K, H), pos=3)
    k_new_KH = _rope_half((wk_half @ y_D).reshape(K, H), pos=3)
    kv_of_q = np.arange(Q) // (Q // K)
    np.testing.assert_allclose(
        np.sum(q_new_QH * k_new_KH[kv_of_q], -1),
        np.sum(q_ref_QH * k_ref_KH[kv_of_q], -1),
        atol=1e-12,
    )
    with pytest.raises(SpecjaxError):
        interleaved_to_half_rotary(wq_QHD, 5)


@needs_data
def test_bad_checkpoints_raise_one_line_errors(tmp_path: Path) -> None:
    data = CHECKPOINT.read_bytes()
    header = struct.unpack_from("<7i", data)
    cases = {
        "truncated.bin": data[: len(data) - 100],
        "magic.bin": struct.pack("<Ii", 0x616B3432, 1) + data[8:],
        "zero_heads.bin": struct.pack("<7i", *header[:3], 0, *header[4:]) + data[28:],
        "short.bin": data[:10],
    }
    for name, blob in cases.items():
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(SpecjaxError) as e:
            read_checkpoint(path)
        assert "\n" not in str(e.value), name
    with pytest.raises(SpecjaxError, match="truncated"):
        read_checkpoint(tmp_path / "truncated.bin")


def test_cli_missing_file_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "models.llama2c",
            f"--checkpoint={tmp_path / 'missing.bin'}",
            f"--tokenizer={tmp_path / 'missing_tok.bin'}",
            f"--out={tmp_path / 'out'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "missing.bin" in lines[0]
