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
import statistics
import sys
import time
from pathlib import Path

from absl import app, flags

from models.errors import SpecjaxError
from specjax import methods
from specjax.acceptance import make_policy
from specjax.cli import parse_flags, run_or_fail
from specjax.methods import define_flags, settings_from_flags
from specjax.prompts import load_prompts

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
    ["exact"],
    "Acceptance policies for the speculative rows (one row per method and policy): exact "
    "(lossless: mismatches vs vanilla must be 0) and/or typical (approximate: reported by its "
    "agreement with vanilla's tokens).",
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
flags.DEFINE_integer("max_new_tokens", 128, "Tokens per prompt.")
flags.DEFINE_integer("repeats", 3, "Timed runs per prompt and method (median reported).")
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

QUICK_CATEGORIES = 2


def copy_bandwidth_gbs() -> float:
    """Read + write bytes per second of a large memcpy (the machine's memory roofline)."""
    import numpy as np

    a = np.ones(64 * 1024 * 1024, np.float32)
    b = np.empty_like(a)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(b, a)
        times.append(time.perf_counter() - t0)
    return 2 * a.nbytes / min(times) / 1e9


def verify_cost_curve(config, params, Ts=(1, 2, 4, 8, 16, 32), context=256, repeats=10) -> dict:
    """Median ms of one jitted forward over T new tokens after `context` cached ones."""
    import jax
    import jax.numpy as jnp

    from models.cache import init_cache
    from models.transformer import causal_mask, forward

    cache = init_cache(config.L, 1, config.K, context + max(Ts) + 1, config.H, params.dtype)
    cache = cache.replace(length=jnp.array([context], jnp.int32))
    fwd = jax.jit(forward, static_argnums=0)
    ms = {}
    for T in Ts:
        args = (
            jnp.zeros((1, T), jnp.int32),
            context + jnp.arange(T)[None],
            cache,
            causal_mask(1, T),
        )
        jax.block_until_ready(fwd(config, params, *args))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fwd(config, params, *args))
            times.append(time.perf_counter() - t0)
        ms[T] = 1e3 * statistics.median(times)
    return {"ms": ms, "c": {T: ms[T] / ms[1] for T in Ts}}


