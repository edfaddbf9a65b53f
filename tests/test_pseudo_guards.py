"""Guarded pseudo-label selection: artifact-laden candidates with better no-reference scores lose to the input,
a genuine restoration wins, nothing is accepted unchecked, and pairwise agreement with PSNR is measured per judge.

The images are procedural (a smooth colour field with shapes and fine random texture, 192 px): the guards compare
a candidate with its input, so what matters is that the artifacts are the issue's (a blue cast, an embossed dot
texture, a grid of tile blocks) and the genuine candidate is the clean image behind a haze veil.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from fairweather.contracts.config import ConfigError, load_config
from fairweather.pseudo import (
    GUARD_NAMES,
    Candidate,
    Rule,
    agreement_table,
    failed_guards,
    guard_values,
    input_checks,
    metric_judge,
    pairwise_agreement,
    select,
)
from fairweather.pseudo.guards import colour_shift, grid_energy, structure, texture_energy

SIZE = 192


def rule(*extra: str) -> Rule:
    """PIQE + NIQE (both lower-is-better), the smoke profile's real CPU scorers, with the default guards."""
    return Rule.of(
        load_config("paper", ["pseudo.metrics=[piqe,niqe]", "pseudo.use_vlm=false", *extra]).pseudo
    )


def scene(seed: int) -> torch.Tensor:
    """``(3, SIZE, SIZE)`` in [0, 1]: a smooth colour field, a bright disc and a dark bar (edges), fine texture."""
    gen = torch.Generator().manual_seed(seed)
    field = F.interpolate(torch.rand(1, 3, 5, 5, generator=gen), size=(SIZE, SIZE), mode="bicubic")[0]
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    disc = ((yy - 70) ** 2 + (xx - 110) ** 2 < 35**2).double()
    bar = ((yy > 120) & (yy < 150) & (xx > 20) & (xx < 170)).double()
    grain = F.avg_pool2d(torch.randn(1, 1, SIZE, SIZE, generator=gen), 3, 1, 1)[0] * 0.04
    image = 0.15 + 0.6 * field.double() + 0.2 * disc - 0.15 * bar + grain.double()
    return image.clamp(0, 1)


def hazy(clean: torch.Tensor, airlight: tuple[float, float, float] = (0.85, 0.85, 0.87)) -> torch.Tensor:
    """Atmospheric scattering, thicker towards the top (transmission 0.25 -> 0.7)."""
    t = torch.linspace(0.25, 0.7, SIZE, dtype=torch.float64).view(1, SIZE, 1)
    return clean * t + torch.tensor(airlight, dtype=torch.float64).view(3, 1, 1) * (1 - t)


def blue_cast(image: torch.Tensor) -> torch.Tensor:
    return (
        image * torch.tensor([0.8, 0.92, 1.0]).view(3, 1, 1) + torch.tensor([0, 0.02, 0.14]).view(3, 1, 1)
    ).clamp(0, 1)


def dot_texture(image: torch.Tensor, period: int = 6, amplitude: float = 0.08) -> torch.Tensor:
    """An embossed dot pattern: a 2-D cosine grid minus itself shifted one pixel diagonally."""
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    dots = torch.cos(2 * math.pi * yy / period) * torch.cos(2 * math.pi * xx / period)
    return (image + amplitude * (dots - dots.roll((1, 1), (0, 1))).double()).clamp(0, 1)


