"""Instruction prompts built from text that ships with CPython: offline, license-clean, disjoint.

Self-distillation needs many chat-like prompts, but not the benchmark's: training a drafter on
Spec-Bench or HumanEval questions would inflate the acceptance it is judged by. The text here comes
from the interpreter itself, `pydoc_data.topics` (the language reference behind `help()`) and the
docstrings of a fixed list of standard-library modules, so it needs no download, is under the PSF
license, and shares no question with either benchmark. Several templates (explain, summarize,
write a program, rewrite for a beginner, ...) make the mix look like chat traffic rather than one
repeated question.

The order is a seeded shuffle of a sorted, deduplicated pool, so `build_prompts(n, seed)` is the
same list on every run of the same Python version (docstrings change between Python releases).
"""

from __future__ import annotations

import importlib
import inspect
import json
import random
import re
from pathlib import Path

from models.errors import SpecjaxError

# Public, pure-Python-documented modules present in every CPython build (no GUI, no optional C deps).
MODULES = (
    "abc argparse array base64 bisect builtins calendar cmath codecs collections "
    "collections.abc colorsys contextlib copy csv dataclasses datetime decimal difflib enum "
    "fnmatch fractions functools getopt gettext glob graphlib gzip hashlib heapq hmac html "
    "html.parser http.client io ipaddress itertools json keyword locale logging math mimetypes "
    "numbers operator os os.path pathlib pickle platform pprint queue random re reprlib sched "
    "secrets shlex shutil socket statistics string struct subprocess tarfile tempfile textwrap "
    "threading time timeit tokenize traceback types typing unicodedata unittest urllib.parse "
    "uuid warnings weakref zipfile zlib"
).split()

MIN_DOC_CHARS = 60  # shorter docstrings say too little to ask about
MIN_PARAGRAPH_CHARS = 200
MAX_PARAGRAPH_CHARS = 900  # cut at a sentence end below this: prompts stay a few hundred tokens

NAME_TEMPLATES = (
    "Explain what the Python function `{name}` does, with an example.",
    "Write a short Python program that uses `{name}`.",
    "What arguments does `{name}` take in Python, and what does it return?",
    "When would I use `{name}` in Python? Give a practical use case.",
    "Show me a common mistake people make with `{name}` and how to avoid it.",
)
MODULE_TEMPLATES = (
    "Give an overview of the Python `{name}` module and show a typical use.",
    "Which functions of the Python `{name}` module are the most useful? Explain briefly.",
)
TOPIC_TEMPLATES = (
    "Answer in simple words: what is {topic} in Python?",
    "Explain {topic} in Python to someone who knows another programming language.",
)
PARAGRAPH_TEMPLATES = (
    "Summarize the following text in a few sentences:\n\n{text}",
    "Rewrite this text for a beginner:\n\n{text}",
    "What are the key points of this passage? Answer as a bullet list.\n\n{text}",
    "Explain the following documentation in your own words:\n\n{text}",
)


