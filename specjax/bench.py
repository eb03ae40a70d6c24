"""`python -m specjax.bench`: tau and tokens/s of every method next to vanilla, in one run.

Greedy, batch 1, per prompt and category; speedups are ratios to our own vanilla measured in the same
run, and every lossless method's tokens are compared with vanilla's (mismatches must be 0). Timings are
medians over `--repeats` runs after compilation (the machines are shared and noisy). Also reported:
the verify-cost curve c(T) = time(forward over T tokens) / time(T = 1) (DESIGN "Performance model")
and a roofline: weight bytes per target call / measured copy bandwidth.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

from absl import app, flags

from models.errors import SpecjaxError
from specjax import methods
from specjax.acceptance import make_policy
from specjax.bench_measure import (
    agreement,
    copy_bandwidth_gbs,
    peak_memory_mb,
    target_choice_rate,
    target_nll,
)
from specjax.bench_report import plot, summarize
from specjax.cli import parse_flags, run_or_fail
from specjax.methods import define_flags, settings_from_flags
from specjax.multihost import is_primary
from specjax.prompt_sets import load_prompts
from specjax.verify_cost import verify_cost_curve

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "smollm2", "Target: GGUF file, HF directory or 'smollm2'.")
flags.DEFINE_list(
    "draft",
    ["shipped"],
    "Drafts for sd (one sd row each): 'shipped' (the trained draft for this target), a path, or "
    "self:N.",
)
flags.DEFINE_list("methods", ["vanilla", "sd", "ngram"], "Our methods (vanilla always runs).")
flags.DEFINE_list(
    "accept",
    ["auto"],
    "Acceptance policies for the speculative rows (one row per method and policy): auto (each "
    "method's own: exact, but sprinter's rule for sprinter), exact (lossless: mismatches vs "
    "vanilla must be 0), typical and sprinter (approximate: reported by their agreement with "
    "vanilla's tokens and, greedy, by how many of their tokens are the target's own choice; "
    "sprinter applies to --methods=sprinter only). A row whose policy is not "
    "its method's own is named method+policy.",
)
flags.DEFINE_list(
    "peers",
    ["transformers", "llamacpp"],
    "Peers in the same run: transformers (vanilla, prompt lookup, assisted by the first draft), "
    "llamacpp (vanilla, prompt lookup; needs llama-cpp-python and a GGUF model). Empty: none.",
)
flags.DEFINE_string(
    "prompts",
    "specbench",
    "specbench, humaneval, a .jsonl file with 'prompt' (and 'category'), or several, comma-separated.",
)
flags.DEFINE_list("categories", [], "Categories to keep (default: all).")
flags.DEFINE_integer("per_category", 2, "Prompts per category.")
flags.DEFINE_list(
    "category_counts",
    [],
    "CATEGORY=N overrides of --per_category (humaneval=8: eight HumanEval prompts).",
)
flags.DEFINE_list(
    "trees",
    [],
    "medusa/ctc rows: one per tree (auto, mc_sim_7b_63, a tree file); empty: one row from --tree.",
)
flags.DEFINE_list(
    "lookups",
    [],
    "medusa/ctc rows: one per prompt-lookup branch length (0,3: the heads alone and with a "
    "3-token branch); empty: one row from --lookup.",
)
flags.DEFINE_list(
    "answer_stores",
    [],
    "ngram rows, and medusa/ctc rows with a lookup branch: one per answer store (none, shipped, "
    "a directory; none,shipped: with and without the shipped one); empty: one row from "
    "--answer_store.",
)
flags.DEFINE_list(
    "beams",
    [],
    "redrafter rows: WxL or WxL:SLOTS each (2x4, 4x4:8), one row per entry; empty: one row from "
    "--beam_width, --beam_length and --tree_slots.",
)
flags.DEFINE_list(
    "thresholds",
    [],
    "sprinter rows: one per verifier threshold (0.5,0.3,0.1: the calls-against-quality curve in "
    "one run); empty: one row from --threshold.",
)
flags.DEFINE_integer("max_new_tokens", 128, "Tokens per prompt.")
flags.DEFINE_integer("repeats", 3, "Timed runs per prompt and method (median reported).")
flags.DEFINE_float(
    "temperature",
    0.0,
    "0: greedy (lossless rows must match vanilla token for token). > 0: our methods sample "
    "(seed 0 per prompt) and every row reports the target's mean NLL per token of its output "
    "at that temperature instead; the peers, which decode greedily, are left out.",
)
define_flags(FLAGS)  # every registered method's settings; --gamma is also the assisted peer's
flags.DEFINE_list(
    "pool_modes",
    ["cold", "warm"],
    "ouroboros/lookahead rows: cold (an empty pool per prompt) and/or warm (the pool carried "
    "over from the previous prompts of the run, never from the same prompt).",
)
flags.DEFINE_bool(
    "quick", False, "Smoke run: 1 prompt from each of 2 categories, 32 tokens, 1 repeat."
)
flags.DEFINE_string("out", "bench_out", "Output directory (results.json, results.md, results.png).")
flags.DEFINE_string(
    "mesh",
    "",
    "Shard the target over a device mesh for our rows: auto (every device, on the model axis) or "
    "DATAxMODEL. Default: none on one process; auto in a multi-process run (--distributed), "
    "where process 0 writes the results and the peers are left out.",
)

QUICK_CATEGORIES = 2


def _row_names() -> list[tuple[str, str, str | None, str]]:
    """(row name, kind, draft, acceptance policy) for our methods: kind is the specjax method.
    A policy other than exact is appended to the row name ("ngram+typical")."""
    rows = []
    first_draft = None if FLAGS.draft[0] == "shipped" else FLAGS.draft[0]
    for m in FLAGS.methods:
        needs = methods.method(m).needs
        if m == "vanilla":
            continue
        if needs.pool:  # one row per pool mode, with the first draft if it needs one
            rows += [(f"{m}[{mode}]", m, first_draft) for mode in FLAGS.pool_modes]
        elif m == "redrafter" and FLAGS.beams:  # one row per beam shape
            rows += [(f"{m}[{tag}]", m, None) for tag in _beam_tags()]
        elif (
            needs.head
            and not needs.draft
            and (FLAGS.trees or FLAGS.lookups or FLAGS.answer_stores or len(_heads_of(m)) > 1)
        ):
            # one row per head of this kind (--head), per tree (--trees: medusa, ctc), per
            # lookup branch (--lookups: medusa, ctc) and per answer store feeding a branch
            trees, lookups = [None], [None]
            if m in TREE_METHODS:
                trees = FLAGS.trees or trees
                lookups = [int(k) for k in FLAGS.lookups] or lookups
            for d in _heads_of(m):
                for t in trees:
                    for k in lookups:
                        branch = FLAGS.lookup if k is None else k
                        for store in _store_tags() if m in TREE_METHODS and branch else [""]:
                            tags = [f"head={d}"] if len(_heads_of(m)) > 1 else []
                            tags += [f"tree={Path(t).stem}"] if t else []
                            tags += [f"lookup={k}"] if k else []
                            tags += [store] if store else []
                            rows.append((f"{m}[{','.join(tags)}]" if tags else m, m, None))
        elif needs.head and needs.draft:  # sprinter: a verifier is trained for one draft: the first
            heads = _heads_of(m)
            rows += [
                (f"{m}[{FLAGS.draft[0]}{head}{tag}]", m, first_draft)
                for head in ([f",head={h}" for h in heads] if len(heads) > 1 else [""])
                for tag in _threshold_tags(m)
            ]
        elif needs.draft:  # one row per draft (and gamma); "shipped": the one in models/drafts
            rows += [
                (f"{m}[{d}{tag}]", m, None if d == "shipped" else d)
                for d in FLAGS.draft
                for tag in _gamma_tags(m)
            ]
        elif m == "ngram" and FLAGS.answer_stores:  # one row per answer store
            rows += [(f"{m}[{tag}]" if tag else m, m, None) for tag in _store_tags()]
        else:
            rows.append((m, m, None))
    named = []
    for a in FLAGS.accept:
        for name, kind, draft in rows:
            try:
                policy, _ = methods.acceptance_for(kind, a)
            except SpecjaxError:
                continue  # a policy this method cannot take (SPRINTER's rule for another)
            own = methods.method(kind).default_accept
            row = (name if policy == own else f"{name}+{policy}", kind, draft, policy)
            if row not in named:
                named.append(row)
    return [("vanilla", "vanilla", None, "exact"), *named]


def _gammas(method_name: str) -> list[str] | None:
    """The --gamma list ("4,auto": one sd row each, compared in one run), each checked; None for
    a method without a gamma setting."""
    fields = {f.name for f in dataclasses.fields(methods.method(method_name).settings)}
    if "gamma" not in fields:
        return None
    gammas = [g.strip() for g in FLAGS.gamma.split(",")]
    for g in gammas:
        methods.parse_gamma(g)
    return gammas


def _gamma_tags(method_name: str) -> list[str]:
    """Row-name suffixes: sd[shipped,gamma=4] and sd[shipped,gamma=auto] for --gamma=4,auto; one
    gamma keeps the plain row name."""
    gammas = _gammas(method_name)
    if gammas is None or len(gammas) == 1:
        return [""]
    return [f",gamma={g}" for g in gammas]


def _beam_shapes() -> list[tuple[int, int, int]]:
    """(W, L, slots) per --beams entry ("2x4" or "4x4:8"), each checked."""
    shapes = []
    for entry in FLAGS.beams:
        try:
            wl, _, slots = entry.partition(":")
            w, l_ = (int(x) for x in wl.split("x"))
            shape = (w, l_, int(slots or 0))
        except ValueError:
            raise SpecjaxError(f"--beams entries are WxL or WxL:SLOTS, got {entry!r}") from None
        dataclasses.replace(methods.ReDrafterSettings(), width=w, length=l_, slots=shape[2]).check()
        shapes.append(shape)
    return shapes


def _thresholds() -> list[float]:
    """The --thresholds list, each checked as --threshold is."""
    values = []
    for entry in FLAGS.thresholds:
        try:
            value = float(entry)
        except ValueError:
            raise SpecjaxError(f"--thresholds entries are numbers, got {entry!r}") from None
        dataclasses.replace(methods.SprinterSettings(), threshold=value).check()
        values.append(value)
    return values


def _threshold_tags(method_name: str) -> list[str]:
    """Row-name suffixes for a --thresholds list: sprinter[shipped,threshold=0.3]; [""] (the
    plain row, at --threshold) without one. The entries are checked (`_thresholds`) before any
    row is named."""
    if method_name != "sprinter" or not FLAGS.thresholds:
        return [""]
    return [f",threshold={entry.strip()}" for entry in FLAGS.thresholds]


def _store_tag(entry: str) -> str:
    """A row-name tag for one --answer_stores entry: "" for none, store=shipped, or store= the
    directory's name."""
    e = entry.strip()
    if not methods.store_given(e):
        return ""
    return "store=shipped" if e == "shipped" else f"store={Path(e).resolve().name}"


