"""`python -m specjax.decode --method=redrafter` as a user runs it: a head given with `--head`
decodes the same text as vanilla, and every bad head or beam setting is one `error:` line and
exit code 2 (stories260K from the CI-only reference data, with an untrained head saved for it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import pytest

from models.head_file import WEIGHTS_FILE, save_head
from models.recurrent_head import init_head
from tests.test_decode_cli import PROMPT, non_status_lines, run_cli, stories_dir  # noqa: F401


@pytest.fixture(scope="module")
def heads(stories_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # noqa: F811
    """An untrained head for stories260K, a partial copy of it, and a head for another target."""
    from models.loading import load_model
    from tests.hf_reference import make_tiny_hf_model

    root = tmp_path_factory.mktemp("redrafter_heads")
    stories = load_model(str(stories_dir), tokenizer=False)
    head = init_head(jax.random.key(0), stories.config.D, stories.config.V)
    good = save_head(root / "good", head, stories.config, stories.params)
    partial = root / "partial"
    shutil.copytree(good, partial)
    (partial / WEIGHTS_FILE).unlink()
    make_tiny_hf_model("llama", root / "other_model")
    other = load_model(str(root / "other_model"), tokenizer=False)
    foreign = save_head(
        root / "foreign",
        init_head(jax.random.key(1), other.config.D, other.config.V),
        other.config,
        other.params,
    )
    return {"model": stories_dir, "good": good, "partial": partial, "foreign": foreign}


def _decode(heads, *extra: str) -> tuple:
    return (f"--model={heads['model']}", "--nochat", f"--prompt={PROMPT}", *extra)


def test_redrafter_with_a_given_head_decodes_what_vanilla_does(heads) -> None:
    base = _decode(heads, "--json", "--max_new_tokens=24")
    vanilla = run_cli(*base)
    beams = run_cli(*base, "--method=redrafter", f"--head={heads['good']}", "--tree_slots=6")
    assert vanilla.returncode == 0 and beams.returncode == 0, beams.stderr
    want, got = (json.loads(p.stdout.splitlines()[-1]) for p in (vanilla, beams))
    assert got["tokens"] == want["tokens"] and got["method"] == "redrafter"
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
    "not_a_head": (lambda h: [f"--head={h['model']}"], "is not a saved head"),
    "no_shipped_head_for_this_target": (lambda h: [], "needs --head=DIR for this target"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_heads_and_beams_are_one_error_line_and_exit_code_2(case: str, heads) -> None:
    build, text = BAD_CASES[case]
    proc = run_cli(*_decode(heads, "--method=redrafter", *build(heads)))
    lines = non_status_lines(proc.stderr)
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert text in lines[0]
    assert proc.stdout == ""
