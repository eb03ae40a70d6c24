"""The method registry: one table from a method's name to how its drafter is built, its settings
(a frozen dataclass with defaults), whether it is lossless and what it needs.

The command lines (`specjax.decode`, `specjax.bench`, `train_heads.draft_agreement`) define every
method setting as a flag from this table and build drafters through it, with no per-method branch
of their own, so a new method is one drafter file and one `register` call. A setting becomes the
flag named in its field's metadata (`setting(...)`); methods may share a flag (the same meaning,
default and type), and fields without a flag are Python-only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from absl import flags, logging

from configs.phrase_drafting import PRESETS, TASK_PRESETS, PhraseDrafting, phrase_drafting
from models.config import ModelConfig
from models.draft_lm import is_draft_dir, load_draft
from models.errors import SpecjaxError
from models.loading import Model, load_model
from models.transformer import ModelParams
from specjax.drafter import Drafter
from specjax.drafters.draft_model import DraftModelDrafter, self_draft
from specjax.drafters.lookahead import LookaheadDrafter, LookaheadParams
from specjax.drafters.ngram import NgramDrafter
from specjax.drafters.ouroboros import OuroborosDrafter, OuroborosParams
from specjax.phrase_pool import PhrasePool, load_pool, merge_rows

# Settings annotations are strings (postponed evaluation); flagged fields are plain scalars.
_FLAG_TYPES = {
    "int": flags.DEFINE_integer,
    "int | None": flags.DEFINE_integer,
    "float": flags.DEFINE_float,
    "str": flags.DEFINE_string,
    "bool": flags.DEFINE_boolean,
}


def setting(default: Any, flag: str | None = None, help: str = "") -> Any:
    """A settings field: its default, and the command-line flag that sets it (None: no flag)."""
    return dataclasses.field(default=default, metadata={"flag": flag, "help": help})


@dataclasses.dataclass(frozen=True)
class Needs:
    """What a method needs besides the target: a draft model (`--draft`), a phrase pool that can
    be carried between runs (`--pool`), a trained head (`--head`)."""

    draft: bool = False
    pool: bool = False
    head: bool = False


@dataclasses.dataclass(frozen=True)
class BuildInputs:
    """What a factory gets: the target, the method's settings, and the needs' sources.

    draft: None (the draft shipped for the target), "self:N", a saved draft directory, a
      checkpoint path, or a loaded `Model`; pool: None, a `PhrasePool` or a saved pool's path;
      tokenizer: the target's, for settings that calibrate on text (`--gamma=auto`).
    """

    config: ModelConfig
    params: ModelParams
    settings: Any
    draft: Any = None
    pool: Any = None
    dtype: str = "float32"
    tokenizer: Any = None


@dataclasses.dataclass(frozen=True)
class Method:
    """One registry entry. `build` returns (drafter, draft params); `lossless` holds under the
    exact acceptance policy; `available` False lists a method that is not built yet;
    `default_accept` is its acceptance policy unless one is asked for."""

    name: str
    summary: str
    settings: type
    build: Callable[[BuildInputs], tuple[Drafter | None, Any]]
    lossless: bool = True
    needs: Needs = Needs()
    available: bool = True
    default_accept: str = "exact"  # the acceptance policy `--accept=auto` means for it

    @property
    def speculative(self) -> bool:
        return self.name != "vanilla"


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Adds a method (replacing one of the same name); its flags must agree with the others'."""
    for f in dataclasses.fields(method.settings):
        flag = f.metadata.get("flag")
        for other in REGISTRY.values():
            if other.name == method.name:
                continue
            for g in dataclasses.fields(other.settings):
                if (
                    flag
                    and g.metadata.get("flag") == flag
                    and (g.type, g.default)
                    != (
                        f.type,
                        f.default,
                    )
                ):
                    raise ValueError(f"flag --{flag} of {method.name} disagrees with {other.name}")
    REGISTRY[method.name] = method
    return method


def method(name: str) -> Method:
    """The registered method, or one SpecjaxError line (unknown, or not built yet)."""
    if name not in REGISTRY:
        raise SpecjaxError(f"unknown method {name!r} (choose from {', '.join(REGISTRY)})")
    m = REGISTRY[name]
    if not m.available:
        raise SpecjaxError(f"method {name} is not available yet")
    return m