def _store_tags() -> list[str]:
    """Row-name tags for an --answer_stores list; [""] (the row as --answer_store sets it)
    without one. The entries are checked (`_check_answer_stores`) before any row is named."""
    return [_store_tag(e) for e in FLAGS.answer_stores] or [""]


def _check_answer_stores() -> None:
    """--answer_stores: every entry none, shipped or a store directory, no two named alike, and
    some row to take them (ngram, or a lookup branch of medusa/ctc)."""
    for e in (e.strip() for e in FLAGS.answer_stores):
        if (
            methods.store_given(e)
            and e != "shipped"
            and not (Path(e) / "store_config.json").is_file()
        ):
            raise SpecjaxError(
                f"--answer_stores: {e} is not an answer store (no store_config.json); make one "
                "with python -m train_heads.answer_store"
            )
    tags = _store_tags()
    if len(set(tags)) != len(tags):
        raise SpecjaxError(
            "--answer_stores: two entries would name the same row (same directory name)"
        )
    branch = FLAGS.lookup > 0 or any(int(k) > 0 for k in FLAGS.lookups)
    if FLAGS.answer_stores and "ngram" not in FLAGS.methods and not branch:
        raise SpecjaxError(
            "--answer_stores feeds ngram rows or a lookup branch: give --lookup=K or --lookups"
        )


