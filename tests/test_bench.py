"""`python -m specjax.bench --quick` end to end on a tiny random model with a real word tokenizer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_run import run_module
from tests.hf_reference import make_tiny_hf_model

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the cat sat on a mat and dog ran to big red ball one day she saw it was".split()


def _word_tokenizer(out_dir: Path, vocab_size: int) -> None:
    """A WordLevel tokenizer.json over the tiny model's whole vocabulary (unused ids padded)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2}
    for w in WORDS:
        vocab[w] = len(vocab)
    while len(vocab) < vocab_size:
        vocab[f"w{len(vocab)}"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(
            dict(
                tokenizer_class="PreTrainedTokenizerFast",
                unk_token="[UNK]",
                bos_token="<s>",
                eos_token="</s>",
            )
        )
    )


# Prompts that repeat themselves, so the drafters that copy from the context find something.
REPETITIVE_PROMPTS = [
    {"category": "story", "prompt": "the cat sat on a mat and the cat sat on a mat and the"},
    {"category": "play", "prompt": "one day she saw a big red ball one day she saw a big"},
]
SHORT_PROMPT = [{"category": "story", "prompt": "the cat sat on a mat"}]


def run_bench(*args: str, env: dict | None = None, timeout: int = 300):
    """`python -m specjax.bench ARGS` from the repository root, its output captured."""
    return run_module("specjax.bench", *args, env=env, timeout=timeout)


def _tiny_bench_inputs(root: Path, prompts: list[dict]) -> tuple[Path, Path]:
    """The bench's inputs under root: the tiny word-level model (tiny/) and a prompts file."""
    model_dir = root / "tiny"
    make_tiny_hf_model("llama", model_dir, seed=5)
    _word_tokenizer(model_dir, vocab_size=97)
    path = root / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in prompts) + "\n")
    return model_dir, path


def _untrained_head(model_dir: Path, out: Path) -> Path:
    """A random ReDrafter head saved for the tiny model (rows are exact whatever it drafts)."""
    import jax

    from models.head_file import save_head
    from models.loading import load_model
    from models.recurrent_head import init_head

    model = load_model(str(model_dir), tokenizer=False)
    head = init_head(jax.random.key(3), model.config.D, model.config.V)
    return save_head(out, head, model.config, model.params)


def _untrained_medusa(model_dir: Path, out: Path) -> Path:
    """Zero-initialised Medusa heads for the tiny model, with made-up rank accuracies."""
    from models.head_file import save_head
    from models.loading import load_model
    from models.medusa_heads import init_heads

    model = load_model(str(model_dir), tokenizer=False)
    acc = {"rank_accuracy": [[0.4, 0.2, 0.1], [0.2, 0.1, 0.05], [0.1, 0.05, 0.0], [0.05] * 3]}
    return save_head(out, init_heads(model.params, 4), model.config, model.params, extra=acc)


