"""Prompt text -> token ids, shared by the CLI, the bench, the training-data builder and the
draft-agreement check: the model's chat template with a generation prompt, or the plain text."""

from __future__ import annotations


def encode_prompt(tokenizer, prompt: str, chat: bool) -> list[int]:
    """Chat template with a generation prompt, or exactly what `tokenizer(prompt)` gives."""
    if chat:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)
    return list(tokenizer(prompt)["input_ids"])