def _beam_tags() -> list[str]:
    return [f"W={w},L={l_}" + (f",slots={s}" if s else "") for w, l_, s in _beam_shapes()]


def _row_settings(name: str, kind: str, category: str):
    """A row's settings: the category's, with the row's own gamma or beam shape when its name
    carries one."""
    s = _settings(kind, category) if category else _settings(kind, None)
    if ",gamma=" in name:
        s = dataclasses.replace(s, gamma=name.split(",gamma=")[1].rstrip("]"))
    tree = re.search(r"[\[,]tree=([^,\]]+)", name)
    if tree:  # the --trees entry the row is named after
        stem = tree.group(1)
        s = dataclasses.replace(s, tree=next(t for t in FLAGS.trees if Path(t).stem == stem))
    head = re.search(r"[\[,]head=([^,\]]+)", name)
    if head:  # one of several --head directories of this kind
        s = dataclasses.replace(s, head=head.group(1))
    lookup = re.search(r"[\[,]lookup=(\d+)", name)
    if lookup:  # a branch: fed by --answer_store unless the row names its own (below)
        s = dataclasses.replace(s, lookup=int(lookup.group(1)), answer_store=FLAGS.answer_store)
    elif FLAGS.lookups and "lookup" in {f.name for f in dataclasses.fields(s)}:
        s = dataclasses.replace(s, lookup=0, answer_store="")  # the list's 0: the heads alone
    store = re.search(r"[\[,](store=[^,\]]+)", name)
    if store:  # the --answer_stores entry the row is named after
        tag = store.group(1)
        entry = next(e for e in FLAGS.answer_stores if _store_tag(e) == tag)
        s = dataclasses.replace(s, answer_store=entry.strip())
    elif FLAGS.answer_stores and "answer_store" in {f.name for f in dataclasses.fields(s)}:
        s = dataclasses.replace(s, answer_store="")  # the list's "none" row
    threshold = re.search(r",threshold=([^,\]]+)", name)
    if threshold:
        s = dataclasses.replace(s, threshold=float(threshold.group(1)))
    if "[W=" in name:
        tag = dict(kv.split("=") for kv in name.split("[")[1].rstrip("]").split(","))
        s = dataclasses.replace(
            s, width=int(tag["W"]), length=int(tag["L"]), slots=int(tag.get("slots", 0))
        )
    return s


