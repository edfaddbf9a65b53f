"""``fairweather pseudolabel`` on a private local Ray: init and round candidates, replace-if-better with a scorer stub
that prefers bright images, full history, idempotent reruns, crash recovery, and failures as ``errors`` rows.

The pool (4 scenes of 64 px + one 40x48 image the stub refuses) and its ``pool``/``labels`` rows are written
directly; the round-1 checkpoint is a NAFNet whose last convolution outputs a constant +0.1, so its EMA teacher
brightens every image by ~25 levels: more than the input, less than the "bright" method's +40; the init checkpoint
"dark" (-0.1) never wins.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from ray import cloudpickle

from fairweather.cli import main
from fairweather.contracts.config import load_config
from fairweather.contracts.io import resolve_uri
from fairweather.contracts.metric_logger import DiskLogger
from fairweather.contracts.tables import TableStore
from fairweather.data.views import real_view
from fairweather.metrics import METRICS
from fairweather.stages.pseudolabel.io import encode_png
from fairweather.training.state import save_state

from .test_restore import checkpoint_state

cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: Width of the pool image the stub scorer refuses.
REFUSED_WIDTH = 40
LINEAGE = "train-test"


class BrightnessScorer:
    """A PIQE-shaped stub (lower is better, 0-100) that prefers bright images: 100 x (1 - mean brightness)."""

    spec = METRICS["piqe"]

    def __call__(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        if images.shape[-1] == REFUSED_WIDTH:
            raise ValueError("stub scorer: refuses this image")
        return 100.0 * (1.0 - images.mean(dim=(1, 2, 3)))


class StubFactory:
    def __call__(self, name: str) -> BrightnessScorer:
        return BrightnessScorer()


def png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    return buffer.getvalue()


def scene(seed: int, height: int = 64, width: int = 64) -> np.ndarray:
    """A smooth mid-grey scene with noise (room to brighten and darken by 40 levels)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / 64
    rgb = 70 + np.stack([x, y, (x + y) / 2], -1) * 80 + rng.normal(0, 8, (height, width, 3))
    return rgb.clip(0, 255).astype(np.uint8)


def write_tables(root: Path, files: dict[str, Path]) -> None:
    """``pool`` and ``labels`` rows of the pool files (name -> path), weather from the folder."""
    now = datetime.now(timezone.utc)
    pool, labels = [], []
    for path in files.values():
        data = path.read_bytes()
        image_id = hashlib.sha256(data).hexdigest()
        width, height = Image.open(path).size
        weather = path.parent.name
        pool.append({"image_id": image_id, "uri": str(path), "weather_hint": weather, "width": width,
                     "height": height, "bytes": len(data)})  # fmt: skip
        labels.append({"image_id": image_id, "labeler_fingerprint": "f", "labeler_settings": "{}", "uri": str(path),
                       "model_id": "tiny:llava", "rating_prompt": "visibility", "rating_prompt_version": "1",
                       "description_prompt_version": "1", "probs": [0.2] * 5, "rating_complete": True,
                       "r_vlm": 3.0, "vlm_vis": 0.5, "description": f"a {weather} scene", "d_pos": "a clear scene",
                       "weather": weather, "weather_hint": weather, "labeled_at": now})  # fmt: skip
    store = TableStore(str(root / "tables"))
    store.write("pool", pa.Table.from_pylist(pool))
    store.write("labels", pa.Table.from_pylist(labels))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, model_cache):
    root = tmp_path_factory.mktemp("pseudolabel")
    files, pixels = {}, {}
    for i, weather in enumerate(("rain", "rain", "snow", "snow")):
        pixels[str(i)] = scene(i)
        files[str(i)] = root / "pool" / weather / f"{i}.png"
    pixels["4"] = scene(4, 48, REFUSED_WIDTH)
    files["4"] = root / "pool" / "haze" / "4.png"
    for name, path in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(pixels[name]))
    write_tables(root, files)
    # Another method's outputs, matched by file name: brighter for 0 and 1, darker for 2 and 3, none for 4.
    (root / "bright").mkdir()
    outputs = {}
    for i, shift in ((0, 40), (1, 40), (2, -40), (3, -40)):
        outputs[str(i)] = (pixels[str(i)].astype(int) + shift).clip(0, 255).astype(np.uint8)
        (root / "bright" / f"{i}.png").write_bytes(png(outputs[str(i)]))
    # The candidate file of image 3's output cannot be written: a folder is in the way.
    blocked = hashlib.sha256(encode_png(outputs["3"])).hexdigest()
    (root / "tables" / "candidates" / f"{blocked}.png").mkdir(parents=True)
    for bias, folder in ((0.1, root / "train" / LINEAGE / "checkpoint_000001"), (-0.1, root / "dark")):
        state = checkpoint_state(identity=True)
        state["teacher"] = {k: v.clone() for k, v in state["teacher"].items()}
        state["teacher"]["ending.bias"].fill_(bias)  # the teacher adds a constant: brighter or darker
        save_state(state, folder)
    cfg = load_config(
        "smoke",
        [f"runtime.runs_dir={root}/runs", f"runtime.model_cache_dir={model_cache}", f"data.tables={root}/tables",
         f"data.pool={root}/pool", "runtime.num_cpus=2", "pseudo.metrics=[piqe]", "pseudo.use_vlm=false", "pseudo.init=true",
         f"pseudo.init_folders=[bright={root}/bright]", f"pseudo.init_checkpoints=[dark={root}/dark]",
         "pseudo.flush_rows=2", "pseudo.batch_size=2"],
    )  # fmt: skip
    ids = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}
    return root, cfg, ids


