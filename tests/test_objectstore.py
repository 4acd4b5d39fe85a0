"""The content-addressed model store."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from loupe.objectstore import ObjectNotFound, ObjectStore


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_put_then_get_round_trips(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    data = b"solid ring\nendsolid ring\n" + bytes(range(256))
    name = store.put(data)
    assert store.get(name) == data


def test_name_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    name = store.put(b"model")
    assert name == hashlib.sha256(b"model").hexdigest()
    assert _files(tmp_path) == [tmp_path / name[:2] / name]


def test_same_bytes_same_name_stored_once(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    first = store.put(b"the same ring")
    stored = _files(tmp_path)
    mtime = stored[0].stat().st_mtime_ns
    inode = stored[0].stat().st_ino
    os.utime(stored[0], ns=(mtime - 10**9, mtime - 10**9))
    second = store.put(b"the same ring")
    assert second == first
    assert _files(tmp_path) == stored
    # The second upload did not write the file again, only said it was stored now.
    assert stored[0].stat().st_ino == inode
    assert stored[0].stat().st_mtime_ns >= mtime


def test_different_bytes_different_names(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    names = {store.put(bytes([i])) for i in range(20)}
    assert len(names) == 20
    assert len(_files(tmp_path)) == 20
    for i in range(20):
        assert store.get(hashlib.sha256(bytes([i])).hexdigest()) == bytes([i])


def test_empty_object_round_trips(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    assert store.get(store.put(b"")) == b""


def test_missing_object_raises_object_not_found(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    store.put(b"something else")
    missing = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(ObjectNotFound, match=missing):
        store.get(missing)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "abc",
        "../../etc/passwd",
        "A" * 64,
        hashlib.sha256(b"x").hexdigest().upper(),
        hashlib.sha256(b"x").hexdigest()[:-1],
        hashlib.sha256(b"x").hexdigest() + "0",
        "g" * 64,
        hashlib.sha256(b"x").hexdigest() + "\n",
        "../" + hashlib.sha256(b"x").hexdigest()[3:],
    ],
)
def test_malformed_name_raises_object_not_found(tmp_path: Path, name: str) -> None:
    store = ObjectStore(tmp_path)
    store.put(b"x")
    with pytest.raises(ObjectNotFound):
        store.get(name)


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..", "ab/" + "c" * 61])
def test_path_like_names_are_refused_before_touching_the_disk(tmp_path: Path, name: str) -> None:
    with pytest.raises(ObjectNotFound, match="not a SHA-256"):
        ObjectStore(tmp_path / "objects").get(name)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_stale_objects_are_those_last_stored_before_the_cutoff(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    old, fresh = store.put(b"old ring"), store.put(b"fresh ring")
    _age(tmp_path / old[:2] / old, 3600)
    # A write a crash cut short: never an object, deleted once it is as old.
    partial = tmp_path / old[:2] / "tmpk2j3h4"
    partial.write_bytes(b"half a ri")
    _age(partial, 3600)
    assert store.stale(time.time() - 60) == [old]
    assert not partial.exists()
    assert fresh not in store.stale(time.time() - 60)


def test_a_stale_object_stored_again_is_no_longer_stale(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    name = store.put(b"ring")
    _age(tmp_path / name[:2] / name, 3600)
    cutoff = time.time() - 60
    store.put(b"ring")
    assert store.stale(cutoff) == []
    assert store.delete_if_stale(name, cutoff) is False
    assert store.get(name) == b"ring"


def test_delete_if_stale_deletes_only_an_old_object(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path)
    name = store.put(b"ring")
    _age(tmp_path / name[:2] / name, 3600)
    assert store.delete_if_stale(name, time.time() - 60) is True
    with pytest.raises(ObjectNotFound):
        store.get(name)
    assert store.delete_if_stale(name, time.time() - 60) is False
