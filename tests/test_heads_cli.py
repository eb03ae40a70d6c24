"""`python -m specjax.decode --method=redrafter|medusa|ctc` as a user runs it: a head given with
`--head` decodes the same text as vanilla, and every bad head, beam or tree setting is one
`error:` line and exit code 2 (stories260K from the CI-only reference data, with untrained heads
saved for it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import pytest

from models.ctc_draft import init_ctc_head
from models.head_file import WEIGHTS_FILE, save_head
from models.recurrent_head import init_head
from tests.cli_batch import run_batch
from tests.test_decode_cli import PROMPT, non_status_lines, run_cli, stories_dir  # noqa: F401


def _with_corrupt_weights(head_dir: Path, out: Path) -> Path:
    """A copy of a saved head whose weights file is not safetensors."""
    shutil.copytree(head_dir, out)
    (out / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    return out


@pytest.fixture(scope="module")
def heads(stories_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # noqa: F811
    """Untrained heads for stories260K (recurrent, and Medusa's with and without the rank
    accuracies --tree=auto reads), a partial copy, and a head for another target."""
    from models.loading import load_model
    from models.medusa_heads import init_heads
    from tests.hf_reference import make_tiny_hf_model

    root = tmp_path_factory.mktemp("redrafter_heads")
    stories = load_model(str(stories_dir), tokenizer=False)
    head = init_head(jax.random.key(0), stories.config.D, stories.config.V)
    good = save_head(root / "good", head, stories.config, stories.params)
    partial = root / "partial"
    shutil.copytree(good, partial)
    (partial / WEIGHTS_FILE).unlink()
    corrupt = _with_corrupt_weights(good, root / "corrupt")
    make_tiny_hf_model("llama", root / "other_model")
    other = load_model(str(root / "other_model"), tokenizer=False)
    foreign = save_head(
        root / "foreign",
        init_head(jax.random.key(1), other.config.D, other.config.V),
        other.config,
        other.params,
    )
    medusa = init_heads(stories.params, num_heads=4)
    accuracy = {"rank_accuracy": [[0.5, 0.2, 0.1], [0.3, 0.1, 0.05], [0.2, 0.1, 0.0], [0.1] * 3]}
    medusa_dir = save_head(root / "medusa", medusa, stories.config, stories.params, extra=accuracy)
    bare = save_head(root / "medusa_bare", medusa, stories.config, stories.params)
    medusa_corrupt = _with_corrupt_weights(medusa_dir, root / "medusa_corrupt")
    deep = root / "deep_tree.json"
    deep.write_text('{"paths": [[0], [0, 0], [0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0, 0]]}')
    orphan = root / "orphan_tree.json"
    orphan.write_text('{"paths": [[0], [1, 0]]}')
    ctc_meta = {
        "ctc_weight": 0.01,
        "config": {"frames": 4},
        "rank_accuracy": accuracy["rank_accuracy"],
    }
    ctc = init_ctc_head(stories.config, stories.params, jax.random.key(2), scale=0.3)
    ctc_dir = save_head(root / "ctc", ctc, stories.config, stories.params, extra=ctc_meta)
    ctc_bare = save_head(root / "ctc_bare", ctc, stories.config, stories.params)
    ctc_corrupt = _with_corrupt_weights(ctc_dir, root / "ctc_corrupt")
    other_ctc = init_ctc_head(other.config, other.params, jax.random.key(3))
    ctc_foreign = save_head(
        root / "ctc_foreign", other_ctc, other.config, other.params, extra=ctc_meta
    )
    return {
        "model": stories_dir, "good": good, "partial": partial, "corrupt": corrupt,
        "foreign": foreign, "medusa": medusa_dir, "medusa_bare": bare,
        "medusa_corrupt": medusa_corrupt, "deep_tree": deep, "orphan_tree": orphan,
        "ctc": ctc_dir, "ctc_bare": ctc_bare, "ctc_corrupt": ctc_corrupt,
        "ctc_foreign": ctc_foreign,
    }  # fmt: skip


def _decode(heads, *extra: str) -> tuple:
    return (f"--model={heads['model']}", "--nochat", f"--prompt={PROMPT}", *extra)


def test_redrafter_with_a_given_head_decodes_what_vanilla_does(heads) -> None:
    base = _decode(heads, "--json", "--max_new_tokens=24")
    vanilla = run_cli(*base)
    beams = run_cli(
        *base, "--method=redrafter", f"--head={heads['good']}", "--beam_width=2",
        "--beam_length=3", "--tree_slots=6",
    )  # fmt: skip
    assert vanilla.returncode == 0 and beams.returncode == 0, beams.stderr
    want, got = (json.loads(p.stdout.splitlines()[-1]) for p in (vanilla, beams))
    assert got["tokens"] == want["tokens"] and got["method"] == "redrafter"
    assert got["lossless"] is True


# A tree file through the CLI is the CTC test's below (mc_sim_7b_63): Medusa's is extended.
@pytest.mark.parametrize("tree", ["auto", pytest.param("mc_sim_7b_63", marks=pytest.mark.extended)])
def test_medusa_with_given_heads_decodes_what_vanilla_does(heads, tree) -> None:
    base = _decode(heads, "--json", "--max_new_tokens=24")
    vanilla = run_cli(*base)
    medusa = run_cli(*base, "--method=medusa", f"--head={heads['medusa']}", f"--tree={tree}")
    assert vanilla.returncode == 0 and medusa.returncode == 0, medusa.stderr
    want, got = (json.loads(p.stdout.splitlines()[-1]) for p in (vanilla, medusa))
    assert got["tokens"] == want["tokens"] and got["method"] == "medusa"


def test_ctc_with_a_given_drafter_decodes_what_vanilla_does(heads) -> None:
    """(--tree=auto is the real-model test's; here the 64-node reference tree.)"""
    base = _decode(heads, "--json", "--max_new_tokens=24")
    vanilla = run_cli(*base)
    ctc = run_cli(*base, "--method=ctc", f"--head={heads['ctc']}", "--tree=mc_sim_7b_63")
    assert vanilla.returncode == 0 and ctc.returncode == 0, ctc.stderr
    want, got = (json.loads(p.stdout.splitlines()[-1]) for p in (vanilla, ctc))
    assert got["tokens"] == want["tokens"] and got["method"] == "ctc"
    assert got["lossless"] is True


BAD_CASES = {
    "width_zero": (lambda h: ["--beam_width=0", f"--head={h['good']}"], "must be >= 1"),
    "length_zero": (lambda h: ["--beam_length=0", f"--head={h['good']}"], "must be >= 1"),
    "tree_slots_past_the_tree": (
        lambda h: ["--beam_width=2", "--beam_length=2", "--tree_slots=6", f"--head={h['good']}"],
        "--tree_slots must be 0",
    ),
    "beam_tree_larger_than_the_cache": (
        lambda h: [
            "--beam_width=8",
            "--beam_length=4",
            "--max_new_tokens=4",
            "--max_cache_len=32",
            f"--head={h['good']}",
        ],
        "a draft block of 33 slots",
    ),
    "head_for_another_target": (
        lambda h: [f"--head={h['foreign']}"],
        "was made for a different target",
    ),
    "partial_head": (lambda h: [f"--head={h['partial']}"], "is incomplete"),
    "corrupt_head": (lambda h: [f"--head={h['corrupt']}"], "corrupt or truncated"),
    "not_a_head": (lambda h: [f"--head={h['model']}"], "is not a saved head"),
    "no_shipped_head_for_this_target": (lambda h: [], "needs --head=DIR for this target"),
    "medusa_heads_as_a_recurrent_head": (
        lambda h: [f"--head={h['medusa']}"],
        "holds a medusa head, not a recurrent head",
    ),
}
# Medusa's: (arguments after --method=medusa, text of the error line)
MEDUSA_BAD_CASES = {
    "heads_for_another_target": (
        lambda h: [f"--head={h['foreign']}"],
        "holds a recurrent head, not a medusa head",
    ),
    "partial_heads": (lambda h: [f"--head={h['partial']}"], "is incomplete"),
    "corrupt_heads": (lambda h: [f"--head={h['medusa_corrupt']}"], "corrupt or truncated"),
    "tree_deeper_than_the_heads": (
        lambda h: [f"--head={h['medusa']}", f"--tree={h['deep_tree']}"],
        "heads draft only 4 tokens",
    ),
    "tree_node_without_its_parent": (
        lambda h: [f"--head={h['medusa']}", f"--tree={h['orphan_tree']}"],
        "has no parent",
    ),
    "tree_larger_than_the_cache": (
        lambda h: [
            f"--head={h['medusa']}",
            "--tree=mc_sim_7b_63",
            "--max_new_tokens=4",
            "--max_cache_len=48",
        ],
        "a draft block of 64 slots",
    ),  # fmt: skip
    "auto_tree_without_accuracies": (
        lambda h: [f"--head={h['medusa_bare']}", "--tree=auto"],
        "records no rank accuracies",
    ),
    "no_shipped_heads_for_this_target": (lambda h: [], "needs --head=DIR for this target"),
}


# The CTC drafter's: (arguments after --method=ctc, text of the error line)
CTC_BAD_CASES = {
    "drafter_for_another_target": (
        lambda h: [f"--head={h['ctc_foreign']}"],
        "was made for a different target",
    ),
    "corrupt_drafter": (lambda h: [f"--head={h['ctc_corrupt']}"], "corrupt or truncated"),
    "tree_deeper_than_the_frames": (
        lambda h: [f"--head={h['ctc']}", f"--tree={h['deep_tree']}"],
        "heads draft only 4 tokens",
    ),
    "drafter_without_its_training_record": (
        lambda h: [f"--head={h['ctc_bare']}"],
        "records no frames and ctc_weight",
    ),
    "medusa_heads_as_a_ctc_drafter": (
        lambda h: [f"--head={h['medusa']}"],
        "holds a medusa head, not a ctc head",
    ),
}
CASES = {"redrafter": BAD_CASES, "medusa": MEDUSA_BAD_CASES, "ctc": CTC_BAD_CASES}


ALL_CASES = [(m, c) for m, cases in CASES.items() for c in cases]


@pytest.fixture(scope="module")
def bad_case_runs(heads) -> dict[tuple[str, str], dict]:
    """Every bad case in one process (`tests.cli_batch`), not one process of imports each."""
    argvs = [_decode(heads, f"--method={m}", *CASES[m][c][0](heads)) for m, c in ALL_CASES]
    return dict(zip(ALL_CASES, run_batch("specjax.decode", [list(a) for a in argvs]), strict=True))


@pytest.mark.parametrize("method, case", ALL_CASES)
def test_bad_heads_beams_and_trees_are_one_error_line_and_exit_code_2(method, case, bad_case_runs):
    run = bad_case_runs[method, case]
    lines = non_status_lines(run["stderr"])
    assert run["returncode"] == 2, run["stderr"]
    assert len(lines) == 1 and lines[0].startswith("error: "), run["stderr"]
    assert CASES[method][case][1] in lines[0]
    assert run["stdout"] == ""