def crash_before_deciding(*args: object, **kwargs: object) -> None:
    raise RuntimeError("driver died before deciding")


def history(cfg) -> dict[tuple[str, int, str], dict]:
    table = TableStore(cfg.data.tables).read("pseudo_labels").to_pylist()
    for row in table:  # map columns come back as (key, value) pairs
        row["scores"], row["normalised"] = dict(row["scores"]), dict(row["normalised"])
    return {(row["image_id"], row["round"], row["source"]): row for row in table}


def selected(cfg, ids: dict[str, str]) -> dict[str, str]:
    by_id = {v: k for k, v in ids.items()}
    return {by_id[k[0]]: k[2] for k, row in history(cfg).items() if row["selected"]}


@pytest.mark.usefixtures("local_ray")
def test_init_then_round_replaces_only_improvements_keeps_history_and_reruns_change_nothing(
    setup, monkeypatch
):
    from fairweather.stages.pseudolabel import driver as stage

    root, cfg, ids = setup
    logger = DiskLogger(root / "logger")
    init = stage.run_pseudolabel(cfg, logger, lineage=LINEAGE, scorer_factory=StubFactory())
    # 4 inputs + 4 "dark" restorations + 3 outputs of "bright"; image 4 fails scoring (twice: input, dark; it has no
    # bright output), image 3's bright output cannot be written.
    assert (init.candidates, init.replaced, init.unchanged, init.errors) == (11, 4, 0, 3)
    assert selected(cfg, ids) == {"0": "bright", "1": "bright", "2": "input", "3": "input"}
    assert init.unmatched == {"bright": 1} and init.per_weather["overall"]["count"] == 4
    assert init.label_sources == {"bright": 2, "input": 2}
    errors = TableStore(cfg.data.tables).read("errors").to_pylist()
    kinds = sorted((Path(e["uri"]).name, e["stage"], e["error_type"].split(":")[0]) for e in errors)
    assert kinds == [("3.png", f"pseudolabel:{LINEAGE}:bright", "write"),
                     ("4.png", f"pseudolabel:{LINEAGE}:dark", "score"),
                     ("4.png", f"pseudolabel:{LINEAGE}:input", "score")]  # fmt: skip
    assert init.seconds_by_part["restore"] > 0 and "score/piqe" in init.seconds_by_part

    # Round 1: the teacher brightens by ~25 levels: it beats the inputs (2, 3), not the bright outputs (0, 1).
    ckpt = str(root / "train" / LINEAGE / "checkpoint_000001")
    with monkeypatch.context() as patch:
        patch.setattr(stage, "decide", crash_before_deciding)
        with pytest.raises(RuntimeError, match="before deciding"):
            stage.run_pseudolabel(cfg, logger, lineage=LINEAGE, checkpoint=ckpt, round_index=1,
                                  scorer_factory=StubFactory())  # fmt: skip
    pending = [row for row in history(cfg).values() if not row["decided"]]
    assert len(pending) == 4  # every finished candidate survived the crash, undecided
    # This round restores, stores and scores in one actor (pseudo.one_actor): the same outcome as two pools.
    one_actor = dataclasses.replace(cfg, pseudo=dataclasses.replace(cfg.pseudo, one_actor=True))
    one = stage.run_pseudolabel(
        one_actor, logger, lineage=LINEAGE, checkpoint=ckpt, round_index=1, scorer_factory=StubFactory()
    )
    # No duplicate, decided; image 4 fails twice again: its EMA candidate and its input, which has no row yet (every
    # input is scored once per lineage, in the first round that can)
    assert (one.candidates, one.replaced, one.unchanged, one.errors) == (0, 2, 2, 2)
    assert selected(cfg, ids) == {"0": "bright", "1": "bright", "2": "ema@round-1", "3": "ema@round-1"}
    assert one.label_sources == {"bright": 2, "ema@round-1": 2}
    rows = history(cfg)
    assert len(rows) == 15 and all(row["decided"] for row in rows.values())
    old = rows[(ids["2"], 0, "input")]
    assert not old["selected"] and old["replaced_by"] == "1:ema@round-1"
    new = rows[(ids["2"], 1, "ema@round-1")]
    assert new["combined_score"] > old["combined_score"] and new["scores"]["piqe"] < old["scores"]["piqe"]
    assert '"kind": "weighted_mean"' in new["combination"] and new["normalised"]["piqe"] == pytest.approx(
        1 - new["scores"]["piqe"] / 100
    )
    store = TableStore(cfg.data.tables)
    path = Path(resolve_uri(store.root, new["candidate_uri"]))
    assert new["candidate_uri"].startswith("candidates/") and path.name == f"{new['candidate_sha256']}.png"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == new["candidate_sha256"]
    assert rows[(ids["0"], 0, "input")]["candidate_sha256"] == ids["0"]  # the input is the pool file itself

    # The same inputs again: nothing changes (image 4's input and EMA candidate are retried and fail again).
    before = store.read("pseudo_labels")
    again = stage.run_pseudolabel(
        cfg, logger, lineage=LINEAGE, checkpoint=ckpt, round_index=1, scorer_factory=StubFactory()
    )
    assert (again.candidates, again.replaced, again.unchanged, again.errors) == (0, 0, 0, 2)
    assert store.read("pseudo_labels").equals(before)

    # Training sees exactly this lineage's pseudo-labels.
    view = {row["image_id"]: row["pseudo_uri"] for row in real_view(store, LINEAGE).to_pylist()}
    assert view[ids["2"]] == str(path) and view[ids["4"]] is None
    assert all(uri is None for uri in (r["pseudo_uri"] for r in real_view(store, "other-run").to_pylist()))
    assert any(
        "pseudo/replaced" in line for line in (root / "logger" / "metrics.jsonl").read_text().splitlines()
    )


