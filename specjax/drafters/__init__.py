"""Drafters: one small file per method, each implementing the protocol in `specjax.drafter` (a
frozen, hashable dataclass with `block_size`, `init(params, prefill, cache_len)`, `propose(...)`
and `update(...)`); its arrays (`params`, e.g. draft-model weights) travel separately as a traced
pytree. `specjax.methods` registers them: name, settings, factory, what each needs.

draft_model.py  two-model speculative decoding (sd)
ngram.py        prompt lookup
ouroboros.py    phrase-pool drafting by a draft model with lookahead
lookahead.py    the target's own Jacobi window and phrase pool
"""
