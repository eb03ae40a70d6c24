"""A disk cache of what specjax derives from a checkpoint file, so a second run waits for the model,
not for its loader.

Why: turning the embedded Q4_1 GGUF into float32 params means parsing 100k metadata strings,
dequantising and re-laying out 538 MB, seconds of work whose result never changes for one file.
Each entry is a directory under `cache_root()/<kind>/`, named by a key of the source file's
identity (resolved path, size, mtime) and specjax's version, so editing the file or upgrading
specjax starts a new entry. An entry is written to a temporary directory and renamed into place,
and carries a manifest with every file's size and SHA-256; an entry whose manifest is missing, from
another identity, or does not match its files is deleted and rebuilt, never used. Deleting the
whole cache directory only costs time, and an unwritable cache only costs time too.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from absl import logging

MANIFEST = "manifest.json"
# Bump when the layout of any entry changes in a way the specjax version would not show.
CACHE_FORMAT = 1
_CHUNK = 8 << 20


def cache_root() -> Path:
    """specjax's cache directory: `$SPECJAX_CACHE`, else `$XDG_CACHE_HOME/specjax` or
    `~/.cache/specjax`."""
    env = os.environ.get("SPECJAX_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "specjax"


def specjax_version() -> str:
    try:
        return importlib.metadata.version("specjax")
    except importlib.metadata.PackageNotFoundError:  # a source checkout that was never installed
        return "unknown"


def source_identity(kind: str, source: Path) -> dict:
    """What an entry of `kind` derived from `source` depends on (also written into its manifest)."""
    st = source.stat()
    return {
        "kind": kind,
        "source": str(source.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "specjax": specjax_version(),
        "format": CACHE_FORMAT,
    }


def entry_dir(kind: str, source: Path) -> Path:
    ident = json.dumps(source_identity(kind, source), sort_keys=True)
    key = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return cache_root() / kind / f"{source.stem}-{key}"


def lookup(kind: str, source: Path) -> Path | None:
    """The verified entry directory for `source`, or None (a damaged entry is deleted)."""
    entry = entry_dir(kind, source)
    if not entry.exists():
        return None
    problem = _check(entry, source_identity(kind, source))
    if problem is None:
        return entry
    logging.warning("specjax cache entry %s is unusable (%s); rebuilding it", entry, problem)
    shutil.rmtree(entry, ignore_errors=True)
    return None


def store(kind: str, source: Path, write: Callable[[Path], None]) -> Path | None:
    """Runs `write(tmp_dir)`, seals the files with a manifest and moves them into place.

    Returns the entry, or None when the cache cannot be written (which only costs time). If another
    process stored the same entry first, its entry is kept.
    """
    entry = entry_dir(kind, source)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}.tmp-"))
    except OSError as e:
        logging.warning("specjax cache %s is not writable (%s)", entry.parent, e)
        return None
    try:
        write(tmp)
        files = {
            p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(tmp.iterdir())
            if p.is_file()
        }
        manifest = {"identity": source_identity(kind, source), "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        shutil.rmtree(entry, ignore_errors=True)  # a damaged entry lookup() could not remove
        os.replace(tmp, entry)
        _drop_stale(entry, manifest["identity"])
    except OSError as e:
        if lookup(kind, source) is not None:  # a concurrent writer got there first
            return entry
        logging.warning("cannot write the specjax cache entry %s (%s)", entry, e)
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


def _drop_stale(entry: Path, identity: dict) -> None:
    """Deletes the other entries of this kind made from the same path (an older version of the
    file, or of specjax): they can never be looked up again and would only fill the disk."""
    for other in entry.parent.iterdir():
        if other == entry or other.name.startswith("."):
            continue
        try:
            source = json.loads((other / MANIFEST).read_text())["identity"]["source"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours to judge: lookup() deletes a damaged entry of its own key
        if source == identity["source"]:
            shutil.rmtree(other, ignore_errors=True)


def _check(entry: Path, identity: dict) -> str | None:
    """None if `entry` is sound for `identity`, else what is wrong with it."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        files = manifest["files"]
        if manifest["identity"] != identity:
            return "made for another file or specjax version"
        for name, want in files.items():
            path = entry / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != want["size"]:
                return f"{name} has {path.stat().st_size} bytes, the manifest says {want['size']}"
            if _sha256(path) != want["sha256"]:
                return f"{name} does not match its checksum"
    except FileNotFoundError:
        return "no manifest"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable manifest: {type(e).__name__}"
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