def _peak_memory_mb() -> dict:
    """Peak host RSS of this process so far, and the accelerator's peak where JAX reports it."""
    import resource

    import jax

    out = {"host_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
    return out


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
        elif needs.draft:  # one row per draft; "shipped": the one in models/drafts
            rows += [(f"{m}[{d}]", m, None if d == "shipped" else d) for d in FLAGS.draft]
        else:
            rows.append((m, m, None))
    named = [
        (name if a == "exact" else f"{name}+{a}", kind, draft, a)
        for a in FLAGS.accept
        for name, kind, draft in rows
    ]
    return [("vanilla", "vanilla", None, "exact"), *named]


def _settings(kind: str, category: str):
    """The method's settings from the flags, made for the category when the method adapts to
    the task (a settings object with `for_task`, like the phrase methods' "auto" preset)."""
    s = settings_from_flags(kind, FLAGS)
    return s.for_task(category) if hasattr(s, "for_task") else s


def _make_peers(model, draft_model, max_len: int) -> tuple[list, dict[str, str]]:
    """[(row name, runner, mode)] for the installed peers, and {row name: why not} for the rest."""
    from specjax import bench_peers

    rows, missing = [], {}
    for peer in FLAGS.peers:
        if peer == "transformers":
            try:
                tf = bench_peers.TransformersPeer(
                    model.config, model.params, draft=draft_model, gamma=FLAGS.gamma
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
        else:
            raise SpecjaxError(f"unknown peer {peer!r} (choose from transformers, llamacpp)")
    return rows, missing


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
    from specjax.engine import generate
    from specjax.methods import make_drafter
    from specjax.prompts import encode_prompt

    per_cat, max_new, repeats = FLAGS.per_category, FLAGS.max_new_tokens, FLAGS.repeats
    max_cats = None
    if FLAGS.quick:
        per_cat, max_new, repeats, max_cats = 1, 32, 1, QUICK_CATEGORIES
    if max_new < 1 or repeats < 1 or per_cat < 1:
        raise SpecjaxError("--max_new_tokens, --repeats and --per_category must be >= 1")
    for m in FLAGS.methods:
        methods.method(m)  # an unknown or unbuilt method fails here, before any model work
    for a in FLAGS.accept:
        make_policy(a)  # an unknown policy fails here, before any model work
    prompts = load_prompts(FLAGS.prompts, FLAGS.categories, per_cat, max_cats)
    model = load_model(FLAGS.model)
    if model.tokenizer is None:
        raise SpecjaxError(f"{FLAGS.model} has no tokenizer; the bench needs one for its prompts")
    chat = model.has_chat_template
    ids = [encode_prompt(model.tokenizer, text, chat) for _, text in prompts]
    from specjax.methods import pool_after

    for mode in FLAGS.pool_modes:
        if mode not in ("cold", "warm"):
            raise SpecjaxError(f"unknown pool mode {mode!r} (choose from cold, warm)")
    ours = _row_names()
    cats = sorted({c for c, _ in prompts})
    settings = {kind: {c: _settings(kind, c) for c in cats} for _, kind, _, _ in ours}
    drafters = {}  # (row name, settings) -> (drafter, draft params)

    def drafter_for(name: str, kind: str, draft, category: str):
        s = settings[kind][category] if category else settings_from_flags(kind, FLAGS)
        if (name, s) not in drafters:
            drafters[(name, s)] = make_drafter(
                kind, model.config, model.params, draft=draft, settings=s
            )
        return drafters[(name, s)]

    first_sd = next((name for name, kind, *_ in ours if kind == "sd"), None)
    draft_model = None
    if first_sd is not None:
        d = drafter_for(first_sd, "sd", next(dr for n, _, dr, _ in ours if n == first_sd), "")
        draft_model = (d[0].config, d[1])
    warm_pools = {}  # (row name, preset) -> the pool carried to the next prompt
    peers, missing = _make_peers(model, draft_model, max(len(i) for i in ids) + max_new + 16)

    raw = []
    n_rows = len(ours) + len(peers)
    bar = tqdm(total=len(prompts) * n_rows, desc="bench", unit="run", file=sys.stderr)
    for index, ((cat, _), prompt) in enumerate(zip(prompts, ids, strict=True)):
        vanilla_tokens = None
        for name, kind, draft, accept in ours:
            bar.set_postfix_str(f"{cat}: {name}")
            drafter, dparams = drafter_for(name.split("+")[0], kind, draft, cat)
            warm = name.split("+")[0].endswith("[warm]")
            pool_key = (name, settings[kind][cat])
            if warm and pool_key in warm_pools:
                dparams = dparams.replace(pool=warm_pools[pool_key])
            policy = make_policy(accept)
            kw = dict(
                max_new_tokens=max_new,
                eos_ids=model.eos_ids,
                drafter=drafter,
                draft_params=dparams,
                acceptance=policy,
            )
            first = generate(model.config, model.params, [prompt], keep_state=warm, **kw)
            if warm:  # the next prompt starts from this one's pool; the timed runs from the old
                warm_pools[pool_key] = pool_after(first)
                first = dataclasses.replace(first, final_state=None)
            secs = [
                generate(model.config, model.params, [prompt], **kw).seconds for _ in range(repeats)
            ]
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
                    mismatch=toks != vanilla_tokens,
                    lossless=policy.lossless,
                    vanilla_agreement=_agreement(toks, vanilla_tokens),
                    **_peak_memory_mb(),
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
                    vanilla_agreement=_agreement(run.tokens, vanilla_tokens),
                    **_peak_memory_mb(),
                )
            )
            bar.update(1)
    bar.close()
    curves = {"target": verify_cost_curve(model.config, model.params)}
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
        model=model.source,
        prompts=FLAGS.prompts,
        categories=sorted({c for c, _ in prompts}),
        per_category=per_cat,
        max_new_tokens=max_new,
        repeats=repeats,
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
        copy_bandwidth_gbs=bandwidth,
        weight_bytes=weight_bytes,
        roofline_tokens_per_s=bandwidth * 1e9 / weight_bytes,
    )


def _agreement(tokens: list[int], vanilla: list[int]) -> float:
    """Fraction of positions (over the longer output) where the tokens equal vanilla greedy's:
    how far an approximate method strays from the target (1.0 for a lossless one)."""
    n = max(len(tokens), len(vanilla), 1)
    return sum(a == b for a, b in zip(tokens, vanilla, strict=False)) / n


def aggregate(res: dict) -> dict:
    """{(method, category or 'all'): tau, tok/s, acceptance, speedup, mismatches} from the raw runs.

    Tokens/s of a group is total tokens over the sum of per-prompt median seconds; the speedup is
    that over vanilla's on the same prompts in the same run.
    """
    from collections import defaultdict

    groups = defaultdict(list)
    for r in res["raw"]:
        for key in (r["category"], "all"):
            groups[(r["method"], key)].append(r)
    out = {}
    for (method, cat), rs in groups.items():
        tokens = sum(r["new_tokens"] for r in rs)
        secs = sum(statistics.median(r["seconds"]) for r in rs)
        drafted = sum(r["drafted"] for r in rs)
        out[(method, cat)] = dict(
            prompts=len(rs),
            tau=tokens / max(sum(r["target_calls"] for r in rs), 1),
            tokens_per_s=tokens / secs if secs > 0 else 0.0,
            acceptance=(sum(r["accepted"] for r in rs) / drafted) if drafted else None,
            mismatches=sum(bool(r["mismatch"]) for r in rs),
            lossless=all(r.get("lossless", False) for r in rs),
            agreement=sum(r.get("vanilla_agreement", 0.0) * r["new_tokens"] for r in rs)
            / max(tokens, 1),
            compile_s=statistics.median(r["compile_seconds"] for r in rs),
            peak_rss_mb=max(r["host_peak_rss_mb"] for r in rs),
        )
    for (_method, cat), s in out.items():
        base = out[("vanilla", cat)]["tokens_per_s"]
        s["speedup"] = s["tokens_per_s"] / base if base else 0.0
    return out


