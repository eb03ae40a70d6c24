"""The derived-checkpoint cache: entries are found again, and a truncated, garbled, half-written
or foreign entry is detected, deleted and never returned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models import derived_cache


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("SPECJAX_CACHE", str(root))
    return root


@pytest.fixture
def source(tmp_path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    return path


def write_two_files(tmp: Path) -> None:
    (tmp / "weights.bin").write_bytes(bytes(range(256)) * 1000)
    (tmp / "config.json").write_text('{"a": 1}')


def test_store_then_lookup(cache, source):
    assert derived_cache.lookup("kind", source) is None
    entry = derived_cache.store("kind", source, write_two_files)
    assert entry is not None and entry.parent == cache / "kind"
    assert entry.name.startswith("model-")
    assert derived_cache.lookup("kind", source) == entry
    assert (entry / "weights.bin").read_bytes() == bytes(range(256)) * 1000
    manifest = json.loads((entry / derived_cache.MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["config.json", "weights.bin"]
    assert not [p for p in entry.parent.iterdir() if ".tmp-" in p.name]  # no leftovers


@pytest.mark.parametrize(
    "damage",
    [
        lambda e: (e / "weights.bin").write_bytes((e / "weights.bin").read_bytes()[:-1]),
        lambda e: (e / "weights.bin").write_bytes(b"\xff" + (e / "weights.bin").read_bytes()[1:]),
        lambda e: (e / "config.json").unlink(),
        lambda e: (e / derived_cache.MANIFEST).unlink(),
        lambda e: (e / derived_cache.MANIFEST).write_text("{not json"),
    ],
    ids=["truncated", "garbled", "file_missing", "no_manifest", "bad_manifest"],
)
def test_damaged_entry_is_deleted_and_rebuilt(cache, source, damage):
    entry = derived_cache.store("kind", source, write_two_files)
    damage(entry)
    assert derived_cache.lookup("kind", source) is None
    assert not entry.exists()
    assert derived_cache.store("kind", source, write_two_files) == entry
    assert derived_cache.lookup("kind", source) == entry


def test_other_version_or_changed_source_is_another_entry(cache, source, monkeypatch):
    entry = derived_cache.store("kind", source, write_two_files)
    monkeypatch.setattr(derived_cache, "specjax_version", lambda: "9.9.9")
    assert derived_cache.lookup("kind", source) is None
    monkeypatch.undo()
    monkeypatch.setenv("SPECJAX_CACHE", str(cache))
    assert derived_cache.lookup("kind", source) == entry
    source.write_bytes(source.read_bytes() + b"more")  # the file changed: size and mtime
    assert derived_cache.lookup("kind", source) is None
    new = derived_cache.store("kind", source, write_two_files)
    assert new != entry and not entry.exists()  # the stale entry of the same file is dropped


def test_entries_of_other_files_are_kept(cache, source, tmp_path):
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF other")
    kept = derived_cache.store("kind", other, write_two_files)
    derived_cache.store("kind", source, write_two_files)
    assert derived_cache.lookup("kind", other) == kept


def test_entry_sealed_for_another_identity_is_not_used(cache, source, monkeypatch):
    """A manifest names what it was made from; an entry under the right name but sealed for
    another specjax version (e.g. copied between machines) is refused."""
    entry = derived_cache.store("kind", source, write_two_files)
    manifest = json.loads((entry / derived_cache.MANIFEST).read_text())
    manifest["identity"]["specjax"] = "0.0.1"
    (entry / derived_cache.MANIFEST).write_text(json.dumps(manifest))
    assert derived_cache.lookup("kind", source) is None
    assert not entry.exists()


def test_deleting_the_cache_only_costs_time(cache, source):
    import shutil

    derived_cache.store("kind", source, write_two_files)
    shutil.rmtree(cache)
    assert derived_cache.lookup("kind", source) is None
    assert derived_cache.store("kind", source, write_two_files) is not None


def test_unwritable_cache_returns_none(tmp_path, source, monkeypatch):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    monkeypatch.setenv("SPECJAX_CACHE", str(blocker))
    assert derived_cache.store("kind", source, write_two_files) is None
    assert derived_cache.lookup("kind", source) is None


def test_failed_write_leaves_nothing(cache, source):
    def fail(tmp: Path) -> None:
        (tmp / "half").write_bytes(b"x")
        raise OSError("disk full")

    assert derived_cache.store("kind", source, fail) is None
    assert derived_cache.lookup("kind", source) is None
    assert list((cache / "kind").iterdir()) == []