def tile_blocks(image: torch.Tensor, tile: int = 48, amplitude: float = 0.05) -> torch.Tensor:
    """Each tile shifted by its own brightness offset (what tiles with their own global statistics look like)."""
    gen = torch.Generator().manual_seed(7)
    offsets = (
        (torch.rand(SIZE // tile, SIZE // tile, generator=gen, dtype=torch.float64) - 0.5) * 2 * amplitude
    )
    return (image + offsets.repeat_interleave(tile, 0).repeat_interleave(tile, 1)).clamp(0, 1)


@pytest.fixture(scope="module")
def case() -> dict[str, torch.Tensor]:
    clean = scene(0)
    return {
        "input": hazy(clean),
        "genuine": clean,
        "blue": blue_cast(clean),
        "dots": dot_texture(clean),
        "blocks": tile_blocks(clean),
    }


def candidate(key: str, piqe: float, niqe: float, image: torch.Tensor, inp: torch.Tensor) -> Candidate:
    return Candidate(key, {"piqe": piqe, "niqe": niqe, **guard_values(inp, image)})


def test_each_artifact_trips_its_guard_and_the_genuine_restoration_passes(
    case: dict[str, torch.Tensor],
) -> None:
    r = rule()
    inp = case["input"]
    assert failed_guards(guard_values(inp, inp), r) == ()  # the input against itself
    assert failed_guards(guard_values(inp, case["genuine"]), r) == ()
    assert "guard_colour" in failed_guards(guard_values(inp, case["blue"]), r)
    assert "guard_texture" in failed_guards(guard_values(inp, case["dots"]), r)
    assert "guard_grid" in failed_guards(guard_values(inp, case["blocks"]), r)
    # The guards see what they are built for, and ignore a change of contrast.
    assert colour_shift(inp, case["genuine"]) < colour_shift(inp, case["blue"]) / 2
    assert texture_energy(inp, case["genuine"]) < texture_energy(inp, case["dots"]) / 3
    assert grid_energy(inp, case["genuine"]) < grid_energy(inp, case["blocks"]) / 3
    assert structure(inp, case["genuine"]) > 0.95 > structure(inp, case["dots"])


def test_artifacts_lose_to_the_input_despite_better_scores(case: dict[str, torch.Tensor]) -> None:
    r = rule()
    inp = case["input"]
    the_input = candidate("0:input", 45.0, 6.0, inp, inp)
    genuine = candidate("1:genuine", 30.0, 5.0, case["genuine"], inp)
    ruined = {
        name: candidate(f"1:{name}", 12.0, 4.0, case[name], inp) for name in ("blue", "dots", "blocks")
    }  # PIQE 42 -> 12, NIQE 6 -> 4: what the issue saw on the ruined outputs
    for name, bad in ruined.items():
        decision = select(None, [bad], r, input=the_input)
        assert decision.winner is None, name  # the input stays: nothing is accepted unchecked
        assert decision.baseline == "0:input" and bad.key in decision.rejected
        # The input listed as a round-0 candidate becomes the label instead.
        assert select(None, [the_input, bad], r, input=the_input).winner == "0:input"
    decision = select(None, [*ruined.values(), genuine], r, input=the_input)
    assert decision.winner == "1:genuine" and set(decision.rejected) == {c.key for c in ruined.values()}
    # A current pseudo-label is never replaced by a ruined candidate either.
    assert select(genuine, list(ruined.values()), r, input=the_input).winner is None
    # The same candidates with the guards off: the blue cast wins on its scores.
    assert select(None, [*ruined.values(), genuine], rule("pseudo.guards.enabled=false")).winner == "1:blue"


def test_nothing_unchecked_and_the_input_must_be_beaten() -> None:
    r = rule()
    ok = {"guard_colour": 1.0, "guard_texture": 0.2, "guard_grid": 0.1, "guard_structure": 0.99}
    the_input = Candidate("0:input", {"piqe": 40.0, "niqe": 6.0})  # no guard values: exempt
    unchecked = Candidate("1:ema", {"piqe": 10.0, "niqe": 3.0})
    decision = select(None, [unchecked], r, input=the_input)
    assert decision.winner is None and all(f.endswith(":unchecked") for f in decision.rejected["1:ema"])
    worse = Candidate("1:worse", {"piqe": 60.0, "niqe": 8.0, **ok})
    assert select(None, [worse], r, input=the_input).winner is None  # must beat the input
    better = Candidate("1:better", {"piqe": 20.0, "niqe": 4.0, **ok})
    assert select(None, [worse, better], r, input=the_input).winner == "1:better"
    assert select(None, [better], rule("pseudo.margin=0.9"), input=the_input).winner is None
    # A current label that fails tightened guards is no baseline: the input is.
    stale = Candidate("0:old", {"piqe": 5.0, "niqe": 2.0, **ok, "guard_colour": 50.0})
    assert select(stale, [better], r, input=the_input).winner == "1:better"
    # ... and when nothing beats the input, the stale label gives way to it (it is not kept unchecked).
    decision = select(stale, [worse], r, input=the_input)
    assert decision.winner == "0:input" and decision.baseline == "0:input" and "0:old" in decision.rejected
    assert select(stale, [], r, input=the_input).winner == "0:input"  # also with no eligible candidate
    # A current label that still passes is kept; so is the input when it is the current label.
    assert (
        select(Candidate("0:old", {**stale.scores, "guard_colour": 1.0}), [worse], r, input=the_input).winner
        is None
    )
    assert select(the_input, [worse], r, input=the_input).winner is None
    # Guard limits are configuration and travel with the rule.
    assert r.guards["guard_colour"] == 12.0 and '"guards"' in r.to_json()
    assert rule("pseudo.guards.max_colour=0.5").guards["guard_colour"] == 0.5
    with pytest.raises(ConfigError, match="min_structure"):
        rule("pseudo.guards.min_structure=2")


def test_pairwise_agreement_counts_pairs_ties_and_gaps() -> None:
    images = {
        "a": [({"piqe": 40.0}, 20.0), ({"piqe": 30.0}, 25.0), ({"piqe": 10.0}, 18.0)],
        "b": [({"piqe": 50.0}, 15.0), ({"piqe": 50.0}, 22.0), ({"piqe": 20.0}, 22.05)],
    }
    judge = metric_judge("piqe", higher_better=False)
    # a: (0,1) agree, (0,2) disagree, (1,2) disagree; b: (0,1) tie, (0,2) agree, (1,2) agree (gap 0.05)
    result = pairwise_agreement(images, judge)
    assert (result.pairs, result.agree, result.disagree, result.ties) == (6, 3, 2, 1)
    assert result.rate == pytest.approx(3.5 / 6)
    assert pairwise_agreement(images, judge, min_gap=0.1).pairs == 5
    assert math.isnan(pairwise_agreement({}, judge).rate)


def test_agreement_of_each_judge_on_ruined_candidates(case: dict[str, torch.Tensor]) -> None:
    """The issue's situation: NR scores prefer ruined outputs that PSNR puts at the input's level; the guarded
    rule agrees with PSNR where the scores alone do not."""
    inp, target = case["input"], case["genuine"]
    partial = 0.5 * (inp + target)  # half the veil removed: a genuine restoration
    strong_blue = partial * torch.tensor([0.6, 0.85, 1.0]).view(3, 1, 1) + torch.tensor([0, 0.05, 0.3]).view(
        3, 1, 1
    )
    outputs = {  # image, PIQE, NIQE
        "input": (inp, 45.0, 6.0),
        "partial": (partial, 35.0, 5.5),
        "blue": (strong_blue.clamp(0, 1), 12.0, 4.0),
        "dots": (dot_texture(partial, amplitude=0.3), 12.0, 4.0),
        "blocks": (tile_blocks(partial, amplitude=0.3), 12.0, 4.0),
    }

    def psnr(image: torch.Tensor) -> float:
        return float(-10 * torch.log10(((image - target) ** 2).mean()))

    images = {
        "scene": [
            ({"piqe": p, "niqe": n, **guard_values(inp, im)}, psnr(im)) for im, p, n in outputs.values()
        ]
    }
    # PSNR: partial 18.6 dB, the ruined ones and the input 12.1-13.2 dB; pairs within 1 dB have no clear truth.
    table = agreement_table(images, rule(), min_gap=1.0)
    assert set(table) == {"piqe", "niqe", *GUARD_NAMES, "rule:scores", "rule"}
    assert table["rule"].pairs == 5
    assert table["piqe"].rate < 0.5 and table["niqe"].rate < 0.5 and table["rule:scores"].rate < 0.5
    assert table["rule"].rate >= 0.9


def test_input_checks_hook_takes_uint8_arrays(case: dict[str, torch.Tensor]) -> None:
    def u8(image: torch.Tensor) -> np.ndarray:
        return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    values = input_checks(u8(case["blue"]), u8(case["input"]))
    assert set(values) == set(GUARD_NAMES)
    assert values["guard_colour"] == pytest.approx(colour_shift(case["input"], case["blue"]), abs=0.5)
    assert input_checks(u8(case["input"]), u8(case["input"]))["guard_structure"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="size"):
        guard_values(case["input"], case["input"][:, :100])
