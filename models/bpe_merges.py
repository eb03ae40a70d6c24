"""BPE merges recovered from a sentencepiece vocabulary's scores.

Why: sentencepiece (and llama2.c) merge, repeatedly, the adjacent pair whose concatenation is the
vocabulary piece with the best score. HF `tokenizers` BPE merges the listed pair of lowest rank
instead, so ranking every split of every piece into two pieces by the merged piece's score, best
first, makes the two agree. llama2.c checkpoints and GGUF files without `tokenizer.ggml.merges`
both need this.
"""

from __future__ import annotations

from collections.abc import Sequence


def merges_by_score(
    pieces: Sequence[str], scores: Sequence[float], mergeable: Sequence[bool]
) -> list[tuple[str, str]]:
    """(left, right) merges, best merged score first; ties by the piece's id, then the split.

    Only pieces with `mergeable[i]` (normal text pieces, not control or byte tokens) are merge
    results or merge parts.
    """
    ids = {p: i for i, p in enumerate(pieces) if mergeable[i]}
    ranked: list[tuple[float, int, int, tuple[str, str]]] = []
    for piece, piece_id in ids.items():
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in ids and right in ids:
                ranked.append((-scores[piece_id], piece_id, k, (left, right)))
    return [pair for *_, pair in sorted(ranked)]
