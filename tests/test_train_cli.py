"""`python -m train_heads.make_data` and `python -m train_heads.train` as a user runs them: the
tiny random target end to end (data -> training -> final/ draft), and bad input as one `error:`
line with exit code 2. Each case is a subprocess (~3 s of imports)."""

from __future__ import annotations

import pytest

from tests.cli_run import run_module


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """make_data then train on the tiny random target: (root, make_data run, train run)."""
    root = tmp_path_factory.mktemp("cli")
    make = run_module(
        "train_heads.make_data",
        "--target=tiny-random",
        "--num_prompts=6",
        "--max_new_tokens=8",
        "--batch_size=3",
        "--shard_size=3",
        f"--out={root}/data",
    )
    train = run_module(
        "train_heads.train",
        "--config=tiny_test",
        f"--data_dir={root}/data",
        f"--out_dir={root}/run",
        "--steps=4",
        "--warmup_steps=1",
        "--eval_every=2",
        "--save_every=2",
        "--batch_size=2",
        "--eval_examples=2",
    )
    return root, make, train


def test_make_data_then_train_writes_a_final_draft(pipeline):
    root, make, train = pipeline
    assert make.returncode == 0, make.stderr[-2000:]
    assert "6 examples" in make.stdout and (root / "data" / "manifest.json").is_file()
    assert train.returncode == 0, train.stderr[-2000:]
    assert "draft saved to" in train.stdout
    assert (root / "run" / "final" / "draft_config.json").is_file()
    assert (root / "run" / "metrics.jsonl").is_file()


@pytest.mark.parametrize(
    "module,args,message",
    [
        ("train_heads.train", ["--config=nope"], "error: unknown config 'nope'"),
        ("train_heads.train", ["--config=tiny_test", "--steps=abc"], "error:"),
        ("train_heads.train", ["--config=tiny_test", "--lr=-1"], "error: --lr must be > 0"),
        ("train_heads.train", ["--config=tiny_test", "--data_dir=/nonexistent"], "no manifest"),
        (
            "train_heads.train",
            ["--config=tiny_ctc", "--rollout_frames=4"],
            "error: --rollout_frames must be in [1, frames=3], got 4",
        ),
        ("train_heads.make_data", ["--num_prompts=0"], "error: --num_prompts must be >= 1"),
        ("train_heads.make_data", ["--topk=-1"], "error: --topk must be >= 0"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(module, args, message):
    proc = run_module(module, *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().count("\n") == 0, proc.stderr[-2000:]
    assert message in proc.stderr