def method_with_needs(name: str, pool: bool = False, head: bool = False) -> Method:
    """`method(name)`, checking that a phrase pool or a trained head is only given to a method
    that takes one."""
    m = method(name)
    if pool and not m.needs.pool:
        with_pool = " or ".join(n for n, other in REGISTRY.items() if other.needs.pool)
        raise SpecjaxError(f"--pool is for --method={with_pool}")
    if head and not m.needs.head:
        with_head = " or ".join(
            n for n, other in REGISTRY.items() if other.needs.head and other.available
        )
        raise SpecjaxError(f"--head is for --method={with_head}")
    return m


def acceptance_for(method_name: str, accept: str):
    """The acceptance policy `--accept` names for a method ("auto": the method's own), checked:
    a policy other than exact needs a speculative method, and SPRINTER's last-token rule is only
    for the drafts its verifier vouched for."""
    from specjax.acceptance import make_policy

    m = method(method_name)
    name = m.default_accept if accept == "auto" else accept
    policy = make_policy(name)
    if not m.speculative and name != "exact":
        raise SpecjaxError(f"--accept={name} needs a speculative method ({m.name} drafts nothing)")
    if name == "sprinter" and m.name != "sprinter":
        raise SpecjaxError(
            "--accept=sprinter keeps drafts unchecked that only SPRINTER's verifier vouches for: "
            "use it with --method=sprinter"
        )
    return name, policy


def define_flags(flag_values: flags.FlagValues = flags.FLAGS, names=None) -> None:
    """Defines the flag of every setting of the registered methods (or of `names`) that is not
    defined yet; safe to call again after a later `register`."""
    for m in REGISTRY.values():
        if names is not None and m.name not in names:
            continue
        for f in dataclasses.fields(m.settings):
            flag = f.metadata.get("flag")
            if not flag or flag in flag_values:
                continue
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            _FLAG_TYPES[kind](flag, f.default, f.metadata.get("help", ""), flag_values=flag_values)


def settings_from_flags(name: str, flag_values: flags.FlagValues = flags.FLAGS, **fixed) -> Any:
    """The method's settings with every flagged field read from the parsed flags, checked when
    the settings can check themselves (a `check()` method), so a bad flag fails before any model
    work."""
    m = method(name)
    values = {}
    for f in dataclasses.fields(m.settings):
        flag = f.metadata.get("flag")
        if flag and flag in flag_values:
            values[f.name] = flag_values[flag].value
    settings = m.settings(**{**values, **fixed})
    if hasattr(settings, "check"):
        settings.check()
    return settings


