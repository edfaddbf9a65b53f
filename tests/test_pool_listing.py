"""Pool listing as the label job sees it: link loops, non-UTF-8 names, bracketed folders, counted skips (no Ray)."""

from __future__ import annotations

import os

import pytest

from fairweather.stages.infra.pool import PoolError, list_pool


def uris(listing) -> list[str]:
    return [row["uri"] for row in listing.items]


def test_directory_links_back_up_list_each_file_once(tmp_path):
    pool = tmp_path / "pool"
    for weather in ("rain", "snow"):
        (pool / weather).mkdir(parents=True)
        for index in range(2):
            (pool / weather / f"{index}.png").write_bytes(b"x")
    (pool / "rain" / "up").symlink_to("..")
    (pool / "snow" / "up").symlink_to("..")  # two loops: the old lister never finished
    listing = list_pool(str(pool))
    assert len(listing.items) == 4 and listing.listed == 4
    assert len(listing.skipped["seen_twice"]) == 2
    assert listing.summary() == "4 listed, 2 not listed (2 seen_twice)"


def test_links_out_of_the_pool_need_the_config_key(tmp_path):
    pool, elsewhere = tmp_path / "pool", tmp_path / "elsewhere"
    pool.mkdir()
    elsewhere.mkdir()
    (pool / "a.png").write_bytes(b"x")
    (elsewhere / "b.png").write_bytes(b"x")
    (pool / "more").symlink_to(elsewhere)
    (pool / "dangling.png").symlink_to(tmp_path / "nothing.png")
    listing = list_pool(str(pool))
    assert uris(listing) == [str(pool / "a.png")]
    assert listing.skipped == {
        "dangling_link": [str(pool / "dangling.png")],
        "link_outside_root": [str(pool / "more")],
    }
    assert uris(list_pool(str(pool), follow_links_out=True)) == [
        str(pool / "a.png"),
        str(pool / "more" / "b.png"),
    ]


def test_a_non_utf8_file_name_is_kept_for_the_errors_table(tmp_path):
    (tmp_path / "good.png").write_bytes(b"x")
    with open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.png"), "wb") as sink:
        sink.write(b"x")
    listing = list_pool(str(tmp_path))
    assert uris(listing) == [str(tmp_path / "good.png")]
    assert listing.bad_names == [f"{tmp_path}/caf\\xe9.png"] and listing.listed == 2


def test_an_existing_folder_with_brackets_is_a_folder_not_a_glob(tmp_path):
    folder = tmp_path / "photos [2024]"
    (folder / "rain").mkdir(parents=True)
    (folder / "rain" / "a.jpg").write_bytes(b"x")
    listing = list_pool(str(folder))
    assert [(row["uri"], row["weather_hint"]) for row in listing.items] == [
        (str(folder / "rain" / "a.jpg"), "rain")
    ]
    with pytest.raises(PoolError, match="lists no image files"):
        list_pool(str(tmp_path / "no such [folder]"))  # missing: only then a glob (matching nothing here)


def test_skipped_files_and_dropped_manifest_rows_are_counted_and_named(tmp_path, caplog):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    with caplog.at_level("WARNING"):
        listing = list_pool(str(tmp_path))
    assert listing.summary() == "1 listed, 2 not listed (1 hidden, 1 suffix)"
    assert f"listing skipped 1 (suffix): {tmp_path}/notes.txt" in caplog.text
    manifest = tmp_path / "list.csv"
    manifest.write_text(f'uri\n{tmp_path}/a.png\n\n{tmp_path}/a.png\n""\n')
    listing = list_pool(str(manifest))
    assert uris(listing) == [str(tmp_path / "a.png")]
    assert listing.skipped["duplicate"] == [str(tmp_path / "a.png")]
    assert len(listing.skipped["manifest_empty_uri"]) == 1


def test_a_pool_folders_own_manifest_is_not_a_skipped_file(tmp_path, caplog):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "manifest.parquet").write_bytes(b"x")  # fairweather synth writes one beside the pool's images
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "manifest.parquet").write_bytes(b"x")  # only the folder's own, at its top
    with caplog.at_level("WARNING"):
        listing = list_pool(str(tmp_path))
    assert listing.summary() == "1 listed, 1 not listed (1 suffix)"
    assert f"listing skipped 1 (suffix): {tmp_path}/sub/manifest.parquet" in caplog.text
    assert f"{tmp_path}/manifest.parquet" not in caplog.text


def test_a_missing_test_set_is_called_a_test_set_not_a_pool(tmp_path):
    from fairweather.contracts.tables import TableStore
    from fairweather.stages.evaluate.io import list_test_set

    with pytest.raises(PoolError, match=r"^test set '/missing' does not exist$"):
        list_test_set("/missing", TableStore(str(tmp_path)))
    with pytest.raises(PoolError, match=r"^pool '/missing' does not exist$"):
        list_pool("/missing")
