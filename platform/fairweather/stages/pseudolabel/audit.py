"""The pseudo-label audit: what the rule decided, as a picture per round and as one image's history.

* :func:`round_outcomes`: one round's decision per image, read back from a lineage's ``pseudo_labels`` history:
  the label before the round, the round's candidates, the label after it, the gain and the margin of the win.
* :func:`audit_entries`: the K most improved images (largest combined-score gain among replacements) and the K
  most contested (smallest margin between the winner and the runner-up; negative when a candidate that scored
  higher was refused by a guard).
* :func:`captions` / :func:`draw_grid`: the grid (PIL): one row per image, columns input | previous label | new
  candidate, each cell captioned with its scores, guard values, combined score and the rule's decision.
  :func:`write_audit` writes it as a PNG (the rounds driver logs it per round, ``stages.train.rounds_report``).
* :func:`history_text`: one image's rows across rounds and sources as a table (``fairweather pseudolabel show``).

The table stores no decision reason, so it is derived: a row that is ``selected`` or names the candidate that
replaced it (``replaced_by``) was a pseudo-label; a decided row that never was one lost, *refused by a guard* when
its guard values (``guard_*`` among its scores) break a limit of the rule recorded with it (``combination``'s
``guards``). Combined scores of one round are recomputed from the raw scores over that round's comparison (the
previous label, the round's candidates and the input) with the recorded rule: equal to the stored ones for
``weighted_mean``, and comparable within the round for ``rank_vote``; a row whose rule cannot be read keeps its
stored score.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image, ImageDraw, ImageFont, ImageOps

from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.io import read_bytes, resolve_uri
from fairweather.contracts.tables import TableStore
from fairweather.pseudo import Rule, combine
from fairweather.stages.engine.rows import INPUT_SOURCE
from fairweather.stages.pseudolabel.tables import history_key, image_rows, resolve_image_id

log = logging.getLogger(__name__)

#: Images per section of the grid (most improved, most contested).
DEFAULT_K = 6
#: Guards whose limit is a minimum (``fairweather.pseudo.guards.GUARD_NAMES``); every other guard's is a maximum.
_MINIMUM_GUARDS = frozenset({"guard_structure"})
_SHORT = {"vlm_vis": "r_vlm", "guard_colour": "col", "guard_texture": "tex", "guard_grid": "grid"}
_SHORT["guard_structure"] = "str"
#: What each guard's column holds (``fairweather.pseudo.guards``).
_GUARD_MEANINGS = {
    "guard_colour": "colour cast against the input (%)",
    "guard_texture": "texture added",
    "guard_grid": "tile-grid steps",
    "guard_structure": "structure kept (a minimum)",
}
#: The guards' columns by their short names, under the show table and the grid's title.
GUARD_LEGEND = "guards: " + ", ".join(
    f"{_SHORT[name]} = {meaning}" for name, meaning in _GUARD_MEANINGS.items()
)


# --- reading decisions back -----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _rule(combination: str) -> Rule | None:
    """The rule recorded in a row's ``combination``; None when it cannot be read (an old or foreign row)."""
    try:
        data = json.loads(combination)
        known = {f.name for f in dataclasses.fields(Rule)}
        data = {key: value for key, value in data.items() if key in known}
        data["metrics"] = tuple(data["metrics"])
        data["ranges"] = {name: tuple(bounds) for name, bounds in data["ranges"].items()}
        return Rule(**data)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


