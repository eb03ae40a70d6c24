"""Builds the tokenizer a GGUF file carries from the file's own metadata, without torch.

Why: transformers' `AutoTokenizer(gguf_file=...)` reads the file with a torch-based reader, so a
JAX user without PyTorch could not even tokenize the embedded default's prompt. The GGUF metadata
holds everything a tokenizer needs (`tokenizer.ggml.*`: the vocabulary, merges, token types, the
pre-tokenizer's name, special ids, the chat template); the `gguf` package reads it and `tokenizers`
builds the BPE, and the result is wrapped in transformers' torch-free `PreTrainedTokenizerFast`,
so every caller keeps `apply_chat_template`, `decode` and the special-token attributes.

Two tokenizer models cover the supported architectures (llama.cpp's `tokenizer.ggml.model`):
  * `gpt2`: byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM2). The text is split by the regex of the
    pre-tokenizer the file names (`tokenizer.ggml.pre`), then mapped to GPT-2's byte alphabet.
  * `llama`: sentencepiece-style BPE with byte fallback (Llama 2, Mistral, TinyLlama). Files without
    `tokenizer.ggml.merges` get merges ranked by the merged piece's score, as sentencepiece merges.
Tokens marked CONTROL become special tokens, USER_DEFINED ones plain added tokens, so neither is
ever cut into pieces. `tests/test_gguf_tokenizer.py` checks the ids against transformers' own GGUF
conversion on a few hundred strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE

from models.bpe_merges import merges_by_score
from models.errors import SpecjaxError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

# llama.cpp's token types (llama_token_type / gguf.TokenType).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
SPIECE_SPACE = "\u2581"  # sentencepiece's visible space

# Pre-tokenizer split regexes by `tokenizer.ggml.pre` (the patterns llama.cpp and each model's
# tokenizer.json use). Names not listed split with GPT-2's own regex (ByteLevel's default).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLIT_REGEXES = {
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
    "llama-bpe": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
}
# Vocabularies trained on single digits: digits are split off before GPT-2's regex.
_INDIVIDUAL_DIGITS = ("smollm",)


def tokenizer_from_gguf(path: str | Path, fields: dict[str, Any]) -> PreTrainedTokenizerFast:
    """The tokenizer described by a GGUF file's `tokenizer.*` metadata.

    `fields` maps GGUF keys to values (`gguf.ReaderField.contents()`), arrays as Python lists.
    Anything missing or unsupported is a one-line SpecjaxError naming the file.
    """
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    model = fields.get("tokenizer.ggml.model")
    tokens = fields.get("tokenizer.ggml.tokens")
    if model is None or not tokens:
        raise SpecjaxError(f"{path}: this GGUF carries no tokenizer (no tokenizer.ggml.tokens)")
    types = fields.get("tokenizer.ggml.token_type") or [_NORMAL] * len(tokens)
    if len(types) != len(tokens):
        raise SpecjaxError(f"{path}: {len(types)} token types for {len(tokens)} tokens")
    if model == "gpt2":
        backend, tokens = _byte_level_bpe(path, tokens, fields)
    elif model == "llama":
        backend = _sentencepiece_bpe(path, tokens, types, fields)
    else:
        raise SpecjaxError(
            f"{path}: unsupported GGUF tokenizer model {model!r} (supported: gpt2, llama)"
        )
    _add_marked_tokens(backend, tokens, types, byte_level=model == "gpt2")

    def token(key: str) -> str | None:
        token_id = fields.get(f"tokenizer.ggml.{key}")
        if token_id is None:
            return None
        if not 0 <= int(token_id) < len(tokens):
            raise SpecjaxError(f"{path}: tokenizer.ggml.{key} = {token_id} is out of range")
        return tokens[int(token_id)]

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=token("bos_token_id"),
        eos_token=token("eos_token_id"),
        unk_token=token("unknown_token_id"),
        pad_token=token("padding_token_id"),
        # llama.cpp adds BOS to a sentencepiece vocabulary unless the file says otherwise.
        add_bos_token=bool(fields.get("tokenizer.ggml.add_bos_token", model == "llama")),
        add_eos_token=bool(fields.get("tokenizer.ggml.add_eos_token", False)),
        chat_template=fields.get("tokenizer.chat_template"),
        clean_up_tokenization_spaces=False,
    )


def _byte_level_bpe(
    path: Path, tokens: list[str], fields: dict[str, Any]
) -> tuple[Tokenizer, list[str]]:
    """GPT-2-style BPE over bytes; returns the backend and the tokens as the vocab spells them."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    # llama.cpp stores tokens in GPT-2's byte alphabet; respell any that are not (raw UTF-8).
    tokens = [
        t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")) for t in tokens
    ]
    merges = fields.get("tokenizer.ggml.merges")
    if not merges:
        raise SpecjaxError(f"{path}: a gpt2 GGUF tokenizer without tokenizer.ggml.merges")
    backend = Tokenizer(
        BPE(
            vocab=_vocab(path, tokens),
            merges=[tuple(m.split(" ", 1)) for m in merges],
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
        )
    )
    pre = fields.get("tokenizer.ggml.pre")
    split = _SPLIT_REGEXES.get(pre)
    if split is not None:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    elif pre in _INDIVIDUAL_DIGITS:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    else:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return backend, tokens


def _sentencepiece_bpe(
    path: Path, tokens: list[str], types: list[int], fields: dict[str, Any]
) -> Tokenizer:
    """Sentencepiece BPE: '▁' for spaces, a prefix space on the first word, byte fallback."""
    merges = fields.get("tokenizer.ggml.merges")
    if merges:
        pairs = [tuple(m.split(" ", 1)) for m in merges]
    else:
        scores = fields.get("tokenizer.ggml.scores")
        if not scores or len(scores) != len(tokens):
            raise SpecjaxError(
                f"{path}: a llama GGUF tokenizer needs merges or one score per token"
            )
        mergeable = [t in (_NORMAL, _USER_DEFINED) for t in types]
        pairs = merges_by_score(tokens, scores, mergeable)
    unk = next((t for t, k in zip(tokens, types, strict=True) if k == _UNKNOWN), None)
    backend = Tokenizer(
        BPE(
            vocab=_vocab(path, tokens),
            merges=pairs,
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    prefix = bool(fields.get("tokenizer.ggml.add_space_prefix", True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=SPIECE_SPACE, prepend_scheme="first" if prefix else "never", split=False
    )
    steps = [decoders.Replace(SPIECE_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    backend.decoder = decoders.Sequence(steps)
    return backend


def _vocab(path: Path, tokens: list[str]) -> dict[str, int]:
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise SpecjaxError(f"{path}: the GGUF vocabulary has duplicate tokens")
    return vocab


def _add_marked_tokens(
    backend: Tokenizer, tokens: list[str], types: list[int], byte_level: bool
) -> None:
    """CONTROL tokens become special added tokens and USER_DEFINED ones plain added tokens.

    In a byte-level vocabulary a CONTROL token spelled outside the byte alphabet is a mislabelled
    file entry (adding it would only duplicate an id), so it is skipped, as transformers does.
    """
    if byte_level:
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        alphabet = set(bytes_to_unicode().values())
    control = [
        AddedToken(t, normalized=False, special=True)
        for t, k in zip(tokens, types, strict=True)
        if k == _CONTROL and (not byte_level or set(t) <= alphabet)
    ]
    user = [
        AddedToken(t, normalized=False, special=False)
        for t, k in zip(tokens, types, strict=True)
        if k == _USER_DEFINED
    ]
    if control:
        backend.add_special_tokens(control)
    if user:
        backend.add_tokens(user)
