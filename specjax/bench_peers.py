"""The peers a user would pick instead of specjax, run on the same weights, prompts and budget.

Each peer returns one `PeerRun` per prompt (greedy, batch 1) or raises `PeerUnavailable` with the
reason (package not installed, model is not a GGUF file), which the bench prints as the row instead
of failing. Target calls are counted the same way for every peer: one forward of the target model,
whatever number of tokens it scores (transformers: a forward hook; llama.cpp: `eval` calls).
"""

from __future__ import annotations

import dataclasses
import os
import time


class PeerUnavailable(Exception):
    """The peer cannot run here; the message says why (shown in the table)."""


@dataclasses.dataclass
class PeerRun:
    tokens: list[int]  # new tokens, prompt excluded
    seconds: list[float]  # one per timed repeat
    target_calls: int
    compile_seconds: float = 0.0  # first call (warm-up), excluded from seconds


TRANSFORMERS_MODES = ("vanilla", "prompt_lookup", "assisted")


def _timed(fn, repeats: int):
    first_t0 = time.perf_counter()
    first = fn()
    first_s = time.perf_counter() - first_t0
    secs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        secs.append(time.perf_counter() - t0)
    return first, first_s, secs


class TransformersPeer:
    """transformers `generate` on PyTorch CPU: vanilla, prompt lookup, or assisted by our draft."""

    def __init__(self, config, params, draft=None, gamma: int = 4, ngram_tokens: int = 10):
        try:
            import torch
        except ImportError:
            raise PeerUnavailable("torch is not installed (pip install -e '.[bench]')") from None
        from models.to_transformers import to_transformers

        torch.set_num_threads(os.cpu_count() or 1)
        self.torch = torch
        self.model = to_transformers(config, params)
        self.calls = 0
        self.model.register_forward_hook(self._count)
        self.assistant = None
        if draft is not None:
            self.assistant = to_transformers(*draft)
            gc = self.assistant.generation_config
            gc.num_assistant_tokens = gamma
            gc.num_assistant_tokens_schedule = "constant"
            gc.assistant_confidence_threshold = 0.0  # draft exactly gamma tokens, like our sd
        self.ngram_tokens = ngram_tokens

    def _count(self, *_):
        self.calls += 1

    def run(self, mode: str, prompt: list[int], max_new_tokens: int, eos_ids, repeats: int):
        torch = self.torch
        ids = torch.tensor([prompt], dtype=torch.long)
        kw = dict(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=list(eos_ids) or None,
            pad_token_id=(list(eos_ids) or [0])[0],
            attention_mask=torch.ones_like(ids),
        )
        if mode == "prompt_lookup":
            kw["prompt_lookup_num_tokens"] = self.ngram_tokens
        elif mode == "assisted":
            if self.assistant is None:
                raise PeerUnavailable("no draft given for assisted generation")
            kw["assistant_model"] = self.assistant

        def go():
            self.calls = 0
            with torch.inference_mode():
                out = self.model.generate(ids, **kw)
            return out[0, len(prompt) :].tolist(), self.calls

        (tokens, calls), first_s, secs = _timed(go, repeats)
        return PeerRun(tokens=tokens, seconds=secs, target_calls=calls, compile_seconds=first_s)


class LlamaCppPeer:
    """llama.cpp through llama-cpp-python on the GGUF file itself (its own quantised kernels)."""

    def __init__(self, gguf_path: str, n_ctx: int, ngram_tokens: int = 10):
        if not str(gguf_path).endswith(".gguf"):
            raise PeerUnavailable("llama.cpp needs a GGUF model")
        try:
            import llama_cpp
        except ImportError:
            raise PeerUnavailable(
                "llama-cpp-python is not installed (pip install llama-cpp-python; compiles llama.cpp)"
            ) from None
        self.llama_cpp = llama_cpp
        self.path, self.n_ctx, self.ngram_tokens = str(gguf_path), n_ctx, ngram_tokens
        self.models = {}
        self.calls = 0

    def _model(self, mode: str):
        if mode not in self.models:
            kw = dict(
                model_path=self.path,
                n_ctx=self.n_ctx,
                n_threads=os.cpu_count() or 1,
                verbose=False,
            )
            if mode == "prompt_lookup":
                from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

                kw["draft_model"] = LlamaPromptLookupDecoding(num_pred_tokens=self.ngram_tokens)
            llm = self.llama_cpp.Llama(**kw)
            real_eval = llm.eval

            def counting_eval(tokens):  # one target forward, however many tokens it scores
                self.calls += 1
                return real_eval(tokens)

            llm.eval = counting_eval
            self.models[mode] = llm
        return self.models[mode]

    def run(self, mode: str, prompt: list[int], max_new_tokens: int, eos_ids, repeats: int):
        llm = self._model(mode)
        eos = set(eos_ids)

        def go():
            self.calls = 0
            llm.reset()
            out = []
            for tok in llm.generate(prompt, top_k=1, top_p=1.0, temp=0.0, reset=True):
                out.append(int(tok))
                if tok in eos or len(out) >= max_new_tokens:
                    break
            return out, self.calls  # the prefill counts, as in specjax

        (tokens, calls_used), first_s, secs = _timed(go, repeats)
        return PeerRun(
            tokens=tokens, seconds=secs, target_calls=max(calls_used, 1), compile_seconds=first_s
        )