def _settings(kind: str, category: str | None):
    """The method's settings from the flags (the first of a --gamma list), made for the category
    when the method adapts to the task (a settings object with `for_task`, like the phrase
    methods' "auto" preset)."""
    gammas = _gammas(kind)
    fixed = {"gamma": gammas[0]} if gammas else {}
    if methods.method(kind).needs.head:
        fixed["head"] = _head_for(kind)
    if kind in TREE_METHODS and FLAGS.lookup == 0:
        fixed["answer_store"] = ""  # no branch to feed; a row with one sets it (_row_settings)
    s = settings_from_flags(kind, FLAGS, **fixed)
    return s.for_task(category) if category and hasattr(s, "for_task") else s


HEAD_KINDS = {"redrafter": "recurrent", "medusa": "medusa", "ctc": "ctc", "sprinter": "sprinter"}
TREE_METHODS = ("medusa", "ctc")  # methods with a --tree setting


def _heads_of(method_name: str) -> list[str]:
    """The --head directories of this method's kind, [""] (the shipped one) when none is: the
    bench runs several head methods at once, and several heads of one kind (one row each)."""
    from models.head_file import CONFIG_FILE

    dirs = [d for d in FLAGS.head.split(",") if d]
    if len(dirs) == 1:
        return dirs
    mine = []
    for d in dirs:
        try:
            kind = json.loads((Path(d) / CONFIG_FILE).read_text()).get("kind")
        except (OSError, ValueError):
            raise SpecjaxError(f"--head: {d} is not a saved head") from None
        if kind == HEAD_KINDS.get(method_name):
            mine.append(d)
    return mine or [""]


def _head_for(method_name: str) -> str:
    """The first --head directory of this method's kind ("": the shipped one)."""
    return _heads_of(method_name)[0]


