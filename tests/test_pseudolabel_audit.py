"""The pseudo-label audit: the per-round grid (input | previous label | new candidate, most improved and most
contested images, captions with scores, guard values and the rule's decision) and `fairweather pseudolabel show`.

A fake ``pseudo_labels`` history of three images (tiny solid-colour PNGs, no Ray, no scorer) under one rule:
PIQE alone (lower is better, range 0-100), guards on texture (max 2.7) and structure (min 0.5).

* image A: init input 60, warm-up 40 (label), round 1 EMA 20: replaces it (gain +0.2);
* image B: init input 50 (kept), warm-up 30 with texture 3.5 (refused), round 1 EMA 30.5 with texture 4.0:
  refused although it scored higher than the label (margin -0.195);
* image C: init input 50, warm-up 45 (label), round 1 EMA 45.5: not selected (margin +0.005).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from fairweather.cli import build_parser, main
from fairweather.contracts.config.runtime import RuntimeConfig
from fairweather.contracts.io import relative_uri
from fairweather.contracts.metric_logger import DiskLogger
from fairweather.contracts.tables import TableStore
from fairweather.stages.pseudolabel.audit import (
    CAPTION_LINES,
    CELL_W,
    HEADER_H,
    PAD,
    SECTION_H,
    THUMB_H,
    TITLE_H,
    audit_entries,
    captions,
    grid_size,
    round_outcomes,
    row_height,
    write_audit,
)
from fairweather.stages.pseudolabel.tables import lineage_rows
from fairweather.stages.train.rounds_report import log_audit_grid

LINEAGE = "train-audit"
A, B, C = "a1" + "0" * 62, "b2" + "0" * 62, "c3" + "0" * 62
RULE = json.dumps(
    {
        "kind": "weighted_mean",
        "metrics": ["piqe"],
        "weights": {"piqe": 1.0},
        "ranges": {"piqe": [0.0, 100.0]},
        "higher_better": {"piqe": False},
        "margin": 0.0,
        "guards": {"guard_texture": 2.7, "guard_structure": 0.5},
    },
    sort_keys=True,
)
RED = (220, 0, 0)
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _png(path: Path, colour: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24), colour).save(path)
    return str(path)


def _row(
    root: Path, image_id, rnd, source, piqe, *, selected=False, replaced_by=None, colour=(90, 90, 90), **extra
):
    folder = "pool" if source == "input" else "tables/candidates"
    uri = _png(root / folder / f"{image_id[:2]}-{rnd}-{source.replace('@', '_')}.png", colour)
    guards = {"guard_texture": 0.5, "guard_structure": 0.9} if source != "input" else {}
    scores = {"piqe": piqe, **guards, **extra.pop("scores", {})}
    return {
        "lineage": extra.pop("lineage", LINEAGE),
        "image_id": image_id,
        "round": rnd,
        "source": source,
        "candidate_uri": relative_uri(str(root / "tables"), uri),
        "candidate_sha256": "0" * 64,
        "weather": "haze",
        "scores": scores,
        "normalised": {"piqe": 1 - piqe / 100},
        "combined_score": 1 - piqe / 100,
        "combination": RULE,
        "decided": True,
        "selected": selected,
        "replaced_by": replaced_by,
        "created_at": T0 + timedelta(hours=rnd),
        "decided_at": T0 + timedelta(hours=rnd, minutes=1),
        **extra,
    }


@pytest.fixture
def store(tmp_path: Path) -> TableStore:
    rows = [
        _row(tmp_path, A, 0, "input", 60.0),
        _row(tmp_path, A, 0, "warmup", 40.0, replaced_by="1:ema@round-1"),
        _row(tmp_path, A, 1, "ema@round-1", 20.0, selected=True, colour=RED),
        _row(tmp_path, B, 0, "input", 50.0, selected=True),
        _row(tmp_path, B, 0, "warmup", 30.0, scores={"guard_texture": 3.5}),
        _row(tmp_path, B, 1, "ema@round-1", 30.5, scores={"guard_texture": 4.0}),
        _row(tmp_path, C, 0, "input", 50.0),
        _row(tmp_path, C, 0, "warmup", 45.0, selected=True),
        _row(tmp_path, C, 1, "ema@round-1", 45.5),
        # an older lineage holding A: `show` picks the most recent one unless --lineage names it
        _row(
            tmp_path, A, 0, "input", 60.0, lineage="older", selected=True, created_at=T0 - timedelta(days=9)
        ),
    ]
    store = TableStore(str(tmp_path / "tables"))
    store.write("pseudo_labels", pa.Table.from_pylist(rows, schema=store.spec("pseudo_labels").schema))
    return store


def test_round_outcomes_gains_margins_and_the_captions_decisions(store):
    outcomes = {o.image_id: o for o in round_outcomes(lineage_rows(store, LINEAGE), 1)}
    assert outcomes[A].new_label and outcomes[A].gain == pytest.approx(0.2)
    assert not outcomes[B].new_label and outcomes[B].margin == pytest.approx(0.5 - 0.695)
    assert outcomes[B].refused == {"1:ema@round-1": ("guard_texture",)}  # the round's comparison only
    assert outcomes[C].margin == pytest.approx(0.005)

    entries = audit_entries(outcomes.values(), k=6)
    assert [(e.section, e.outcome.image_id) for e in entries] == [
        ("improved", A),
        ("contested", B),  # refused although it scored higher: the most contested
        ("contested", C),
        ("contested", A),
    ]
    cells = [captions(entry) for entry in entries]
    assert all(len(row) == 3 and all(len(cell) == CAPTION_LINES for cell in row) for row in cells)
    improved, refused, close = cells[0], cells[1], cells[2]
    assert improved[0][:2] == ["input (haze)", "piqe 60"]
    assert improved[1] == ["r0 warmup", "piqe 40", "str 0.9 tex 0.5", "comb 0.600", "replaced (gain +0.200)"]
    assert improved[2][0] == "r1 ema@round-1" and improved[2][-1] == "replaced: new label"
    assert refused[0][-1] == "kept: no candidate beat it" and refused[1][-1] == "kept"
    assert refused[2][2] == "str 0.9 tex 4" and refused[2][-1] == "refused by guard_texture"
    assert close[1][-1] == "kept" and close[2][-1] == "not selected (-0.005 vs label)"

    # Round 0: no previous label; a refused warm-up leaves the input as B's label.
    first = {o.image_id: o for o in round_outcomes(lineage_rows(store, LINEAGE), 0)}
    assert (
        first[A].new_label
        and first[A].gain == pytest.approx(0.2)
        and first[B].candidate["source"] == "warmup"
    )
    row_b = captions(next(e for e in audit_entries(first.values()) if e.outcome.image_id == B))
    assert row_b[1][0] == "no previous label" and row_b[2][-1] == "refused by guard_texture"


def test_the_grid_has_a_row_per_image_and_three_captioned_columns(store, tmp_path):
    rows = lineage_rows(store, LINEAGE)
    path = write_audit(store, rows, 1, tmp_path / "grid" / "round-1.png", lineage=LINEAGE)
    entries = audit_entries(round_outcomes(rows, 1))
    with Image.open(path) as grid:
        grid = grid.convert("RGB")
    width = 2 * PAD + 3 * CELL_W
    assert grid.size == grid_size(entries) == (width, HEADER_H + 2 * SECTION_H + 4 * row_height() + PAD)
    # the first row (most improved: A) shows its new candidate, a red PNG scaled up to the row's height
    centre = (PAD + 2 * CELL_W + CELL_W // 2, HEADER_H + SECTION_H + TITLE_H + THUMB_H // 2)
    assert grid.getpixel(centre) == RED
    with Image.open(write_audit(store, rows, 1, tmp_path / "small.png", k=1)) as small:
        assert small.size == (width, HEADER_H + 2 * SECTION_H + 2 * row_height() + PAD)
    assert write_audit(store, rows, 5, tmp_path / "none.png") is None  # nothing decided in round 5


def test_the_rounds_log_the_grid_as_an_artifact_and_under_the_runs_folder(store, tmp_path):
    logger = DiskLogger(tmp_path / "logger")
    runtime = RuntimeConfig(runs_dir=str(tmp_path / "runs"))
    path = log_audit_grid(logger, runtime, store, lineage_rows(store, LINEAGE), 1, LINEAGE)
    assert path == tmp_path / "runs" / "pseudo-audit" / LINEAGE / "round-1.png"
    assert (tmp_path / "logger" / "artifacts" / "pseudo-audit" / "round-1.png").stat().st_size > 0


def _show(tmp_path: Path, ref: str, *options: str) -> int:
    tables, runs = f"data.tables={tmp_path / 'tables'}", f"runtime.runs_dir={tmp_path / 'runs'}"
    return main(["pseudolabel", "show", ref, tables, runs, *options])


def test_pseudolabel_show_prints_one_images_history(store, tmp_path, capsys):
    assert _show(tmp_path, A[:6]) == 0
    out = capsys.readouterr().out
    assert f"image {A} (haze), lineage {LINEAGE}: 3 candidates" in out and "also in lineage(s): older" in out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("round"))
    assert header.split() == [
        "round", "source", "candidate", "piqe", "str", "tex", "combined", "decision", "scored", "decided"
    ]  # fmt: skip
    warmup = next(line for line in lines if line.startswith("0      warmup"))
    assert "40" in warmup and "0.600" in warmup and "label, replaced in round 1 by ema@round-1" in warmup
    assert "2025-01-02 03:04:05" in warmup
    ema = next(line for line in lines if line.startswith("1      ema@round-1"))
    assert "selected: current label" in ema and "pool:" in out
    current = tmp_path / "tables" / "candidates" / "a1-1-ema_round-1.png"
    assert f"current pseudo-label: round 1 ema@round-1 -> {current}" in out

    assert _show(tmp_path, B) == 0
    assert "refused by guard_texture" in capsys.readouterr().out
    assert _show(tmp_path, A, "--lineage", "older") == 0
    assert "lineage older: 1 candidates" in capsys.readouterr().out


def test_pseudolabel_show_finds_an_image_by_its_pool_file_and_names_the_candidates_folder(
    store, tmp_path, capsys, monkeypatch
):
    # As the label stage stores them: relative to the tables' folder.
    pool = [
        {"image_id": A, "uri": "../pool/rain/street.jpg", "weather_hint": "rain"},
        {"image_id": B, "uri": "../pool/haze/street.jpg", "weather_hint": "haze"},
    ]
    pool = [{**row, "width": 32, "height": 24, "bytes": 1} for row in pool]
    store.write("pool", pa.Table.from_pylist(pool, schema=store.spec("pool").schema))
    monkeypatch.chdir(tmp_path)
    for ref in (
        f"{tmp_path}/pool/rain/street.jpg",
        "pool/rain/street.jpg",
        "./pool/rain/street.jpg",
        "rain/street.jpg",
    ):
        assert _show(tmp_path, ref) == 0
        out = capsys.readouterr().out
        assert f"\nimage {A} (haze), lineage {LINEAGE}" in out
        assert f"candidate files in: {tmp_path / 'tables' / 'candidates'}" in out
    assert _show(tmp_path, "street.jpg") == 2  # two pool files of that name
    assert "ambiguous: 2 images" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("ref", "extra", "message"),
    [
        ("ffff", (), "no image id 'ffff'"),
        ("", (), "no image id ''"),
        ("a1", ("--lineage", "nope"), "no pseudo-labels in lineage 'nope'"),
        ("a1", ("--round", "1"), "--checkpoint/--round do not apply"),
    ],
)
def test_pseudolabel_show_of_an_unknown_image_is_one_line_with_exit_code_2(
    store, tmp_path, capsys, ref, extra, message
):
    assert _show(tmp_path, ref, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_an_ambiguous_prefix_is_refused(store, tmp_path, capsys):
    twin = {**lineage_rows(store, LINEAGE)[0], "image_id": A[:10] + "f" * 54}
    store.write("pseudo_labels", pa.Table.from_pylist([twin], schema=store.spec("pseudo_labels").schema))
    assert _show(tmp_path, A[:4]) == 2
    assert "ambiguous: 2 images" in capsys.readouterr().err
    assert _show(tmp_path, A) == 0  # the full id is never ambiguous


def test_pseudolabel_without_show_parses_as_before():
    args = build_parser().parse_args(["pseudolabel", "pseudo.margin=0.1", "--round", "2", "--lineage", "x"])
    assert (args.action, args.overrides, args.round, args.lineage) == (None, ["pseudo.margin=0.1"], 2, "x")
    args = build_parser().parse_args(["pseudolabel", "show", "ab12", "pseudo.margin=0.1"])
    assert (args.action, args.image_id, args.overrides) == ("show", "ab12", ["pseudo.margin=0.1"])


def test_a_round_that_deselects_a_label_shows_the_input_as_the_label_again(tmp_path):
    """Image D chose its warm-up output at round 0 (texture 2.0 under a limit of 2.7); before round 1 the limit is
    tightened to 1.0 and the EMA candidate does not beat the input: the decision (``decide``) deselects the label
    and the audit of round 1 shows the input as the label again, naming the guard; round 0's audit is unchanged."""
    from fairweather.pseudo import Rule
    from fairweather.stages.pseudolabel.tables import decide

    tight = json.loads(RULE)
    tight["guards"]["guard_texture"] = 1.0
    tight = Rule(**{**tight, "metrics": ("piqe",), "ranges": {"piqe": (0.0, 100.0)}})
    d = "d4" + "0" * 62
    rows = [
        _row(tmp_path, d, 0, "input", 50.0),
        _row(tmp_path, d, 0, "warmup", 40.0, selected=True, scores={"guard_texture": 2.0}),
        # scored in round 1 under the tightened rule, as the job records it with every candidate
        _row(
            tmp_path, d, 1, "ema@round-1", 55.0, decided=False, decided_at=None, combination=tight.to_json()
        ),
    ]
    store = TableStore(str(tmp_path / "tables"))
    store.write("pseudo_labels", pa.Table.from_pylist(rows, schema=store.spec("pseudo_labels").schema))
    assert decide(store, LINEAGE, tight, T0 + timedelta(hours=2)) == (1, 0)

    (after,) = round_outcomes(lineage_rows(store, LINEAGE), 1)
    assert after.deselected and after.winner is after.input and after.input["round"] == 1
    assert after.previous["source"] == "warmup" and not after.new_label
    (entry,) = audit_entries([after], k=1)
    cells = captions(entry)
    assert cells[0][-1] == "label again" and cells[1][-1] == "deselected: guard_texture"
    assert cells[2][0] == "r1 ema@round-1" and cells[2][-1].startswith("not selected")

    (before,) = round_outcomes(lineage_rows(store, LINEAGE), 0)
    assert not before.deselected and before.winner["source"] == "warmup" and before.input["round"] == 0
