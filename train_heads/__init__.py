"""Training of learned drafters (optax, orbax), separate from the inference library.

prompts.py   offline training prompts from CPython's own documentation
data.py      self-distillation shards: the target's answers to those prompts
target.py    loading the target and fingerprinting it
draft_lm.py  the shallow draft LM sharing the target's embedding; save/load
checkpoint.py, train.py  the generic optax loop with exact resume, and its CLI
"""
