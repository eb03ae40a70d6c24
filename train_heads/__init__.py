"""Training of learned drafters (optax, orbax), separate from the inference library.

prompts.py   offline training prompts from CPython's own documentation
data.py      self-distillation shards: the target's answers to those prompts
target.py    loading the target (its fingerprint: models/fingerprint.py)
draft_lm.py  the draft LM's batch, loss and frequent-token head (the model: models/draft_lm.py)
checkpoint.py, train.py  the generic optax loop with exact resume, and its CLI
"""