@functools.lru_cache(maxsize=64)
def _guard_limits(combination: str) -> dict[str, float]:
    try:
        guards = json.loads(combination).get("guards") or {}
        return {str(name): float(limit) for name, limit in guards.items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def refused_by(row: Mapping, combination: str | None = None) -> tuple[str, ...]:
    """The guards of the row's recorded rule (or of ``combination``, the rule a later round compared it by) that its
    candidate fails (``"<guard>:unchecked"``: no value); the input is never guarded."""
    if row["source"] == INPUT_SOURCE:
        return ()
    failed = []
    for name, limit in _guard_limits(combination or row["combination"]).items():
        value = row["scores"].get(name, math.nan)
        if not math.isfinite(value):
            failed.append(f"{name}:unchecked")
        elif (value < limit) if name in _MINIMUM_GUARDS else (value > limit):
            failed.append(name)
    return tuple(failed)


def _was_label(row: Mapping) -> bool:
    return bool(row["decided"] and (row["selected"] or row["replaced_by"]))


def row_decision(row: Mapping) -> str:
    """What became of a candidate over the whole history (``pseudolabel show``)."""
    if not row["decided"]:
        return "pending (not compared yet)"
    if row["selected"]:
        return "selected: current label"
    if row["replaced_by"]:
        round_, _, source = row["replaced_by"].partition(":")
        return f"label, replaced in round {round_} by {source}"
    failed = refused_by(row)
    return f"refused by {', '.join(failed)}" if failed else "not selected"


@dataclass(frozen=True)
class Outcome:
    """One image's decision in one round."""

    image_id: str
    weather: str
    round: int
    #: The input's own row (source ``input``, the newest up to this round: a round that deselected a label has
    #: one), when it was scored; and the pool file (resolved or stored URI).
    input: dict | None
    input_uri: str | None
    #: The pseudo-label before this round (None: the image had none).
    previous: dict | None
    #: The candidate shown: the round's new label, else the round's best other candidate (refused ones included).
    candidate: dict | None
    #: ``candidate`` became the image's pseudo-label in this round.
    new_label: bool
    #: history key (``"<round>:<source>"``) -> combined score in this round's comparison.
    combined: dict[str, float]
    #: history key -> the guards it failed, for every compared row that failed one.
    refused: dict[str, tuple[str, ...]]
    #: Combined-score gain of the new label over what it replaced (the previous label, else the input); NaN when
    #: nothing was replaced.
    gain: float
    #: The label after the round minus the best other compared row (negative: a refused candidate scored higher;
    #: -inf: no row could win and one was refused); NaN when there was nothing to compare.
    margin: float
    #: The label after this round.
    winner: dict | None

    @property
    def deselected(self) -> bool:
        """This round gave the previous label up for the input (it fails guards tightened since it won)."""
        return (
            self.winner is not None and self.winner is self.input and self.previous not in (None, self.input)
        )

    def score(self, row: Mapping | None) -> float:
        return math.nan if row is None else self.combined.get(history_key(row), math.nan)


def _combined(members: list[dict], combination: str) -> dict[str, float]:
    """Combined scores of one comparison by the rule ``combination`` (stored scores as fallback)."""
    rule = _rule(combination)
    stored = {history_key(row): float(row["combined_score"]) for row in members}
    if rule is None:
        return stored
    try:
        values = combine([row["scores"] for row in members], rule)
    except (KeyError, ValueError, ZeroDivisionError):
        return stored
    return {history_key(row): value for row, value in zip(members, values, strict=True)}


def _best(rows: Sequence[dict], combined: Mapping[str, float]) -> dict | None:
    def key(row: dict) -> float:
        value = combined.get(history_key(row), math.nan)
        return value if math.isfinite(value) else -math.inf

    return max(rows, key=key, default=None)


def round_outcomes(
    rows: Sequence[dict], round_index: int, inputs: Mapping[str, str] | None = None
) -> list[Outcome]:
    """Every image's decision in ``round_index`` of a lineage (``rows``: its ``pseudo_labels`` history, score maps
    as dicts); images without a decided candidate of that round are left out.

    inputs: ``image_id`` -> its pool file, for images whose input was not scored as a candidate.
    """
    by_image: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_image[row["image_id"]].append(row)
    outcomes = []
    for image_id in sorted(by_image):
        history = sorted(by_image[image_id], key=lambda r: (r["round"], r["source"]))
        candidates = [row for row in history if row["round"] == round_index and row["decided"]]
        if not candidates:
            continue
        labels = [row for row in history if _was_label(row)]
        previous = next((row for row in reversed(labels) if row["round"] < round_index), None)
        new = next((row for row in labels if row["round"] == round_index), None)
        inputs = [row for row in history if row["source"] == INPUT_SOURCE and row["round"] <= round_index]
        input_row = inputs[-1] if inputs else None
        members = ([previous] if previous is not None else []) + candidates
        if input_row is not None and history_key(input_row) not in {history_key(r) for r in members}:
            members.append(input_row)
        # The round compared by the rule recorded with its newest row: scores and guards alike (a label chosen
        # under older limits is judged by this round's).
        combination = max(members, key=lambda r: r["round"])["combination"]
        combined = _combined(members, combination)
        refused = {history_key(row): failed for row in members if (failed := refused_by(row, combination))}
        new_label = new is not None and new["source"] != INPUT_SOURCE
        others = [row for row in candidates if row["source"] != INPUT_SOURCE]
        shown = new if new_label else _best(others, combined)
        winner = new if new is not None else previous
        gain = math.nan
        baseline = previous if previous is not None else input_row
        if new_label and baseline is not None:
            gain = combined[history_key(new)] - combined[history_key(baseline)]
        margin = math.nan
        if winner is not None:
            rest = [combined[history_key(r)] for r in members if r is not winner]
            rest = [value for value in rest if math.isfinite(value)]
            if rest and math.isfinite(combined[history_key(winner)]):
                margin = combined[history_key(winner)] - max(rest)
        elif refused:
            margin = -math.inf
        uri = input_row["candidate_uri"] if input_row is not None else (inputs or {}).get(image_id)
        outcomes.append(
            Outcome(
                image_id=image_id,
                weather=candidates[0]["weather"],
                round=round_index,
                input=input_row,
                input_uri=uri,
                previous=previous,
                candidate=shown,
                new_label=new_label,
                combined=combined,
                refused=refused,
                gain=gain,
                margin=margin,
                winner=winner,
            )
        )
    return outcomes


@dataclass(frozen=True)
class AuditEntry:
    """One row of the grid: its section (``improved`` / ``contested``), its rank there, the image's outcome."""

    section: str
    rank: int
    outcome: Outcome


def audit_entries(outcomes: Sequence[Outcome], k: int = DEFAULT_K) -> list[AuditEntry]:
    """The ``k`` most improved images (largest gain among replacements), then the ``k`` most contested
    (smallest margin, guard refusals that would have won first); an image may be in both."""
    improved = sorted(
        (o for o in outcomes if o.new_label and math.isfinite(o.gain)), key=lambda o: (-o.gain, o.image_id)
    )
    contested = sorted(
        (o for o in outcomes if not math.isnan(o.margin)), key=lambda o: (o.margin, o.image_id)
    )
    return [AuditEntry("improved", i + 1, o) for i, o in enumerate(improved[:k])] + [
        AuditEntry("contested", i + 1, o) for i, o in enumerate(contested[:k])
    ]


# --- captions -------------------------------------------------------------------------------------------------------

#: Lines under every cell: title, scores, guard values, combined score, decision.
CAPTION_LINES = 5


def _short(name: str) -> str:
    return _SHORT.get(name, name.removeprefix("guard_"))


def _score_lines(scores: Mapping[str, float]) -> tuple[str, str]:
    """``(no-reference scores, guard values)`` as short text, e.g. ``piqe 35.2 niqe 5.12 r_vlm 0.61``."""
    plain = [n for n in sorted(scores) if not n.startswith("guard_")]
    guards = [n for n in sorted(scores) if n.startswith("guard_")]

    def text(names: list[str]) -> str:
        return " ".join(f"{_short(n)} {scores[n]:.3g}" for n in names)

    return text(plain), text(guards)


def _number(value: float, signed: bool = False) -> str:
    return "-" if not math.isfinite(value) else (f"{value:+.3f}" if signed else f"{value:.3f}")


def _cell(row: Mapping | None, outcome: Outcome, decision: str, empty: str) -> list[str]:
    if row is None:
        return [empty] + [""] * (CAPTION_LINES - 1)
    scores, guards = _score_lines(row["scores"])
    title = f"r{row['round']} {row['source']}"
    return [title, scores, guards, f"comb {_number(outcome.score(row))}", decision]


def _candidate_decision(outcome: Outcome) -> str:
    row = outcome.candidate
    if row is None:
        return ""
    if outcome.new_label:
        return "replaced: new label" if outcome.previous is not None else "selected: first label"
    failed = outcome.refused.get(history_key(row))
    if failed:
        return "refused by " + ", ".join(failed)
    behind = outcome.score(row) - outcome.score(outcome.winner)
    return (
        f"not selected ({_number(behind, signed=True)} vs label)" if math.isfinite(behind) else "not selected"
    )


def captions(entry: AuditEntry) -> list[list[str]]:
    """The caption lines of the row's three cells (input, previous label, new candidate), CAPTION_LINES each."""
    o = entry.outcome
    if o.input is not None:
        scores, guards = _score_lines(o.input["scores"])
        kept = o.winner is o.input
        status = "label again" if o.deselected else "kept: no candidate beat it" if kept else ""
        input_cell = [f"input ({o.weather})", scores, guards, f"comb {_number(o.score(o.input))}", status]
    else:
        input_cell = [f"input ({o.weather})", "not scored", "", "", "input"]
    previous = f"replaced (gain {_number(o.gain, signed=True)})" if o.new_label else "kept"
    if o.deselected:
        previous = "deselected: " + (
            ", ".join(o.refused.get(history_key(o.previous), ())) or "not comparable"
        )
    return [
        input_cell,
        _cell(o.previous, o, previous, "no previous label"),
        _cell(o.candidate, o, _candidate_decision(o), "no other candidate"),
    ]


def row_title(entry: AuditEntry) -> str:
    o = entry.outcome
    if entry.section == "improved":
        what = f"gain {_number(o.gain, signed=True)}"
    elif o.margin == -math.inf:
        what = "no candidate could win (guards)"
    else:
        what = f"margin {_number(o.margin, signed=True)}" + (" (guard refusal)" if o.margin < 0 else "")
    return f"{entry.section} #{entry.rank}  {o.image_id[:12]}  {o.weather}  {what}"


# --- the grid -------------------------------------------------------------------------------------------------------

THUMB_H = 128  # thumbnail height (px)
CELL_W = 224  # cell width; thumbnails are at most CELL_W - 2 * PAD wide
PAD = 6
LINE_H = 13  # caption line height
TITLE_H = 18  # the row's title strip
SECTION_H = 24  # a section's heading
HEADER_H = 58  # the grid's title, the guards' legend and the column headings
COLUMNS = ("input", "previous label", "new candidate")
SECTIONS = {
    "improved": "most improved: largest combined-score gain among replacements",
    "contested": "most contested: smallest margin between winner and runner-up (guard refusals first)",
}


def row_height() -> int:
    return TITLE_H + THUMB_H + PAD + CAPTION_LINES * LINE_H + PAD


def grid_size(entries: Sequence[AuditEntry]) -> tuple[int, int]:
    """``(width, height)`` of the grid of ``entries``."""
    sections = len({entry.section for entry in entries})
    return PAD * 2 + len(COLUMNS) * CELL_W, HEADER_H + sections * SECTION_H + len(
        entries
    ) * row_height() + PAD


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # an old Pillow or no FreeType: the bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def load_thumbnail(uri: str | None, box: tuple[int, int]) -> Image.Image | None:
    """The image at ``uri`` (resolved) scaled to fit ``box``; None when it is missing or unreadable."""
    if uri is None:
        return None
    try:
        with Image.open(io.BytesIO(read_bytes(uri))) as img:
            img.draft("RGB", box)  # JPEG: decode at a reduced scale
            upright = ImageOps.exif_transpose(img).convert("RGB")
        return ImageOps.contain(upright, box)  # small pool images are scaled up to the row's height
    except Exception as err:  # a missing, moved or broken file: an empty cell, not a failed audit
        log.debug("audit: no thumbnail of %s: %s", uri, err)
        return None


def draw_grid(
    entries: Sequence[AuditEntry],
    title: str,
    load: Callable[[str | None], Image.Image | None],
) -> Image.Image:
    """The audit grid of ``entries`` (:func:`grid_size`): per section a heading, per entry a title strip, three
    thumbnails (``load(uri)``; None draws a grey placeholder) and their :func:`captions`."""
    width, height = grid_size(entries)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, bold = _font(11), _font(13)
    draw.text((PAD, PAD), _fit(draw, title, bold, width - 2 * PAD), fill="black", font=bold)
    draw.text((PAD, PAD + 16), _fit(draw, GUARD_LEGEND, font, width - 2 * PAD), fill=(60, 60, 60), font=font)
    for col, name in enumerate(COLUMNS):
        draw.text((PAD + col * CELL_W + PAD, HEADER_H - LINE_H - 4), name, fill=(60, 60, 60), font=font)
    y, section = HEADER_H, None
    for entry in entries:
        if entry.section != section:
            section = entry.section
            draw.rectangle((0, y, width, y + SECTION_H - 4), fill=(225, 232, 245))
            draw.text((PAD, y + 4), SECTIONS.get(section, section), fill="black", font=bold)
            y += SECTION_H
        draw.text(
            (PAD, y + 3), _fit(draw, row_title(entry), font, width - 2 * PAD), fill=(30, 30, 120), font=font
        )
        o = entry.outcome
        uris = (o.input_uri, *(None if r is None else r["candidate_uri"] for r in (o.previous, o.candidate)))
        for col, (uri, lines) in enumerate(zip(uris, captions(entry), strict=True)):
            x, top = PAD + col * CELL_W, y + TITLE_H
            box = (CELL_W - 2 * PAD, THUMB_H)
            thumb = load(uri) if uri is not None else None
            if thumb is None:
                draw.rectangle((x + PAD, top, x + PAD + box[0], top + THUMB_H), fill=(215, 215, 215))
                note = "no image" if uri is None else "file missing"
                draw.text((x + 2 * PAD, top + THUMB_H // 2 - 6), note, fill=(90, 90, 90), font=font)
            else:
                image.paste(
                    thumb, (x + PAD + (box[0] - thumb.width) // 2, top + (THUMB_H - thumb.height) // 2)
                )
            for i, line in enumerate(lines):
                colour = (170, 20, 20) if line.startswith("refused") else "black"
                text_y = top + THUMB_H + PAD + i * LINE_H
                draw.text((x + PAD, text_y), _fit(draw, line, font, CELL_W - 2 * PAD), fill=colour, font=font)
        y += row_height()
    return image


def pool_uris(store: TableStore) -> dict[str, str]:
    """``image_id`` -> a pool file of it (as stored)."""
    pool = store.read("pool", ["image_id", "uri"])
    return dict(zip(pool.column("image_id").to_pylist(), pool.column("uri").to_pylist(), strict=True))


def write_audit(
    store: TableStore,
    rows: Sequence[dict],
    round_index: int,
    path: Path,
    *,
    lineage: str = "",
    k: int = DEFAULT_K,
) -> Path | None:
    """The audit grid of ``round_index`` (``rows``: the lineage's history) as a PNG at ``path``; None (nothing
    written) when no image has a decided candidate of that round."""
    entries = audit_entries(round_outcomes(rows, round_index, pool_uris(store)), k)
    if not entries:
        return None
    box = (CELL_W - 2 * PAD, THUMB_H)
    title = f"pseudo-labels {'init' if round_index == 0 else f'after round {round_index}'}" + (
        f"  |  {lineage}" if lineage else ""
    )
    grid = draw_grid(entries, title, lambda uri: load_thumbnail(resolve_uri(store.root, uri), box))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


# --- one image's history (``fairweather pseudolabel show``) ---------------------------------------------------------


def _candidate_name(row: Mapping) -> str:
    name = PurePosixPath(row["candidate_uri"]).name
    if row["source"] == INPUT_SOURCE:
        return f"pool:{name}"
    stem, dot, suffix = name.rpartition(".")
    return f"{stem[:12]}...{dot}{suffix}" if len(stem) > 16 else name


def _time(value) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [header, *body]
    ]


def history_text(store: TableStore, ref: str, lineage: str | None = None) -> str:
    """One image's ``pseudo_labels`` history in one lineage (default: the most recent one holding the image) as
    text: a table of every candidate (round, source, file, each score and guard value, combined score, decision,
    times) and where the current pseudo-label is. ``ref``: the image id or a unique prefix of it."""
    image_id = resolve_image_id(store, ref)
    rows = image_rows(store, image_id)
    latest: dict[str, object] = {}
    for row in rows:
        when = max(t for t in (row["created_at"], row["decided_at"]) if t is not None)
        latest[row["lineage"]] = max(latest.get(row["lineage"], when), when)
    lineages = sorted(latest, key=lambda name: latest[name], reverse=True)
    if lineage is None:
        lineage = lineages[0]
    elif lineage not in latest:
        raise FairweatherError(
            f"image {image_id[:16]} has no pseudo-labels in lineage {lineage!r} (it has: {', '.join(lineages)})"
        )
    history = sorted(
        (r for r in rows if r["lineage"] == lineage), key=lambda r: (r["round"], r["created_at"], r["source"])
    )
    names = sorted(
        {name for row in history for name in row["scores"]}, key=lambda n: (n.startswith("guard_"), n)
    )
    header = [
        "round",
        "source",
        "candidate",
        *(_short(n) for n in names),
        "combined",
        "decision",
        "scored",
        "decided",
    ]
    body = [
        [
            str(row["round"]),
            row["source"],
            _candidate_name(row),
            *(f"{row['scores'][n]:.4g}" if n in row["scores"] else "-" for n in names),
            _number(row["combined_score"]),
            row_decision(row),
            _time(row["created_at"]),
            _time(row["decided_at"]),
        ]
        for row in history
    ]
    lines = [f"image {image_id} ({history[0]['weather']}), lineage {lineage}: {len(history)} candidates"]
    if len(lineages) > 1:
        others = ", ".join(name for name in lineages if name != lineage)
        lines.append(f"also in lineage(s): {others} (--lineage NAME)")
    if any(n.startswith("guard_") for n in names):
        lines.append(GUARD_LEGEND)
    lines += _table(header, body)
    stored = sorted(
        {str(PurePosixPath(r["candidate_uri"]).parent) for r in history if r["source"] != INPUT_SOURCE}
    )
    if stored:
        lines.append(f"candidate files in: {', '.join(resolve_uri(store.root, folder) for folder in stored)}")
    current = next((row for row in history if row["selected"]), None)
    if current is None:
        lines.append("current pseudo-label: none in this lineage yet")
    else:
        where = resolve_uri(store.root, current["candidate_uri"])
        lines.append(f"current pseudo-label: round {current['round']} {current['source']} -> {where}")
    return "\n".join(lines)
