"""The bench's report: per-method aggregates (tau, tok/s, speedup to vanilla in the same run,
the exactness or distance column), results.md and results.png."""

from __future__ import annotations

import statistics
from pathlib import Path


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
            nll=(
                sum(r["target_nll"] * r["new_tokens"] for r in rs) / max(tokens, 1)
                if all(r.get("target_nll") is not None for r in rs)
                else None
            ),
            target_choice=(
                sum(r["target_choice"] * r["new_tokens"] for r in rs) / max(tokens, 1)
                if all(r.get("target_choice") is not None for r in rs)
                else None
            ),
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
    temperature = res.get("temperature", 0.0)
    decoding = f"Sampled at temperature {temperature}" if temperature > 0 else "Greedy"
    check_header = "target NLL per token" if temperature > 0 else "mismatches vs vanilla"
    lines = [
        f"specjax bench, {res['date']}, {res['machine']} ({res['cpu_count']} cores, "
        f"{res['backend']}: {res['device']}), model `{Path(res['model']).name}`",
        "",
        f"{decoding}, batch 1, up to {res['max_new_tokens']} new tokens, median of {res['repeats']} "
        f"timed runs after a warm-up run, gamma {res['gamma']}. Command: `{res['command']}`",
        "",
        *(
            [
                "Method settings per category (specjax/methods.py, configs/; a row whose "
                "name carries a gamma, threshold, beam shape, tree, lookup, store or head runs that instead): "
                + "; ".join(
                    f"{kind}: " + ", ".join(f"{c}: {s}" for c, s in by_cat.items())
                    for kind, by_cat in res["settings"].items()
                ),
                "",
            ]
            if res["settings"]
            else []
        ),
        *(
            [
                "gamma each sd row ran (the chosen one for --gamma=auto): "
                + ", ".join(f"{name}: {g}" for name, g in res["sd_gamma"].items()),
                "",
            ]
            if res.get("sd_gamma")
            else []
        ),
        "| category | method | prompts | tau | acceptance | tok/s | speedup vs vanilla "
        f"| {check_header} | first call s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cat in cats:
        for m in methods:
            s = agg.get((m, cat))
            if s is None:
                continue
            acc = "-" if s["acceptance"] is None else f"{s['acceptance']:.2f}"
            ours = not m.startswith(("transformers", "llama.cpp"))
            if s["nll"] is not None:  # sampled: exact rows sit at vanilla's NLL within noise
                check = f"{s['nll']:.3f}" + ("" if s["lossless"] else " (approximate)")
            elif s["lossless"] or not ours:
                check = f"{s['mismatches']}"
            else:
                check = f"approximate: {s['agreement']:.2f} of tokens equal vanilla's"
                if s["target_choice"] is not None:
                    check += f", {s['target_choice']:.2f} are the target's own choice"
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
        "a peer's count is numerical ties broken by different kernels. When sampling, every row "
        "reports the target's mean negative log-likelihood per token of its output at the "
        "sampling temperature instead (lower is closer to the target's own choices; an exact "
        "method matches vanilla within sampling noise). 'first call' is compile (ours) or "
        "warm-up (peers).",
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


def row_colours(n: int) -> list:
    """n distinct RGBA colours, one per bench row. The default cycle has 10 and wraps, which gave
    a peer the colour of one of our rows; tab20's dark shades come first (10 hues), then their
    light twins, and past 20 rows a ramp."""
    import matplotlib.pyplot as plt

    if n <= 20:
        tab20 = plt.get_cmap("tab20")
        return [tab20((2 * i) % 20 + (2 * i) // 20) for i in range(n)]
    return [plt.get_cmap("turbo")(i / (n - 1)) for i in range(n)]


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
    colours = row_colours(len(methods))
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.2 * len(cats) + 4), 8), sharex=True)
    for ax, key, label in ((axes[0], "speedup", "speedup vs vanilla"), (axes[1], "tau", "tau")):
        for i, m in enumerate(methods):
            vals = [agg[(m, c)][key] if (m, c) in agg else 0.0 for c in cats]
            offset = (i - (len(methods) - 1) / 2) * width
            ax.bar(x + offset, vals, width, label=m, color=colours[i])
        ax.axhline(1.0, color="gray", linewidth=0.8)
        ax.set_ylabel(label)
    axes[1].set_xticks(x, cats, rotation=30, ha="right")
    axes[0].legend(fontsize=8, ncol=2)
    axes[0].set_title(f"specjax bench: {Path(res['model']).name}, {res['date']}")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