def summarize(res: dict) -> str:
    """results.md: per category and method, then c(T), the roofline and the missing peers."""
    agg = aggregate(res)
    cats = [c for c in res["categories"]] + (["all"] if len(res["categories"]) > 1 else [])
    methods = list(dict.fromkeys(r["method"] for r in res["raw"]))
    lines = [
        f"specjax bench, {res['date']}, {res['machine']} ({res['cpu_count']} cores, "
        f"{res['backend']}: {res['device']}), model `{Path(res['model']).name}`",
        "",
        f"Greedy, batch 1, up to {res['max_new_tokens']} new tokens, median of {res['repeats']} "
        f"timed runs after a warm-up run, gamma {res['gamma']}. Command: `{res['command']}`",
        "",
        *(
            [
                "Method settings per category (specjax/methods.py, configs/): "
                + "; ".join(
                    f"{kind}: " + ", ".join(f"{c}: {s}" for c, s in by_cat.items())
                    for kind, by_cat in res["settings"].items()
                ),
                "",
            ]
            if res["settings"]
            else []
        ),
        "| category | method | prompts | tau | acceptance | tok/s | speedup vs vanilla "
        "| mismatches vs vanilla | first call s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cat in cats:
        for m in methods:
            s = agg.get((m, cat))
            if s is None:
                continue
            acc = "-" if s["acceptance"] is None else f"{s['acceptance']:.2f}"
            ours = not m.startswith(("transformers", "llama.cpp"))
            check = (
                f"{s['mismatches']}"
                if s["lossless"] or not ours
                else f"approximate: {s['agreement']:.2f} of tokens equal vanilla's"
            )
            lines.append(
                f"| {cat} | {m} | {s['prompts']} | {s['tau']:.2f} | {acc} | "
                f"{s['tokens_per_s']:.1f} | {s['speedup']:.2f}x | {check} | "
                f"{s['compile_s']:.1f} | {s['peak_rss_mb']:.0f} |"
            )
    for name, why in res["unavailable"].items():
        lines.append(f"| all | {name} | - | - | - | - | - | - | - | not run: {why} |")
    lines += [
        "",
        "tau = new tokens / target forwards (prefill included); speedups are to our vanilla in this "
        "run. Mismatches of our lossless methods must be 0; approximate rows (an acceptance policy "
        "other than exact) report the fraction of their tokens equal to vanilla greedy's instead; "
        "a peer's count is numerical ties broken by different kernels. 'first call' is compile (ours) or warm-up (peers).",
        "",
        "Verify cost c(T) = time of one forward over T new tokens / over 1 (context 256):",
        "",
    ]
    for who, c in res["verify_cost"].items():
        Ts = list(c["c"])
        lines += [
            f"| {who} | " + " | ".join(f"T={t}" for t in Ts) + " |",
            "|---|" + "---|" * len(Ts),
            "| ms | " + " | ".join(f"{c['ms'][t]:.1f}" for t in Ts) + " |",
            "| c(T) | " + " | ".join(f"{c['c'][t]:.2f}" for t in Ts) + " |",
            "",
        ]
    lines.append(
        f"Roofline: {res['weight_bytes'] / 1e6:.0f} MB of weights read per target call / "
        f"{res['copy_bandwidth_gbs']:.1f} GB/s measured copy bandwidth = "
        f"{res['roofline_tokens_per_s']:.1f} tok/s at most for vanilla decoding in this dtype."
    )
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    """results.png: speedup vs vanilla and tau, per category, one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    agg = aggregate(res)
    cats = list(res["categories"]) + (["all"] if len(res["categories"]) > 1 else [])
    methods = list(dict.fromkeys(r["method"] for r in res["raw"]))
    x = np.arange(len(cats))
    width = 0.8 / len(methods)
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.2 * len(cats) + 4), 8), sharex=True)
    for ax, key, label in ((axes[0], "speedup", "speedup vs vanilla"), (axes[1], "tau", "tau")):
        for i, m in enumerate(methods):
            vals = [agg[(m, c)][key] if (m, c) in agg else 0.0 for c in cats]
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width, label=m)
        ax.axhline(1.0, color="gray", linewidth=0.8)
        ax.set_ylabel(label)
    axes[1].set_xticks(x, cats, rotation=30, ha="right")
    axes[0].legend(fontsize=8, ncol=2)
    axes[0].set_title(f"specjax bench: {Path(res['model']).name}, {res['date']}")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def main(argv):
    res = run_or_fail(argv, run_bench, "--prompts=humaneval")
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
