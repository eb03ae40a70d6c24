"""specjax/phrase_pool.py: insertion, replacement order, lookup, in-place overwrite, prompt
seeding, merging rows, and the save/load round trip."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.errors import SpecjaxError
from specjax.phrase_pool import (
    broadcast_rows,
    empty_pool,
    insert,
    insert_many,
    load_pool,
    lookup,
    merge_rows,
    num_entries,
    overwrite,
    save_pool,
    seed_from_tokens,
)

NB, G, M = 8, 3, 2


def _add(pool, key, phrase):
    return insert(pool, jnp.int32(key), jnp.asarray(phrase, jnp.int32))


def _phrases(pool, key, k=G):
    phrases, valid, _ = lookup(pool, jnp.int32(key), k)
    return [
        tuple(p) for p, v in zip(np.asarray(phrases).tolist(), np.asarray(valid), strict=True) if v
    ]


def test_lookup_returns_the_key_s_phrases_newest_first():
    pool = empty_pool(NB, G, M)
    pool = _add(pool, 5, [1, 2])
    pool = _add(pool, 5, [3, 4])
    pool = _add(pool, 6, [7, 7])
    assert _phrases(pool, 5) == [(3, 4), (1, 2)]
    assert _phrases(pool, 6) == [(7, 7)]
    assert _phrases(pool, 9) == []


def test_keys_sharing_a_bucket_stay_apart():
    pool = _add(_add(empty_pool(NB, G, M), 1, [2, 2]), 1 + NB, [3, 3])
    assert _phrases(pool, 1) == [(2, 2)]
    assert _phrases(pool, 1 + NB) == [(3, 3)]


def test_a_full_bucket_replaces_the_least_recently_written_entry():
    pool = empty_pool(NB, G, M)
    for p in ([1, 1], [2, 2], [3, 3]):
        pool = _add(pool, 4, p)
    pool = _add(pool, 4, [1, 1])  # written again: now the newest, so [2, 2] is the oldest
    pool = _add(pool, 4, [9, 9])
    assert _phrases(pool, 4) == [(9, 9), (1, 1), (3, 3)]
    assert num_entries(pool) == G


def test_reinserting_a_phrase_does_not_duplicate_it():
    pool = _add(_add(empty_pool(NB, G, M), 2, [5, 6]), 2, [5, 6])
    assert _phrases(pool, 2) == [(5, 6)]


def test_invalid_keys_and_phrases_are_ignored():
    pool = empty_pool(NB, G, M)
    pool = insert(pool, jnp.int32(-1), jnp.asarray([1, 2]))
    pool = insert(pool, jnp.int32(3), jnp.asarray([1, -1]))
    pool = insert(pool, jnp.int32(3), jnp.asarray([1, 2]), ok=False)
    assert num_entries(pool) == 0 and int(pool.clock) == 0


def test_insert_many_is_in_order_and_masked():
    keys = jnp.asarray([1, 1, 2, 1], jnp.int32)
    phrases = jnp.asarray([[1, 0], [2, 0], [3, 0], [4, 0]], jnp.int32)
    ok = jnp.asarray([True, True, True, False])
    pool = insert_many(empty_pool(NB, G, M), keys, phrases, ok)
    assert _phrases(pool, 1) == [(2, 0), (1, 0)]
    assert _phrases(pool, 2) == [(3, 0)]


def test_overwrite_replaces_an_entry_in_place():
    pool = _add(_add(empty_pool(NB, G, M), 3, [1, 1]), 3, [2, 2])
    _, _, slots = lookup(pool, jnp.int32(3), 2)  # slots[1] holds [1, 1]
    pool = overwrite(pool, jnp.int32(3), slots[1], jnp.asarray([7, 8]))
    assert set(_phrases(pool, 3)) == {(2, 2), (7, 8)} and num_entries(pool) == 2
    assert _phrases(pool, 3)[0] == (7, 8)  # refreshed is newest
    # An entry that no longer holds the key is left alone.
    same = overwrite(pool, jnp.int32(4), slots[1], jnp.asarray([5, 5]))
    assert _phrases(same, 4) == []


def test_seeding_from_tokens_adds_every_ngram_of_the_valid_prefix():
    tokens = jnp.asarray([1, 2, 3, 1, 2, 4, 0, 0], jnp.int32)
    pool = seed_from_tokens(empty_pool(NB, G, M), tokens, 6)
    assert _phrases(pool, 1) == [(2, 4), (2, 3)]
    assert set(_phrases(pool, 2)) == {(3, 1)}
    assert set(_phrases(pool, 3)) == {(1, 2)}
    assert _phrases(pool, 4) == []  # its continuation runs past the valid prefix


def test_merge_rows_keeps_the_newest_distinct_entries_per_bucket():
    base = _add(empty_pool(NB, G, M), 1, [1, 1])
    rows = broadcast_rows(base, 2)
    row0 = _add(jax.tree.map(lambda x: x[0], rows), 1, [2, 2])
    row1 = _add(_add(jax.tree.map(lambda x: x[1], rows), 1, [3, 3]), 2, [4, 4])
    merged = merge_rows(jax.tree.map(lambda a, b: jnp.stack([a, b]), row0, row1))
    assert set(_phrases(merged, 1)) == {(1, 1), (2, 2), (3, 3)}
    assert _phrases(merged, 2) == [(4, 4)]
    assert num_entries(merged) == 4  # the shared [1, 1] is kept once


def test_save_and_load_round_trip(tmp_path):
    pool = _add(_add(empty_pool(NB, G, M), 1, [1, 2]), 9, [3, 4])
    path = tmp_path / "pool.npz"
    save_pool(path, pool)
    back = load_pool(path, NB, G, M)
    for a, b in zip(jax.tree.leaves(pool), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(a, b)


def test_loading_a_pool_of_another_shape_or_a_foreign_file_is_one_line_error(tmp_path):
    path = tmp_path / "pool.npz"
    save_pool(path, empty_pool(NB, G, M))
    with pytest.raises(SpecjaxError, match="needs") as e:
        load_pool(path, NB, G, M + 1)
    assert "\n" not in str(e.value)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(SpecjaxError, match="not a specjax phrase pool"):
        load_pool(other, NB, G, M)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(SpecjaxError, match="cannot read"):
        load_pool(broken, NB, G, M)
    with pytest.raises(SpecjaxError, match="does not exist"):
        load_pool(tmp_path / "missing.npz", NB, G, M)