def make_drafter(
    name: str,
    config: ModelConfig,
    params: ModelParams,
    *,
    draft: Any = None,
    pool: Any = None,
    dtype: str = "float32",
    settings: Any = None,
    tokenizer: Any = None,
    **overrides: Any,
) -> tuple[Drafter | None, Any]:
    """(drafter, draft params) for a registered method; (None, None) for vanilla.

    `settings` is the method's settings object (default: its defaults), and `overrides` replace
    some of its fields (`gamma=3` for sd, `max_ngram=2` for ngram, `phrase=...` for the phrase
    methods); an unknown field is one SpecjaxError line.
    """
    m = method(name)
    settings = m.settings() if settings is None else settings
    known = {f.name for f in dataclasses.fields(settings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SpecjaxError(f"method {name} has no setting {unknown[0]!r} (it has {sorted(known)})")
    settings = dataclasses.replace(settings, **overrides)
    return m.build(BuildInputs(config, params, settings, draft, pool, dtype, tokenizer))


# ---------------------------------------------------------------------------------------------
# The methods built so far.


@dataclasses.dataclass(frozen=True)
class NoSettings:
    pass


@dataclasses.dataclass(frozen=True)
class SdSettings:
    """`gamma` is an int, or "auto" (`specjax.block_size`: from this machine's measured c(T) and
    the draft's measured acceptance per depth, both cached; `remeasure` measures them again)."""

    gamma: str = setting(
        "4", "gamma", "sd: tokens the draft model proposes per step, or 'auto' (chosen from this "
        "machine's verify cost and the draft's acceptance, measured once and cached)."
    )  # fmt: skip
    remeasure: bool = setting(
        False, "remeasure", "--gamma=auto: measure the verify cost and acceptance again."
    )

    def __post_init__(self):  # a bad gamma fails here, before any model is loaded
        parse_gamma(self.gamma)


def answer_store_setting() -> Any:
    """`--answer_store`, shared by ngram and the lookup branch of medusa and ctc."""
    return setting(
        "",
        "answer_store",
        "ngram, and medusa/ctc with --lookup: where the context has no match, draft what the "
        "target's own answers most often continued the last tokens with: 'shipped' (the store "
        "made for the target), a directory from python -m train_heads.answer_store, or empty "
        "or 'none' (none).",
    )


def store_given(spec: str) -> bool:
    """Whether an `--answer_store` value names a store ("" and "none" do not)."""
    return spec.strip() not in ("", "none")


@dataclasses.dataclass(frozen=True)
class NgramSettings:
    max_ngram: int = setting(3, "ngram_max", "ngram: longest suffix matched against the context.")
    num_tokens: int = setting(10, "ngram_tokens", "ngram: tokens proposed after a match.")
    answer_store: str = answer_store_setting()


@dataclasses.dataclass(frozen=True)
class PhraseSettings:
    """`preset` names a `configs.phrase_drafting` preset ("auto": chat, or the bench's per-task
    choice); `phrase`, when given, is the whole `PhraseDrafting` config and wins."""

    preset: str = setting(
        "auto",
        "phrase_preset",
        "ouroboros/lookahead settings (configs/phrase_drafting.py): auto, "
        + ", ".join(PRESETS)
        + " ('auto': chat, or in the bench the paper's preset for each task).",
    )
    phrase: PhraseDrafting | None = None

    def __post_init__(self):  # an unknown preset fails here, before any model is loaded
        if self.phrase is None and self.preset != "auto":
            phrase_drafting(self.preset)

    def resolve(self) -> PhraseDrafting:
        if self.phrase is not None:
            self.phrase.validate()
            return self.phrase
        return phrase_drafting("chat" if self.preset == "auto" else self.preset)

    def for_task(self, task: str) -> PhraseSettings:
        """The settings for one benchmark category: "auto" becomes the paper's preset for it."""
        if self.phrase is not None or self.preset != "auto":
            return self
        return dataclasses.replace(self, preset=TASK_PRESETS.get(task, "chat"))


def head_setting() -> Any:
    """The `--head` setting the methods with a trained head share (one flag, one meaning)."""
    return setting(
        "",
        "head",
        "redrafter/medusa/ctc/sprinter: a trained head (sprinter: verifier) directory "
        "(train_heads.train, final/); empty: the one shipped for the target.",
    )


# ReDrafter's beam shape when --beam_width / --beam_length are not given: the original's on an
# accelerator (its README runs W = 45, L = 5), and on CPU the pair that measured fastest in the
# bench sweeps (README "Performance": the verify cost grows with the block there; 1 x 4 tied it
# within one run's noise in the second sweep, and the teacher-forced model puts 1 x 3 ahead).
ACCELERATOR_BEAMS = (45, 5)
CPU_BEAMS = (1, 3)


@dataclasses.dataclass(frozen=True)
class ReDrafterSettings:
    """W beams of L draft tokens from the trained head at `head` (a directory written by
    `train_heads.train` with a recurrent-head config); W or L None: the backend's default
    (`beam_shape`)."""

    width: int | None = setting(
        None, "beam_width", "redrafter: beams W drafted per step (default: 1 on CPU, 45 else)."
    )
    length: int | None = setting(
        None, "beam_length", "redrafter: draft tokens L per beam (default: 3 on CPU, 5 else)."
    )
    head: str = head_setting()
    slots: int = setting(
        0,
        "tree_slots",
        "redrafter: pack the merged beam tree into this many block slots (0: the uncompacted "
        "1 + W*L).",
    )

    def beam_shape(self) -> tuple[int, int]:
        """(W, L): the given ones, the rest from the default backend's defaults."""
        import jax

        default = CPU_BEAMS if jax.default_backend() == "cpu" else ACCELERATOR_BEAMS
        return (
            default[0] if self.width is None else self.width,
            default[1] if self.length is None else self.length,
        )

    def check(self) -> None:
        """W, L and the packed tree size, checked from the flags alone (before a model loads)."""
        width, length = self.beam_shape()
        if width < 1 or length < 1:
            raise SpecjaxError(
                f"--beam_width and --beam_length must be >= 1, got {width}, {length}"
            )
        full = 1 + width * length
        if self.slots != 0 and not 2 <= self.slots <= full:
            raise SpecjaxError(
                f"--tree_slots must be 0 (the full tree) or in [2, 1 + W*L = {full}], "
                f"got {self.slots}"
            )


@dataclasses.dataclass(frozen=True)
class TreeHeadSettings:
    """A trained head at `head` (a directory written by `train_heads.train`: Medusa's heads or
    the CTC drafter's module; empty: the one shipped for the target) and the static tree its
    guesses fill (no deeper than the tokens or frames it drafts)."""

    head: str = head_setting()
    tree: str = setting(
        "auto",
        "tree",
        "medusa/ctc: auto (built from the heads' measured accuracies and this machine's verify "
        "cost), mc_sim_7b_63, or a tree file {'paths': [...]}.",
    )
    lookup: int = setting(
        0,
        "lookup",
        "medusa/ctc: K > 0 adds a prompt-lookup branch of up to K tokens (matched as --method=ngram "
        "matches, up to 3-token suffixes) that takes the slots of the tree's least likely nodes "
        "where the context (or --answer_store) has a match; the block keeps the tree's size "
        "(--tree=auto grows it by "
        "K). 0: the heads alone.",
    )
    answer_store: str = answer_store_setting()

    def check(self) -> None:
        if self.lookup < 0:
            raise SpecjaxError(f"--lookup must be >= 0, got {self.lookup}")
        if store_given(self.answer_store) and self.lookup == 0:
            raise SpecjaxError(
                "--answer_store feeds the prompt-lookup branch: give --lookup=K (K >= 1) too"
            )


def _vanilla(inputs: BuildInputs):
    return None, None


def _sd(inputs: BuildInputs):
    gamma = parse_gamma(inputs.settings.gamma)
    draft_config, draft_params = resolve_draft(inputs, "sd")
    if gamma == "auto":
        from specjax.block_size import auto_gamma

        if inputs.tokenizer is None:
            raise SpecjaxError(
                "gamma='auto' needs the target's tokenizer (make_drafter(tokenizer=))"
            )
        plan = auto_gamma(
            inputs.config, inputs.params, draft_config, draft_params, inputs.tokenizer,
            remeasure=inputs.settings.remeasure,
        )  # fmt: skip
        logging.info("%s", plan.describe())
        gamma = plan.gamma
    return DraftModelDrafter(config=draft_config, gamma=gamma), draft_params


def parse_gamma(value) -> int | str:
    """An int >= 1 (given as int or text) or "auto"; anything else is one SpecjaxError line."""
    if value == "auto":
        return value
    try:
        gamma = int(value)
    except (TypeError, ValueError):
        raise SpecjaxError(f"--gamma must be an integer >= 1 or 'auto', got {value!r}") from None
    if gamma < 1:
        raise SpecjaxError(f"--gamma must be >= 1, got {gamma}")
    return gamma


def _ngram(inputs: BuildInputs):
    s = inputs.settings
    if s.max_ngram < 1 or s.num_tokens < 1:
        raise SpecjaxError("ngram needs max_ngram >= 1 and num_tokens >= 1")
    store = _answer_store(inputs, s.answer_store)
    return NgramDrafter(max_ngram=s.max_ngram, num_tokens=s.num_tokens), store


def _answer_store(inputs: BuildInputs, spec: str):
    """The `--answer_store` the spec names for this target (None for empty or "none")."""
    if not store_given(spec):
        return None
    from models.answer_store import load_answer_store

    if spec == "shipped":
        from models.answer_stores import shipped_answer_store_for

        found = shipped_answer_store_for(inputs.config, inputs.params)
        if found is None:
            raise SpecjaxError(
                "--answer_store=shipped: no shipped answer store matches this target; build one "
                "from its answers with python -m train_heads.answer_store"
            )
        spec = str(found)
    return load_answer_store(spec, inputs.config, inputs.params)


def _ouroboros(inputs: BuildInputs):
    phrase = inputs.settings.resolve()
    draft_config, draft_params = resolve_draft(inputs, "ouroboros")
    warm = resolve_pool(inputs.pool, OuroborosDrafter(draft_config, phrase).pool_shape)
    return OuroborosDrafter(draft_config, phrase), OuroborosParams(draft=draft_params, pool=warm)


def _lookahead(inputs: BuildInputs):
    drafter = LookaheadDrafter(inputs.settings.resolve())
    return drafter, LookaheadParams(pool=resolve_pool(inputs.pool, drafter.pool_shape))


def _redrafter(inputs: BuildInputs):
    from specjax.drafters.redrafter import ReDrafterDrafter, ReDrafterParams

    s = inputs.settings
    s.check()
    head, _ = _trained_head(inputs, s.head, "recurrent", "redrafter")
    width, length = s.beam_shape()
    drafter = ReDrafterDrafter(width=width, length=length, slots=s.slots)
    return drafter, ReDrafterParams(head=head, embed=inputs.params.embed)


def _trained_head(inputs: BuildInputs, path: str, kind: str, method_name: str):
    """(head, its directory): `path`, or the head of this kind shipped for the target."""
    from models.head_file import load_head

    if not path:
        from models.heads import shipped_head_for

        path = shipped_head_for(inputs.config, inputs.params, kind)
        if path is None:
            raise SpecjaxError(
                f"--method={method_name} needs --head=DIR for this target (no shipped {kind} head "
                "matches it): a head trained with python -m train_heads.train"
            )
    return load_head(path, inputs.config, inputs.params, kind), Path(path)


def _medusa(inputs: BuildInputs):
    from specjax.drafters.medusa import MedusaDrafter
    from specjax.static_tree import auto_tree, load_tree

    s = inputs.settings
    s.check()
    heads, path = _trained_head(inputs, s.head, "medusa", "medusa")
    if s.tree == "auto":
        tree = auto_tree(inputs.config, inputs.params, path, heads.num_heads, extra_slots=s.lookup)
    else:
        tree = load_tree(s.tree, max_depth=heads.num_heads)
    if tree.max_rank >= heads.num_columns:
        raise SpecjaxError(
            f"the tree uses rank {tree.max_rank}, but the heads have {heads.num_columns} columns"
        )
    return _with_lookup(inputs, MedusaDrafter(tree), heads, tree, path, heads.num_heads)


def _with_lookup(inputs: BuildInputs, drafter, params, tree, head_dir: Path, depths: int):
    """(drafter, params), with a prompt-lookup branch of `--lookup` tokens sharing its block (0:
    as they are) fed by `--answer_store` where one is given; the tree's nodes give way in the
    order of their paths' measured accuracy, where the head records it."""
    s = inputs.settings
    if s.lookup == 0:
        return drafter, params
    from specjax.drafters.lookup_branch import BranchParams, LookupBranch, node_priority
    from specjax.static_tree import rank_accuracy

    priority = node_priority(tree.paths, rank_accuracy(head_dir, depths, required=False))
    store = _answer_store(inputs, s.answer_store)
    return LookupBranch(drafter, priority, num_tokens=s.lookup), BranchParams(params, store)


def _ctc(inputs: BuildInputs):
    from models.ctc_draft import attach, draft_config
    from models.head_file import head_extra
    from specjax.drafters.ctc import CTCDrafter
    from specjax.static_tree import auto_tree, load_tree
    from specjax.verify_cost import cached_chain_ms

    s = inputs.settings
    s.check()
    head, path = _trained_head(inputs, s.head, "ctc", "ctc")
    try:
        extra = head_extra(path)
        frames, ctc_weight = int(extra["config"]["frames"]), float(extra["ctc_weight"])
    except (ValueError, KeyError, TypeError):
        raise SpecjaxError(
            f"CTC drafter {path} records no frames and ctc_weight: retrain it with "
            "python -m train_heads.train --config=smollm2_ctc"
        ) from None
    params = attach(head, inputs.params)
    if s.tree == "auto":
        # The module drafts depth by depth: the tree pays for each depth (measured here, cached).
        chain = cached_chain_ms(draft_config(inputs.config), params, frames)
        tree = auto_tree(
            inputs.config, inputs.params, path, frames, depth_ms=chain.__getitem__,
            extra_slots=s.lookup,
        )  # fmt: skip
    else:
        tree = load_tree(s.tree, max_depth=frames)
    columns = inputs.config.V if head.head_token_ids is None else len(head.head_token_ids)
    if tree.max_rank >= columns:
        raise SpecjaxError(
            f"the tree uses rank {tree.max_rank}, but the head has {columns} columns"
        )
    drafter = CTCDrafter(draft_config(inputs.config), tree, ctc_weight > 0, chain_tokens=s.lookup)
    return _with_lookup(inputs, drafter, params, tree, path, frames)


@dataclasses.dataclass(frozen=True)
class SprinterSettings:
    """A draft model (`--draft`), SPRINTER's verifier trained for it at `head` (empty: the one
    shipped for the target and its shipped draft), the flag threshold and K."""

    head: str = head_setting()
    threshold: float = setting(
        0.5,
        "threshold",
        "sprinter: a drafted token whose verifier score is below this calls the target (0: only "
        "after max_draft tokens).",
    )
    max_draft: int = setting(
        20, "max_draft", "sprinter: K, the most tokens drafted before the target is called."
    )

    def check(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise SpecjaxError(f"--threshold must be in [0, 1], got {self.threshold}")
        if self.max_draft < 1:
            raise SpecjaxError(f"--max_draft must be >= 1, got {self.max_draft}")


def _sprinter(inputs: BuildInputs):
    from models.fingerprint import draft_fingerprint
    from models.head_file import head_extra
    from specjax.drafters.sprinter import SprinterDrafter, SprinterParams

    s = inputs.settings
    s.check()
    draft_config, draft_params = resolve_draft(inputs, "sprinter")
    verifier, path = _trained_head(inputs, s.head, "sprinter", "sprinter")
    extra = head_extra(path)
    try:
        recorded = extra["draft_fingerprint"]
        temperatures = tuple(float(t) for t in extra["temperatures"])
        with_token = bool(extra["with_token"])
    except (KeyError, TypeError, ValueError):
        raise SpecjaxError(
            f"verifier {path} records no draft fingerprint, temperatures and with_token: retrain "
            "it with python -m train_heads.train --config=smollm2_sprinter"
        ) from None
    if recorded != draft_fingerprint(draft_config, draft_params):
        raise SpecjaxError(
            f"verifier {path} was trained for another draft model than this --draft "
            f"({recorded.get('L')} layers, weights {recorded.get('weights_sha256')}): train one "
            "for it with python -m train_heads.train --config=smollm2_sprinter --draft=..."
        )
    features = draft_config.D * (2 if with_token else 1)
    if verifier.num_features != features or verifier.w.shape[0] != len(temperatures):
        raise SpecjaxError(
            f"verifier {path} has {verifier.w.shape} weights, expected "
            f"[{len(temperatures)}, {features}]"
        )
    drafter = SprinterDrafter(
        config=draft_config,
        max_draft=s.max_draft,
        threshold=s.threshold,
        with_token=with_token,
        temperatures=temperatures,
    )
    return drafter, SprinterParams(draft=draft_params, verifier=verifier)


for _m in (
    Method("vanilla", "one token per target call, the baseline", NoSettings, _vanilla),
    Method("sd", "two-model speculative decoding", SdSettings, _sd, needs=Needs(draft=True)),
    Method("ngram", "prompt lookup", NgramSettings, _ngram),
    Method(
        "ouroboros",
        "phrase-pool drafting by a draft model with lookahead (Zhao et al. 2024)",
        PhraseSettings,
        _ouroboros,
        needs=Needs(draft=True, pool=True),
    ),
    Method(
        "lookahead",
        "the target's own Jacobi window and phrase pool (Fu et al. 2024)",
        PhraseSettings,
        _lookahead,
        needs=Needs(pool=True),
    ),
    Method(
        "redrafter",
        "recurrent draft head on the target's hidden state, beam search (Cheng et al. 2024)",
        ReDrafterSettings,
        _redrafter,
        needs=Needs(head=True),
    ),
    Method(
        "medusa",
        "K heads on the target's hidden state fill a static tree (Cai et al. 2024)",
        TreeHeadSettings,
        _medusa,
        needs=Needs(head=True),
    ),
    Method(
        "ctc",
        "a CTC-trained one-layer draft module over the target's hidden states, collapsed "
        "frames in a static tree (Wen et al. 2024)",
        TreeHeadSettings,
        _ctc,
        needs=Needs(head=True),
    ),
    Method(
        "sprinter",
        "a draft model whose trained verifier calls the target only when a token looks wrong "
        "(Zhong et al. 2025); approximate by default, --accept=exact is lossless",
        SprinterSettings,
        _sprinter,
        needs=Needs(draft=True, head=True),
        default_accept="sprinter",
    ),
):
    register(_m)


# ---------------------------------------------------------------------------------------------
# What the factories share: a draft model and a phrase pool from the forms users give them.


def parse_self_draft(spec: str, target_layers: int) -> int:
    """`self:N` -> N, checked against the target's depth."""
    try:
        n = int(spec.split(":", 1)[1])
    except ValueError:
        raise SpecjaxError(f"--draft={spec}: expected self:N with an integer N") from None
    if not 1 <= n < target_layers:
        raise SpecjaxError(f"--draft={spec}: N must be in [1, {target_layers - 1}]")
    return n


def resolve_draft(inputs: BuildInputs, method_name: str) -> tuple[ModelConfig, ModelParams]:
    """(draft config, draft params) from any of the `draft` forms `BuildInputs` accepts."""
    config, params, draft = inputs.config, inputs.params, inputs.draft
    if draft is None or draft == "":
        from models.drafts import shipped_draft_for

        shipped = shipped_draft_for(config, params)
        if shipped is None:
            raise SpecjaxError(
                f"--method={method_name} needs --draft for this target (no shipped draft matches "
                "it): a checkpoint with the target's vocabulary, a trained draft directory, or "
                "self:N"
            )
        draft = str(shipped)
    if isinstance(draft, str) and draft.startswith("self:"):
        draft_config, draft_params = self_draft(config, params, parse_self_draft(draft, config.L))
    else:
        if isinstance(draft, str):
            if is_draft_dir(draft):  # a trained draft: layers only, embedding from the target
                draft = load_draft(draft, Model(config, params, None, "target"))
            else:
                draft = load_model(draft, inputs.dtype, tokenizer=False)
        draft_config, draft_params = draft.config, draft.params
    if draft_config.V != config.V:
        raise SpecjaxError(
            f"draft vocabulary ({draft_config.V} tokens) differs from the target's ({config.V})"
        )
    return draft_config, draft_params


def resolve_pool(pool: Any, shape: tuple[int, int, int]) -> PhrasePool | None:
    """None, a PhrasePool of the drafter's shape, or the path of a saved pool."""
    if pool is None or isinstance(pool, PhrasePool):
        if pool is not None and (pool.num_buckets, pool.capacity, pool.phrase_len) != shape:
            raise SpecjaxError(
                f"phrase pool of shape {(pool.num_buckets, pool.capacity, pool.phrase_len)} does "
                f"not fit the drafter's {shape} (buckets, pool_capacity, ngram - 1)"
            )
        return pool
    return load_pool(pool, *shape)


def pool_after(result) -> PhrasePool:
    """The phrase pool to carry into the next call (warm start): the rows' pools of a
    `generate(..., keep_state=True)` run with a phrase drafter, merged into one."""
    state = result.final_state
    pool = getattr(getattr(state, "draft_state", None), "pool", None)
    if pool is None:
        raise SpecjaxError(
            "pool_after needs generate(..., keep_state=True) with ouroboros/lookahead"
        )
    return merge_rows(pool)
