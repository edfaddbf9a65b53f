"""contracts.io: atomic writes, relative/absolute URIs, writable-location checks, safe listing, globbing."""

from __future__ import annotations

import os

import pytest

from fairweather.contracts.io import (
    LocationError,
    atomic_write_bytes,
    check_writable,
    is_glob,
    list_files,
    list_glob,
    read_bytes,
    relative_uri,
    resolve_uri,
    write_if_changed,
)
from fairweather.contracts.vocab import IMAGE_SUFFIXES


def test_atomic_write_leaves_no_staging_file_and_write_if_changed_skips_equal_bytes(tmp_path):
    target = tmp_path / "deep" / "file.bin"
    atomic_write_bytes(target, b"one")
    assert read_bytes(str(target)) == b"one" and os.listdir(target.parent) == ["file.bin"]
    before = target.stat().st_mtime_ns
    assert write_if_changed(target, b"one") is False and target.stat().st_mtime_ns == before
    assert write_if_changed(target, b"two") is True and target.read_bytes() == b"two"
    atomic_write_bytes(f"file://{tmp_path}/uri.bin", b"x")  # scheme URIs take the same path
    assert (tmp_path / "uri.bin").read_bytes() == b"x"


def test_resolve_and_relative_uri_round_trip(tmp_path):
    root = str(tmp_path / "tables")
    for target in (str(tmp_path / "data" / "a.png"), str(tmp_path / "tables" / "x" / "b.png")):
        stored = relative_uri(root, target)
        assert not stored.startswith("/") and resolve_uri(root, stored) == target
    assert relative_uri(root, str(tmp_path / "data" / "a.png")) == "../data/a.png"
    assert resolve_uri(root, "s3://bucket/a.png") == "s3://bucket/a.png"  # absolute URIs pass through
    assert resolve_uri("s3://bucket/tables", "../pool/a.png") == "s3://bucket/pool/a.png"
    assert relative_uri("s3://bucket/tables", "s3://bucket/tables/p/a.png") == "p/a.png"
    assert relative_uri("s3://bucket/tables", "s3://bucket/pool/a.png") == "s3://bucket/pool/a.png"
    assert relative_uri("s3://bucket/tables", str(tmp_path / "a.png")) == str(tmp_path / "a.png")


def test_check_writable_names_the_key(tmp_path):
    check_writable(str(tmp_path / "new" / "folder"), "data.tables")  # created
    assert (tmp_path / "new" / "folder").is_dir() and not os.listdir(tmp_path / "new" / "folder")
    (tmp_path / "file").write_text("x")
    with pytest.raises(LocationError, match=r"data\.tables=.*is not a writable folder"):
        check_writable(str(tmp_path / "file"), "data.tables")


def test_listing_skips_hidden_entries_but_not_a_hidden_root(tmp_path):
    root = tmp_path / ".cache" / "pool"
    (root / "rain").mkdir(parents=True)
    for name in ("rain/a.png", ".hidden.png", "notes.txt"):
        (root / name).write_bytes(b"x")
    listing = list_files(str(root), suffixes=IMAGE_SUFFIXES)
    assert listing.files == [str(root / "rain" / "a.png")]
    assert listing.skipped == {"hidden": [str(root / ".hidden.png")], "suffix": [str(root / "notes.txt")]}


def test_listing_never_enters_a_folder_twice_nor_leaves_the_root(tmp_path):
    root, outside = tmp_path / "pool", tmp_path / "outside"
    (root / "rain").mkdir(parents=True)
    outside.mkdir()
    for path in (root / "a.png", root / "rain" / "b.png", outside / "c.png"):
        path.write_bytes(b"x")
    (root / "rain" / "up").symlink_to("..")  # a loop
    (root / "again").symlink_to(root / "rain")  # the same folder under a second name
    (root / "same.png").symlink_to(root / "a.png")  # the same file under a second name
    (root / "out").symlink_to(outside)
    (root / "gone.png").symlink_to(tmp_path / "missing.png")
    listing = list_files(str(root))
    assert listing.files == [str(root / "a.png"), str(root / "rain" / "b.png")]  # real paths win over links
    seen_twice = [str(root / "again"), str(root / "same.png"), str(root / "rain" / "up")]
    assert sorted(listing.skipped["seen_twice"]) == sorted(seen_twice)
    assert listing.skipped["link_outside_root"] == [str(root / "out")]
    assert listing.skipped["dangling_link"] == [str(root / "gone.png")]
    followed = list_files(str(root), follow_links_out=True)
    assert str(root / "out" / "c.png") in followed.files and len(followed.files) == 3


def test_non_utf8_names_are_reported_not_fatal(tmp_path):
    (tmp_path / "ok.png").write_bytes(b"x")
    with open(os.path.join(os.fsencode(tmp_path), b"bad\xff.png"), "wb") as sink:
        sink.write(b"x")
    listing = list_files(str(tmp_path))
    assert listing.files == [str(tmp_path / "ok.png")]
    assert listing.bad_names == [f"{tmp_path}/bad\\xff.png"]
    assert listing.bad_names[0].encode("utf-8")  # printable and storable


def test_an_existing_path_with_glob_characters_is_a_path(tmp_path):
    folder = tmp_path / "photos [2024]"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x")
    assert not is_glob(str(folder)) and list_files(str(folder)).files == [str(folder / "a.png")]
    assert is_glob(f"{tmp_path}/photos*/*.png")
    assert list_glob(f"{tmp_path}/photos*/*.png").files == [str(folder / "a.png")]
    assert list_glob(f"{tmp_path}/**/*.png").files == [str(folder / "a.png")]
    assert list_glob(f"{tmp_path}/*.png").files == []


def test_read_bytes_returns_the_stored_bytes_of_a_compressed_suffix(tmp_path):
    """pyarrow would gunzip a '.gz' file on the fly: a file's bytes must be the bytes on disk."""
    import gzip

    from fairweather.contracts.io import read_bytes

    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"payload"))
    assert read_bytes(str(path)) == path.read_bytes()