def test_init_off_and_start_up_errors_are_one_line(tmp_path: Path, capsys):
    from fairweather.stages.pseudolabel.driver import run_pseudolabel

    cfg = load_config("smoke", [f"data.tables={tmp_path}/tables", f"runtime.runs_dir={tmp_path}/runs"])
    off = run_pseudolabel(load_config("smoke", ["pseudo.init=false"]), lineage="x")
    assert off.candidates == 0 and "init is off" in off.note
    base = [
        "pseudolabel",
        "--config",
        "smoke",
        f"data.tables={tmp_path}/tables",
        f"runtime.runs_dir={tmp_path}/runs",
        "pseudo.init=true",
        "pseudo.metrics=[piqe]",  # NIQE's parameters come through `fairweather prefetch` (network): not in tests
    ]
    assert main(base) == 2
    assert "fairweather label" in capsys.readouterr().err
    assert main([*base, "--checkpoint", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main([*base, "pseudo.init_checkpoints=[a=/x, a=/y]"]) == 2
    assert "repeat" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "mlflow.db").exists() and cfg.pseudo.metrics == ("piqe", "niqe")


def test_a_label_failing_guards_tightened_since_it_was_chosen_gives_way_to_the_input(tmp_path: Path):
    """The decision part without Ray: round 0 chose the warm-up's output over the input; a user tightens
    ``pseudo.guards.max_colour`` below its colour shift; round 1's EMA candidate does not beat the input. The
    warm-up's label is deselected and the input selected again (before: the label that now fails the guards
    stayed, unchecked). With the limits as they were, nothing changes."""
    from fairweather.pseudo import Rule
    from fairweather.stages.pseudolabel.tables import TABLE, decide, history_key, lineage_rows

    ok = {"guard_colour": 5.0, "guard_texture": 0.2, "guard_grid": 0.1, "guard_structure": 0.99}
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def row(lineage: str, round_index: int, source: str, scores: dict, **state: object) -> dict:
        return {"lineage": lineage, "image_id": "a", "round": round_index, "source": source,
                "candidate_uri": f"{source}.png", "candidate_sha256": source, "weather": "haze", "scores": scores,
                "normalised": {}, "combined_score": 0.5, "combination": "{}", "decided": True, "selected": False,
                "replaced_by": None, "created_at": start, "decided_at": start, **state}  # fmt: skip

    store = TableStore(str(tmp_path / "tables"))
    rows = []
    for lineage in ("as-before", "tightened"):
        rows += [
            row(lineage, 0, "input", {"piqe": 40.0, "niqe": 6.0}),
            row(lineage, 0, "warmup", {"piqe": 20.0, "niqe": 4.0, **ok}, selected=True),
            row(lineage, 1, "ema@round-1", {"piqe": 50.0, "niqe": 7.0, **ok}, decided=False, decided_at=None),
        ]
    store.write(TABLE, pa.Table.from_pylist(rows, schema=TableStore.spec(TABLE).schema))
    base = ["pseudo.metrics=[piqe,niqe]", "pseudo.use_vlm=false"]
    now = datetime(2026, 1, 2, tzinfo=timezone.utc)

    assert decide(store, "as-before", Rule.of(load_config("smoke", base).pseudo), now) == (0, 1)
    tight = Rule.of(load_config("smoke", [*base, "pseudo.guards.max_colour=1.0"]).pseudo)
    assert decide(store, "tightened", tight, now) == (1, 0)
    for lineage, label in (("as-before", "0:warmup"), ("tightened", "1:input")):
        state = {history_key(r): r for r in lineage_rows(store, lineage)}
        assert [key for key, r in state.items() if r["selected"]] == [label], lineage
        assert all(r["decided"] for r in state.values())
    # The round that deselected the label says so in a row of its own; round 0's rows keep what happened then.
    state = {history_key(r): r for r in lineage_rows(store, "tightened")}
    assert state["0:warmup"]["replaced_by"] == "1:input" and not state["0:input"]["selected"]
    assert state["1:input"]["candidate_uri"] == "input.png" and state["1:input"]["decided_at"] == now
    # The next round compares with the input as the label: kept, not replaced by itself.
    worse = row("tightened", 2, "ema@round-2", {"piqe": 60.0, "niqe": 8.0, **ok, "guard_colour": 0.5})
    store.write(
        TABLE, pa.Table.from_pylist([{**worse, "decided": False}], schema=TableStore.spec(TABLE).schema)
    )
    assert decide(store, "tightened", tight, now) == (0, 1)
    assert [history_key(r) for r in lineage_rows(store, "tightened") if r["selected"]] == ["1:input"]