def _untrained_verifier(model_dir: Path, out: Path) -> Path:
    """A SPRINTER verifier for the tiny model's self:1 draft that scores every token 0.5: any
    threshold above flags every draft, any below flags none."""
    import jax.numpy as jnp

    from models.acceptance_verifier import VerifierParams
    from models.fingerprint import draft_fingerprint
    from models.head_file import save_head
    from models.loading import load_model
    from specjax.drafters.draft_model import self_draft

    model = load_model(str(model_dir), tokenizer=False)
    draft_config, draft = self_draft(model.config, model.params, 1)
    verifier = VerifierParams(w=jnp.zeros((1, draft_config.D)), b=jnp.zeros((1,)))
    extra = {
        "draft_fingerprint": draft_fingerprint(draft_config, draft),
        "temperatures": [0.0],
        "with_token": False,
    }
    return save_head(out, verifier, model.config, model.params, extra=extra)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("bench")
    model_dir, prompts = _tiny_bench_inputs(root, REPETITIVE_PROMPTS)
    head = _untrained_head(model_dir, root / "head")
    medusa = _untrained_medusa(model_dir, root / "medusa")
    verifier = _untrained_verifier(model_dir, root / "verifier")
    out = root / "out"
    # Every forward scanned: this run compiles some 60 programs, and the per-layer layout's
    # unrolled ones compile slower; the layouts give the same tokens (tests/test_layer_layout.py).
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        SPECJAX_CACHE=str(root / "cache"),
        SPECJAX_CPU_LAYERS="stacked",
    )
    proc = run_bench(
        f"--model={model_dir}",
        f"--prompts={prompts}",
        "--methods=vanilla,sd,ngram,ouroboros,lookahead,redrafter,medusa,sprinter",
        "--gamma=2,auto",
        f"--head={head},{medusa},{verifier}",
        "--thresholds=0.6,0.4",
        "--beams=2x2,2x3:4",
        "--trees=auto,mc_sim_7b_63",
        "--draft=self:1",
        "--phrase_preset=cpu",
        "--peers=transformers,llamacpp",
        "--quick",
        f"--out={out}",
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


def test_results_json_has_every_raw_timing(bench_run):
    _, res = bench_run
    for key in ("date", "machine", "model", "raw", "verify_cost", "roofline_tokens_per_s"):
        assert key in res
    methods = {r["method"] for r in res["raw"]}
    assert {"vanilla", "ngram", "transformers:vanilla", "transformers:prompt_lookup"} <= methods
    for r in res["raw"]:
        assert len(r["seconds"]) == 1 and all(s > 0 for s in r["seconds"])  # --quick: 1 repeat
        assert r["new_tokens"] >= 1 and r["target_calls"] >= 1
        assert r["host_peak_rss_mb"] > 0
    assert set(res["verify_cost"]["target"]["c"]) == {"1", "2", "4", "8", "16", "32"}


def test_lossless_methods_match_vanilla(bench_run):
    _, res = bench_run
    ours = [r for r in res["raw"] if r["lossless"]]
    # vanilla, sd at gamma 2 and auto, ngram, ouroboros and lookahead with a cold and a warm
    # pool, redrafter at two beam shapes and medusa with two trees, on two prompts
    assert len(ours) == 24
    assert all(not r["mismatch"] for r in ours)


def test_approximate_rows_report_their_agreement_with_vanilla(tmp_path):
    """--accept=typical adds one row per speculative method, marked approximate; greedy typical
    acceptance keeps vanilla's tokens, so the agreement is 1 and the table says approximate.
    (A run of its own: in the shared run above it would double every row.)"""
    model_dir, prompts = _tiny_bench_inputs(tmp_path, REPETITIVE_PROMPTS)
    out = tmp_path / "out"
    env = dict(os.environ, JAX_PLATFORMS="cpu", SPECJAX_CACHE=str(tmp_path / "cache"))
    proc = run_bench(
        f"--model={model_dir}", f"--prompts={prompts}", "--methods=vanilla,ngram",
        "--accept=exact,typical", "--peers=", "--quick", f"--out={out}", env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = json.loads((out / "results.json").read_text())["raw"]
    typical = [r for r in raw if r["method"].endswith("+typical")]
    assert [r["method"] for r in typical] == ["ngram+typical"] * 2  # one per prompt
    assert all(not r["lossless"] and r["vanilla_agreement"] == 1.0 for r in typical)
    assert all(r["target_choice"] == 1.0 for r in typical)
    assert all(r["target_choice"] is None for r in raw if r not in typical)
    assert all(r["lossless"] and not r["mismatch"] for r in raw if r not in typical)
    md = (out / "results.md").read_text()
    assert "| ngram+typical | 2 |" in md
    assert "approximate: 1.00 of tokens equal vanilla's, 1.00 are the target's own choice" in md


def test_a_beams_list_gives_one_redrafter_row_each(bench_run):
    _, res = bench_run
    rows = {r["method"].split("+")[0] for r in res["raw"] if r["method"].startswith("redrafter")}
    assert rows == {"redrafter[W=2,L=2]", "redrafter[W=2,L=3,slots=4]"}
    trees = {r["method"].split("+")[0] for r in res["raw"] if r["method"].startswith("medusa")}
    assert trees == {"medusa[tree=auto]", "medusa[tree=mc_sim_7b_63]"}


def test_a_thresholds_list_gives_one_sprinter_row_each(bench_run):
    """The verifier scores 0.5 everywhere: at 0.6 every draft calls the target, at 0.4 none does
    until K = 20 tokens are drafted, so the lower threshold calls the target far less often."""
    _, res = bench_run
    calls, tokens = {}, {}
    for r in res["raw"]:
        if r["method"].startswith("sprinter"):
            calls[r["method"]] = calls.get(r["method"], 0) + r["target_calls"]
            tokens[r["method"]] = tokens.get(r["method"], 0) + r["new_tokens"]
    assert set(calls) == {"sprinter[self:1,threshold=0.6]", "sprinter[self:1,threshold=0.4]"}
    flagged, unflagged = (
        calls[f"sprinter[self:1,threshold={t}]"] / tokens[f"sprinter[self:1,threshold={t}]"]
        for t in ("0.6", "0.4")
    )
    assert unflagged < flagged / 4
    assert unflagged <= 0.15  # about one call per K + 1 = 21 tokens, and the prefill
    # Checked drafts are the target's own choice; unchecked ones from a 1-layer draft often not.
    choice = {m: [r["target_choice"] for r in res["raw"] if r["method"] == m] for m in calls}
    assert choice["sprinter[self:1,threshold=0.6]"] == [1.0, 1.0]  # one per prompt
    assert min(choice["sprinter[self:1,threshold=0.4]"]) < 1.0


def test_several_heads_of_one_kind_give_one_row_each(tmp_path):
    """--head with two CTC modules (one trained as EAGLE-1, without the blank) gives one ctc row
    per module and tree; every row is exact."""
    import jax

    from models.ctc_draft import init_ctc_head
    from models.head_file import save_head
    from models.loading import load_model

    model_dir, prompts = _tiny_bench_inputs(tmp_path, SHORT_PROMPT)
    model = load_model(str(model_dir), tokenizer=False)
    acc = [[0.4, 0.2, 0.1], [0.2, 0.1, 0.05], [0.1, 0.05, 0.0], [0.05] * 3]
    heads = []
    for name, weight in (("ctc", 0.01), ("eagle1", 0.0)):
        head = init_ctc_head(model.config, model.params, jax.random.key(len(heads)), scale=0.3)
        extra = {"ctc_weight": weight, "config": {"frames": 4}, "rank_accuracy": acc}
        heads.append(save_head(tmp_path / name, head, model.config, model.params, extra=extra))
    out = tmp_path / "out"
    env = dict(os.environ, JAX_PLATFORMS="cpu", SPECJAX_CACHE=str(tmp_path / "cache"))
    proc = run_bench(
        f"--model={model_dir}", f"--prompts={prompts}", "--methods=vanilla,ctc",
        f"--head={heads[0]},{heads[1]}", "--trees=mc_sim_7b_63", "--peers=", "--quick",
        f"--out={out}", env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = json.loads((out / "results.json").read_text())["raw"]
    rows = {r["method"] for r in raw if r["method"] != "vanilla"}
    assert rows == {f"ctc[head={h},tree=mc_sim_7b_63]" for h in heads}
    assert all(not r["mismatch"] for r in raw)


def test_category_counts_override_the_prompts_per_category(tmp_path):
    from specjax.prompt_sets import load_prompts

    path = tmp_path / "p.jsonl"
    rows = [{"category": c, "prompt": f"{c} {i}"} for c in ("a", "b") for i in range(5)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    kept = load_prompts(str(path), [], 2, counts={"b": 4})
    assert [c for c, _ in kept] == ["a", "a", "b", "b", "b", "b"]


def test_a_gamma_list_gives_one_sd_row_each_and_auto_reports_its_choice(bench_run):
    _, res = bench_run
    rows = {r["method"] for r in res["raw"] if r["method"].startswith("sd[")}
    assert rows >= {"sd[self:1,gamma=2]", "sd[self:1,gamma=auto]"}
    assert res["sd_gamma"]["sd[self:1,gamma=2]"] == 2
    assert 1 <= res["sd_gamma"]["sd[self:1,gamma=auto]"] <= 8
    # The CPU bench also reports the stacked scan's curve, the layout the decode moved away from.
    assert {"target", "target, stacked scan"} <= set(res["verify_cost"])


@pytest.mark.parametrize("method", ["ngram", "ouroboros[cold]", "lookahead[warm]"])
def test_drafters_draft_on_repetitive_prompts(bench_run, method):
    _, res = bench_run
    assert sum(r["drafted"] for r in res["raw"] if r["method"] == method) > 0


def test_phrase_settings_are_reported(bench_run):
    out, res = bench_run
    for kind in ("ouroboros", "lookahead"):
        assert set(res["settings"][kind]) == {"play", "story"}
        assert all("preset='cpu'" in s for s in res["settings"][kind].values())
    assert "settings per category" in (out / "results.md").read_text()


def test_missing_peer_is_a_row_not_a_failure(bench_run):
    out, res = bench_run
    # The tiny model is a safetensors directory: llama.cpp cannot run it, whatever is installed.
    assert "llama.cpp:vanilla" in res["unavailable"]
    assert "not run:" in (out / "results.md").read_text()


def test_chart_is_a_png(bench_run):
    out, _ = bench_run
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_method_is_one_line_and_exit_2(tmp_path: Path):
    proc = run_bench("--methods=vanilla,warp", f"--out={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown method 'warp'")


@pytest.mark.parametrize(
    "flag, methods",
    [
        ("--thresholds=0.3", "vanilla,sd"),
        ("--beams=2x3", "vanilla"),
        ("--trees=auto", "vanilla"),
        ("--lookups=0,3", "vanilla,ngram"),
        ("--answer_stores=none,shipped", "vanilla,sd"),
    ],
)
def test_a_row_list_for_a_method_not_run_is_one_line_and_exit_2(tmp_path: Path, flag, methods):
    proc = run_bench(f"--methods={methods}", flag, f"--out={tmp_path}")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {flag.split('=')[0]} gives rows to") and "--methods" in last


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--methods=ngram", "--answer_stores=none,/no/such/store"], "is not an answer store"),
        (["--methods=medusa", "--answer_stores=shipped"], "feeds ngram rows or a lookup branch"),
    ],
    ids=["not_a_store", "no_branch_to_feed"],
)
def test_bad_answer_stores_are_one_line_and_exit_2(tmp_path: Path, flags, says):
    proc = run_bench(*flags, f"--out={tmp_path}")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --answer_stores") and says in last, last


ROW_SETTINGS_SCRIPT = """
import json
from absl import flags
from specjax import bench
flags.FLAGS(["bench", "--methods=ngram,medusa", "--lookups=0,4", "--answer_stores=none,shipped"])
print(json.dumps([
    [name, getattr(s, "lookup", None), s.answer_store]
    for name, kind, _, _ in bench._row_names()[1:]
    for s in [bench._row_settings(name, kind, None)]
]))
"""


def test_answer_store_rows_run_the_store_and_branch_they_are_named_after():
    """What `_row_settings` hands each row of an --answer_stores x --lookups grid: the store only
    where the row names it, and the --lookups 0 row no branch at all."""
    proc = subprocess.run(
        [sys.executable, "-c", ROW_SETTINGS_SCRIPT],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [
        ["ngram", None, ""],
        ["ngram[store=shipped]", None, "shipped"],
        ["medusa", 0, ""],
        ["medusa[lookup=4]", 4, ""],
        ["medusa[lookup=4,store=shipped]", 4, "shipped"],
    ]


ROW_NAMES_SCRIPT = """
import json, sys
from absl import flags
from specjax import bench
out = []
for argv in json.loads(sys.stdin.read()):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["bench", *argv])
    out.append(bench._row_names())
print(json.dumps(out))
"""


def test_row_lists_name_one_row_per_entry_as_written(tmp_path: Path):
    """`_row_names` for each row-list flag, parsed as the command line parses it: no model runs.

    Pins what the bench's fixture runs cannot afford to cover: gamma and draft lists crossed,
    sprinter rows taking the first draft for every verifier, head paths with a `+`, entries named
    as written, and an --accept list that adds a policy's rows without repeating exact ones."""
    verifiers = []
    for name in ("v1", "v+2"):  # a "+" in a path must not be read as a policy suffix
        (tmp_path / name).mkdir()
        (tmp_path / name / "head_config.json").write_text(json.dumps({"kind": "sprinter"}))
        verifiers.append(str(tmp_path / name))
    cases = [
        ["--methods=vanilla,sd,sprinter", "--thresholds=0.50,0.2", "--accept=auto,exact"],
        ["--methods=sd", "--gamma=4,auto", "--draft=shipped,/d/x"],
        ["--methods=sprinter", "--draft=/d/a,/d/b", f"--head={','.join(verifiers)}"],
        ["--methods=medusa,ctc", "--trees=auto,mc_sim_7b_63", "--lookups=0,3"],
        ["--methods=ngram,medusa", "--lookups=0,4", "--answer_stores=none,shipped"],
        ["--methods=redrafter", "--beams=1x3,4x4:8"],
        ["--methods=ngram", "--accept=exact,typical"],
    ]
    proc = subprocess.run(
        [sys.executable, "-c", ROW_NAMES_SCRIPT],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    got = [[tuple(row) for row in rows] for rows in json.loads(proc.stdout)]
    vanilla = ("vanilla", "vanilla", None, "exact")
    v1, v2 = verifiers
    assert got == [
        [
            vanilla,
            ("sd[shipped]", "sd", None, "exact"),
            ("sprinter[shipped,threshold=0.50]", "sprinter", None, "sprinter"),
            ("sprinter[shipped,threshold=0.2]", "sprinter", None, "sprinter"),
            ("sprinter[shipped,threshold=0.50]+exact", "sprinter", None, "exact"),
            ("sprinter[shipped,threshold=0.2]+exact", "sprinter", None, "exact"),
        ],
        [
            vanilla,
            ("sd[shipped,gamma=4]", "sd", None, "exact"),
            ("sd[shipped,gamma=auto]", "sd", None, "exact"),
            ("sd[/d/x,gamma=4]", "sd", "/d/x", "exact"),
            ("sd[/d/x,gamma=auto]", "sd", "/d/x", "exact"),
        ],
        [
            vanilla,
            (f"sprinter[/d/a,head={v1}]", "sprinter", "/d/a", "sprinter"),
            (f"sprinter[/d/a,head={v2}]", "sprinter", "/d/a", "sprinter"),
        ],
        [
            vanilla,
            ("medusa[tree=auto]", "medusa", None, "exact"),
            ("medusa[tree=auto,lookup=3]", "medusa", None, "exact"),
            ("medusa[tree=mc_sim_7b_63]", "medusa", None, "exact"),
            ("medusa[tree=mc_sim_7b_63,lookup=3]", "medusa", None, "exact"),
            ("ctc[tree=auto]", "ctc", None, "exact"),
            ("ctc[tree=auto,lookup=3]", "ctc", None, "exact"),
            ("ctc[tree=mc_sim_7b_63]", "ctc", None, "exact"),
            ("ctc[tree=mc_sim_7b_63,lookup=3]", "ctc", None, "exact"),
        ],
        [
            vanilla,
            ("ngram", "ngram", None, "exact"),
            ("ngram[store=shipped]", "ngram", None, "exact"),
            ("medusa", "medusa", None, "exact"),
            ("medusa[lookup=4]", "medusa", None, "exact"),
            ("medusa[lookup=4,store=shipped]", "medusa", None, "exact"),
        ],
        [
            vanilla,
            ("redrafter[W=1,L=3]", "redrafter", None, "exact"),
            ("redrafter[W=4,L=4,slots=8]", "redrafter", None, "exact"),
        ],
        [vanilla, ("ngram", "ngram", None, "exact"), ("ngram+typical", "ngram", None, "typical")],
    ]


def test_without_matplotlib_names_the_extra_before_any_work(tmp_path: Path):
    """The base install has no matplotlib: one line naming the bench extra, not a traceback
    at the end of the run."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text('import sys\nsys.modules["matplotlib"] = None\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    proc = run_bench("--quick", f"--out={tmp_path / 'out'}", env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the bench draws results.png"), lines
    assert "pip install -e '.[bench]'" in lines[0]
    assert not (tmp_path / "out").exists()


def test_target_nll_is_the_transformers_reference_log_likelihood(tmp_path):
    import numpy as np
    import torch

    from models.config import ModelConfig
    from models.hf_checkpoint import params_from_hf, read_hf_dir
    from specjax.bench_measure import target_nll
    from tests.hf_reference import torch_logits

    ref = make_tiny_hf_model("llama", tmp_path, seed=2)
    hf_config, tensors = read_hf_dir(tmp_path)
    config = ModelConfig.from_hf(hf_config)
    params = params_from_hf(config, tensors)
    prompt, tokens = [3, 9, 4, 1], [7, 7, 20, 5, 11]
    logits = torch.as_tensor(torch_logits(ref, np.asarray([prompt + tokens])))[0] / 0.7
    logp = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
    expected = -logp[torch.arange(len(tokens)), torch.as_tensor(tokens)].mean().item()
    assert abs(target_nll(config, params, prompt, tokens, 0.7) - expected) < 1e-4


def test_sampled_bench_reports_the_target_nll_of_every_row(tmp_path):
    """--temperature > 0: our rows sample, the exactness column becomes the target's NLL of
    each output, and the greedy peers are listed as not run."""
    model_dir, prompts = _tiny_bench_inputs(tmp_path, SHORT_PROMPT)
    out = tmp_path / "out"
    proc = run_bench(
        f"--model={model_dir}", f"--prompts={prompts}", "--methods=vanilla,ngram",
        "--accept=exact,typical", "--peers=transformers", "--temperature=1.0", "--quick",
        f"--out={out}", env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in res["raw"]} == {"vanilla", "ngram", "ngram+typical"}
    for r in res["raw"]:
        assert r["mismatch"] is None and 0 < r["target_nll"] < 20, r
    assert "transformers:vanilla" in res["unavailable"]
    md = (out / "results.md").read_text()
    assert "Sampled at temperature 1.0" in md and "target NLL per token" in md
    assert "(approximate)" in md


@pytest.mark.parametrize("n", [12, 20, 27])
def test_every_bench_row_gets_its_own_colour(n):
    from specjax.bench_report import row_colours

    colours = row_colours(n)
    assert len(colours) == n and len(set(colours)) == n
