"""Prompt text -> token ids, shared by the CLI, the bench and the training-data builder."""

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