def _paragraphs(text: str) -> list[str]:
    """Prose paragraphs of reST-ish text: code, grammar, tables and headings are left out."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        if any(line.startswith((" ", "\t", ">>>", "*", "=", "-", "+", "|")) for line in lines):
            continue
        para = " ".join(line.strip() for line in lines)
        if len(para) < MIN_PARAGRAPH_CHARS or para.count("::=") or para.endswith(":"):
            continue
        out.append(_cap(para))
    return out


def _cap(text: str) -> str:
    """Cuts a long paragraph at the last sentence end that fits."""
    if len(text) <= MAX_PARAGRAPH_CHARS:
        return text
    cut = text.rfind(". ", 0, MAX_PARAGRAPH_CHARS)
    return text[: cut + 1] if cut > MIN_PARAGRAPH_CHARS else text[:MAX_PARAGRAPH_CHARS]


def _topics() -> tuple[list[str], list[str]]:
    """(topic titles, paragraphs) of the language reference behind `help()`."""
    from pydoc_data.topics import topics

    titles, paragraphs = [], []
    for key in sorted(topics):
        text = topics[key]
        first, _, rest = text.partition("\n")
        if rest.lstrip().startswith("*"):  # a reST title underlined with stars
            titles.append(first.strip().replace('"', "`"))
        paragraphs.extend(_paragraphs(text))
    return titles, paragraphs


def _documented_names() -> tuple[list[str], list[str], list[str]]:
    """(public callables with a useful docstring, module names, docstring paragraphs)."""
    names, modules, paragraphs = [], [], []
    listed = set(MODULES)
    for mod_name in MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        modules.append(mod_name)
        paragraphs.extend(_paragraphs(inspect.getdoc(mod) or ""))
        prefix = "" if mod_name == "builtins" else mod_name + "."
        for attr in sorted(vars(mod)):
            obj = vars(mod)[attr]
            if attr.startswith("_") or not callable(obj):
                continue
            if getattr(obj, "__module__", mod_name) in listed - {mod_name}:
                continue  # re-exported from another listed module: counted once, there
            doc = inspect.getdoc(obj) or ""
            if len(doc) >= MIN_DOC_CHARS:
                names.append(prefix + attr)
                paragraphs.extend(_paragraphs(doc))
            if inspect.isclass(obj):
                for meth in sorted(vars(obj)):
                    m = vars(obj)[meth]
                    if meth.startswith("_") or not callable(m):
                        continue
                    if len(inspect.getdoc(m) or "") >= MIN_DOC_CHARS:
                        names.append(f"{prefix}{attr}.{meth}")
    return names, modules, paragraphs


def prompt_pool() -> list[str]:
    """Every prompt the templates can make, deduplicated and sorted (the order is then seeded)."""
    names, modules, doc_paragraphs = _documented_names()
    titles, topic_paragraphs = _topics()
    pool = set()
    for i, name in enumerate(names):
        # Two templates per name (rotating), so no function is asked about five times.
        for j in (i, i + 2):
            pool.add(NAME_TEMPLATES[j % len(NAME_TEMPLATES)].format(name=name))
    for name in modules:
        pool.update(t.format(name=name) for t in MODULE_TEMPLATES)
    for i, title in enumerate(titles):
        pool.add(TOPIC_TEMPLATES[i % len(TOPIC_TEMPLATES)].format(topic=_lower_first(title)))
    for i, para in enumerate(sorted(set(doc_paragraphs + topic_paragraphs))):
        pool.add(PARAGRAPH_TEMPLATES[i % len(PARAGRAPH_TEMPLATES)].format(text=para))
    return sorted(pool)


def _lower_first(title: str) -> str:
    return title[:1].lower() + title[1:] if title[:2] != title[:2].upper() else title


SOURCES = ("mixed", "chat", "cpython")
CHAT_SHARE = 0.7  # of a "mixed" set; the rest are CPython-doc prompts (summaries, code questions)
TRANSLATION_PROMPTS = 150


def source_pool(source: str, seed: int = 0) -> list[str]:
    """Every prompt of one source, sorted ("mixed" is not a pool: see build_prompts)."""
    if source.endswith(".jsonl"):
        return sorted(set(prompt_file(source)))
    if source == "cpython":
        return prompt_pool()
    if source == "chat":
        from train_heads.chat_prompts import chat_pool, translation_prompts

        sentences = sorted({_first_sentence(p) for p in _all_paragraphs()})
        random.Random(seed).shuffle(sentences)
        chat = chat_pool(seed) + translation_prompts(sentences[:TRANSLATION_PROMPTS], seed)
        return sorted(set(chat))
    raise SpecjaxError(
        f"unknown prompt source {source!r}; choose one of {', '.join(SOURCES)} or a .jsonl file"
    )


def prompt_file(path: str | Path) -> list[str]:
    """The "prompt" of every line of a JSONL file (`train_heads.self_instruct` writes one)."""
    path = Path(path)
    if not path.is_file():
        raise SpecjaxError(f"prompt file {path} does not exist")
    prompts = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            prompt = json.loads(line)["prompt"]
        except (ValueError, KeyError, TypeError):
            raise SpecjaxError(f'{path}:{n} is not a JSON object with a "prompt"') from None
        if not isinstance(prompt, str) or not prompt.strip():
            raise SpecjaxError(f'{path}:{n}: "prompt" must be non-empty text')
        prompts.append(prompt)
    if not prompts:
        raise SpecjaxError(f"prompt file {path} is empty")
    return prompts


def _all_paragraphs() -> list[str]:
    return _documented_names()[2] + _topics()[1]


def _first_sentence(paragraph: str) -> str:
    cut = paragraph.find(". ")
    return paragraph if cut < 0 else paragraph[: cut + 1]


def build_prompts(n: int, seed: int = 0, source: str = "mixed") -> list[str]:
    """n distinct prompts, the same for the same (n, seed, source); too many is a SpecjaxError.

    "mixed" takes CHAT_SHARE of them from the chat pool and the rest from the CPython-doc pool
    (the chat pool is the smaller one, so a large n takes all of it and fills up from CPython).
    """
    names = ("chat", "cpython") if source == "mixed" else (source,)
    pools = [source_pool(name, seed) for name in names]
    total = sum(len(p) for p in pools)
    if not 1 <= n <= total:
        raise SpecjaxError(f"num_prompts must be in [1, {total}] (the prompt pool), got {n}")
    rng = random.Random(seed)
    for pool in pools:
        rng.shuffle(pool)
    if len(pools) == 1:
        return pools[0][:n]
    chat, cpython = pools
    n_chat = min(len(chat), max(n - len(cpython), round(n * CHAT_SHARE)))
    mixed = chat[:n_chat] + cpython[: n - n_chat]
    rng.shuffle(mixed)
    return mixed