def _make_peers(model, draft_model, max_len: int, gamma: int) -> tuple[list, dict[str, str]]:
    """[(row name, runner, mode)] for the installed peers, and {row name: why not} for the rest."""
    import jax

    from specjax import bench_peers

    rows, missing = [], {}
    if jax.process_count() > 1:  # a peer is one process's program: it has no place in the others
        return rows, {p: f"not run across {jax.process_count()} processes" for p in FLAGS.peers}
    for peer in FLAGS.peers:
        if peer == "transformers":
            try:
                tf = bench_peers.TransformersPeer(
                    model.config, model.params, draft=draft_model, gamma=gamma
                )
            except bench_peers.PeerUnavailable as e:
                for mode in bench_peers.TRANSFORMERS_MODES:
                    missing[f"transformers:{mode}"] = str(e)
                continue
            rows += [("transformers:vanilla", tf, "vanilla")]
            rows += [("transformers:prompt_lookup", tf, "prompt_lookup")]
            if draft_model is not None:
                rows += [(f"transformers:assisted[{FLAGS.draft[0]}]", tf, "assisted")]
        elif peer == "llamacpp":
            try:
                # Slack past prompt + budget: prompt lookup evaluates drafts beyond the last token.
                lc = bench_peers.LlamaCppPeer(model.source, n_ctx=max_len + 256)
            except bench_peers.PeerUnavailable as e:
                missing["llama.cpp:vanilla"] = missing["llama.cpp:prompt_lookup"] = str(e)
                continue
            rows += [("llama.cpp:vanilla", lc, "vanilla")]
            rows += [("llama.cpp:prompt_lookup", lc, "prompt_lookup")]
            f32 = _f32_llamacpp(model.source, max_len + 256)
            if isinstance(f32, str):
                missing["llama.cpp[F32]:vanilla"] = f32
            else:  # the same weights as our fp32 forward reads: vanilla on equal bytes
                rows += [("llama.cpp[F32]:vanilla", f32, "vanilla")]
                rows += [("llama.cpp[F32]:prompt_lookup", f32, "prompt_lookup")]
        else:
            raise SpecjaxError(f"unknown peer {peer!r} (choose from transformers, llamacpp)")
    return rows, missing


def _f32_llamacpp(source: str, n_ctx: int):
    """llama.cpp on a float32 copy of a quantised GGUF target, or why there is none."""
    from specjax import bench_peers

    try:
        import gguf

        reader = gguf.GGUFReader(source)
        types = {t.tensor_type for t in reader.tensors}
        if types <= {gguf.GGMLQuantizationType.F32}:
            return "the target GGUF is float32 already (the llama.cpp row is F32)"
        from models.gguf_f32 import f32_gguf

        return bench_peers.LlamaCppPeer(str(f32_gguf(source)), n_ctx=n_ctx)
    except (OSError, ValueError, SpecjaxError) as e:
        return f"no float32 copy of {source}: {str(e).splitlines()[0]}"
    except bench_peers.PeerUnavailable as e:
        return str(e)


def run_bench() -> dict:
    import importlib.util

    import jax
    from tqdm import tqdm

    if importlib.util.find_spec("matplotlib") is None:  # checked before any model work
        raise SpecjaxError(
            "the bench draws results.png with matplotlib, which the base install lacks: "
            "pip install -e '.[bench]'"
        )

    from models.loading import load_model
    from specjax.chat import encode_prompt
    from specjax.engine import generate
    from specjax.methods import make_drafter
    from specjax.sharding import parse_mesh_flag, target_on_mesh

    per_cat, max_new, repeats = FLAGS.per_category, FLAGS.max_new_tokens, FLAGS.repeats
    max_cats = None
    if FLAGS.quick:
        per_cat, max_new, repeats, max_cats = 1, 32, 1, QUICK_CATEGORIES
    if max_new < 1 or repeats < 1 or per_cat < 1:
        raise SpecjaxError("--max_new_tokens, --repeats and --per_category must be >= 1")
    if FLAGS.temperature < 0:
        raise SpecjaxError(f"--temperature must be >= 0, got {FLAGS.temperature}")
    sampled = FLAGS.temperature > 0
    from specjax.sampling import SamplingConfig

    sampling = SamplingConfig(temperature=FLAGS.temperature)
    for m in FLAGS.methods:
        methods.method(m)  # an unknown or unbuilt method fails here, before any model work
        _gammas(m)  # and so does a bad --gamma
    _beam_shapes()  # and bad --beams
    _thresholds()  # and bad --thresholds
    for entry in FLAGS.lookups:
        if not entry.strip().isdigit():
            raise SpecjaxError(f"--lookups entries are integers >= 0, got {entry!r}")
    for flag, values, takers in (
        ("beams", FLAGS.beams, ("redrafter",)),
        ("trees", FLAGS.trees, TREE_METHODS),
        ("lookups", FLAGS.lookups, TREE_METHODS),
        ("answer_stores", FLAGS.answer_stores, ("ngram", *TREE_METHODS)),
        ("thresholds", FLAGS.thresholds, ("sprinter",)),
    ):  # a row list that no row would use is a mistake, not a silent no-op
        if values and not set(takers) & set(FLAGS.methods):
            raise SpecjaxError(
                f"--{flag} gives rows to {' and '.join(takers)}: add it to --methods"
            )
    _check_answer_stores()  # and bad --answer_stores
    parse_mesh_flag(FLAGS.mesh)  # and a malformed --mesh
    for a in FLAGS.accept:
        if a != "auto":
            make_policy(a)  # an unknown policy fails here, before any model work
    counts = {}
    for entry in FLAGS.category_counts:
        cat, _, n = entry.partition("=")
        if not cat or not n.isdigit() or int(n) < 1:
            raise SpecjaxError(f"--category_counts entries are CATEGORY=N (N >= 1), got {entry!r}")
        counts[cat] = int(n)
    prompts = load_prompts(FLAGS.prompts, FLAGS.categories, per_cat, max_cats, counts)
    model = load_model(FLAGS.model)
    if model.tokenizer is None:
        raise SpecjaxError(f"{FLAGS.model} has no tokenizer; the bench needs one for its prompts")
    chat = model.has_chat_template
    ids = [encode_prompt(model.tokenizer, text, chat) for _, text in prompts]
    params, mesh = target_on_mesh(model.params, FLAGS.mesh)
    from specjax.methods import pool_after

    for mode in FLAGS.pool_modes:
        if mode not in ("cold", "warm"):
            raise SpecjaxError(f"unknown pool mode {mode!r} (choose from cold, warm)")
    ours = _row_names()
    cats = sorted({c for c, _ in prompts})
    settings = {kind: {c: _settings(kind, c) for c in cats} for _, kind, _, _ in ours}
    drafters = {}  # (row name, settings) -> (drafter, draft params)

    def drafter_for(name: str, kind: str, draft, category: str):
        s = _row_settings(name, kind, category)
        if (name, s) not in drafters:
            drafters[(name, s)] = make_drafter(
                kind, model.config, model.params, draft=draft, settings=s,
                tokenizer=model.tokenizer,
            )  # fmt: skip
        return drafters[(name, s)]

    first_sd = next((name for name, kind, *_ in ours if kind == "sd"), None)
    draft_model, peer_gamma = None, 4
    if first_sd is not None:
        d = drafter_for(first_sd, "sd", next(dr for n, _, dr, _ in ours if n == first_sd), "")
        draft_model = (d[0].config, d[1])
        peer_gamma = d[0].gamma  # the assisted peer drafts as many as our first sd row
    warm_pools = {}  # (row name, preset) -> the pool carried to the next prompt
    peers, missing = _make_peers(
        model, draft_model, max(len(i) for i in ids) + max_new + 16, peer_gamma
    )
    if sampled:
        missing.update({name: "the peers decode greedily (--temperature=0)" for name, *_ in peers})

    raw = []
    n_rows = len(ours) + len(peers)
    bar = tqdm(
        total=len(prompts) * n_rows, desc="bench", unit="run", file=sys.stderr,
        disable=not is_primary(),
    )  # fmt: skip
    for index, ((cat, _), prompt) in enumerate(zip(prompts, ids, strict=True)):
        vanilla_tokens = None
        for name, kind, draft, accept in ours:
            bar.set_postfix_str(f"{cat}: {name}")
            row = name.removesuffix(f"+{accept}")  # the row's own settings, without the policy
            drafter, dparams = drafter_for(row, kind, draft, cat)
            warm = row.endswith("[warm]")
            pool_key = (name, settings[kind][cat])
            if warm and pool_key in warm_pools:
                dparams = dparams.replace(pool=warm_pools[pool_key])
            policy = make_policy(accept)
            kw = dict(
                max_new_tokens=max_new,
                sampling=sampling,
                eos_ids=model.eos_ids,
                drafter=drafter,
                draft_params=dparams,
                acceptance=policy,
                mesh=mesh,
            )
            first = generate(model.config, params, [prompt], keep_state=warm, **kw)
            if warm:  # the next prompt starts from this one's pool; the timed runs from the old
                warm_pools[pool_key] = pool_after(first)
                first = dataclasses.replace(first, final_state=None)
            secs = [generate(model.config, params, [prompt], **kw).seconds for _ in range(repeats)]
            toks = first.tokens[0]
            vanilla_tokens = toks if vanilla_tokens is None else vanilla_tokens
            raw.append(
                dict(
                    prompt=index,
                    category=cat,
                    method=name,
                    new_tokens=len(toks),
                    target_calls=first.target_calls[0],
                    drafted=first.drafted[0],
                    accepted=first.accepted[0],
                    seconds=secs,
                    compile_seconds=first.compile_seconds,
                    # Sampled outputs of an exact method differ from vanilla's draw by draw; their
                    # exactness is the chi-square tests' job, and the NLL below compares them.
                    mismatch=None if sampled else toks != vanilla_tokens,
                    lossless=policy.lossless,
                    vanilla_agreement=agreement(toks, vanilla_tokens),
                    target_nll=(
                        target_nll(model.config, model.params, prompt, toks, FLAGS.temperature)
                        if sampled
                        else None
                    ),
                    target_choice=(
                        target_choice_rate(model.config, model.params, prompt, toks)
                        if not sampled and not policy.lossless
                        else None
                    ),
                    **peak_memory_mb(),
                )
            )
            bar.update(1)
        for name, runner, mode in peers:
            bar.set_postfix_str(f"{cat}: {name}")
            if name in missing:
                bar.update(1)
                continue
            try:
                run = runner.run(mode, prompt, max_new, model.eos_ids, repeats)
            except Exception as e:  # a peer's own failure is reported, not fatal to the run
                missing[name] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
                bar.update(1)
                continue
            raw.append(
                dict(
                    prompt=index,
                    category=cat,
                    method=name,
                    new_tokens=len(run.tokens),
                    target_calls=run.target_calls,
                    drafted=0,
                    accepted=0,
                    seconds=run.seconds,
                    compile_seconds=run.compile_seconds,
                    # Peers run other kernels (PyTorch fp32, llama.cpp's quantised dot products):
                    # a mismatch is a numerical tie broken differently, reported, not a failure.
                    mismatch=run.tokens != vanilla_tokens,
                    lossless=False,
                    vanilla_agreement=agreement(run.tokens, vanilla_tokens),
                    target_choice=None,
                    **peak_memory_mb(),
                )
            )
            bar.update(1)
    bar.close()
    curves = {"target": verify_cost_curve(model.config, model.params)}
    if jax.default_backend() == "cpu":  # the layout the CPU decode left behind, for comparison
        curves["target, stacked scan"] = verify_cost_curve(model.config, model.params, stacked=True)
    if draft_model is not None:
        curves[f"draft of {first_sd}"] = verify_cost_curve(*draft_model)
    bandwidth = copy_bandwidth_gbs()
    weight_bytes = sum(x.nbytes for x in jax.tree.leaves(model.params))
    return dict(
        date=time.strftime("%Y-%m-%d"),
        machine=f"{platform.machine()} {platform.processor()}".strip(),
        cpu_count=os.cpu_count(),
        backend=jax.default_backend(),
        device=str(jax.local_devices()[0].device_kind),
        mesh=None if mesh is None else dict(mesh.shape),
        processes=jax.process_count(),
        model=model.source,
        prompts=FLAGS.prompts,
        categories=sorted({c for c, _ in prompts}),
        per_category=per_cat,
        max_new_tokens=max_new,
        repeats=repeats,
        temperature=FLAGS.temperature,
        gamma=FLAGS.gamma,
        settings={
            kind: {c: repr(s) for c, s in by_cat.items()}
            for kind, by_cat in settings.items()
            if dataclasses.fields(next(iter(by_cat.values())))
        },
        command="python -m specjax.bench " + " ".join(sys.argv[1:]),
        raw=raw,
        unavailable=missing,
        verify_cost=curves,
        # The gamma each sd row ran (the chosen one for --gamma=auto).
        sd_gamma={
            name: drafters[key][0].gamma
            for name, kind, *_ in ours
            if kind == "sd"
            for key in drafters
            if key[0] == name
        },
        copy_bandwidth_gbs=bandwidth,
        weight_bytes=weight_bytes,
        roofline_tokens_per_s=bandwidth * 1e9 / weight_bytes,
    )


def main(argv):
    res = run_or_fail(argv, run_bench, "--prompts=humaneval")
    if not is_primary():
        return
    out = Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str))
    md = summarize(res)
    (out / "results.md").write_text(md)
    plot(res, out / "results.png")
    print(md)
    print(
        f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
