"""Weather conditioning (``model.nafnet.weather_film``): the network is told each image's weather, starts as the
unconditioned network, conditions each image of a batch on its own weather, and training feeds it the weathers of
the batch (see docs/real-weather.md for why: the unconditioned network darkens light real rain)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairweather.contracts.config import load_config
from fairweather.models import build_model, restore_tiled, restore_tiled_uint8
from fairweather.models.conditioning import CONDITIONS, condition_of, condition_tensor


def networks(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The smoke profile's NAFNet with and without conditioning, with the same weights (eval mode)."""
    plain = build_model(load_config("smoke", ["model.nafnet.weather_film=false"]).model).eval()
    conditioned = build_model(load_config("smoke", []).model).eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in plain.parameters():  # the block scales start at zero: make every block count
            parameter.add_(0.05 * torch.randn_like(parameter))
    conditioned.load_state_dict(plain.state_dict(), strict=False)
    return plain, conditioned


def modulated(network: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for parameter in network.film.parameters():
            parameter.normal_(0, 0.2)
    return network


def test_only_rain_haze_and_snow_are_told_apart():
    assert CONDITIONS == ("rain", "haze", "snow", "unknown")
    assert [condition_of(w) for w in ("rain", "haze", "snow", "clear", "unknown", None, "fog")] == [
        0,
        1,
        2,
        3,
        3,
        3,
        3,
    ]


def test_a_new_conditioned_network_is_the_unconditioned_one_and_checkpoints_without_it_still_load():
    plain, conditioned = networks()
    assert conditioned.conditioned and not plain.conditioned
    x = torch.rand(2, 3, 40, 52)
    for weather in ("rain", "haze", "snow", None):
        given = None if weather is None else condition_tensor([weather, weather])
        assert torch.allclose(conditioned(x, weather=given), plain(x), atol=1e-6)
    # The unconditioned network ignores the weather it is given.
    assert torch.equal(plain(x, weather=condition_tensor(["rain", "snow"])), plain(x))


def test_each_image_of_a_batch_is_restored_for_its_own_weather():
    _, network = networks()
    network = modulated(network)
    x = torch.rand(3, 3, 32, 32)
    weathers = ["rain", "haze", "unknown"]
    batch = network(x, weather=condition_tensor(weathers))
    for i, weather in enumerate(weathers):
        alone = network(x[i : i + 1], weather=condition_tensor([weather]))
        assert torch.allclose(batch[i : i + 1], alone, atol=1e-5)
    assert not torch.allclose(batch[0], network(x[:1], weather=condition_tensor(["snow"]))[0], atol=1e-3)
    # None is "unknown" for every image; one index is every image's condition.
    assert torch.allclose(network(x), network(x, weather=condition_tensor(["unknown"])), atol=1e-6)
    with pytest.raises(ValueError, match="batch of 3"):
        network(x, weather=condition_tensor(["rain", "haze"]))


def test_tiled_restoration_tells_every_tile_the_weather():
    network = modulated(networks()[1])
    rgb = (np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        for weather in ("rain", "snow"):
            condition = condition_tensor([weather])
            tiled = restore_tiled(network, x, 32, 8, condition)
            uint8 = restore_tiled_uint8(network, rgb, 32, 8, "cpu", condition)
            expected = (tiled[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
            assert np.abs(uint8.astype(int) - expected).max() <= 1
        rain = restore_tiled_uint8(network, rgb, 32, 8, "cpu", condition_tensor(["rain"]))
        snow = restore_tiled_uint8(network, rgb, 32, 8, "cpu", condition_tensor(["snow"]))
    assert np.abs(rain.astype(int) - snow).max() > 2


def test_a_training_step_trains_the_conditions_of_its_batch():
    """Paired images told rain, real images of no weather (unknown): only those two conditions get gradients."""
    from fairweather.losses import build_composite_loss
    from fairweather.training.optim import build_optimizer
    from fairweather.training.step import TrainBatch, train_step

    cfg = load_config("smoke", [])
    network = build_model(cfg.model).train()
    loss = build_composite_loss(cfg.loss)  # the smoke profile's L_sup + L_ps: both domains give gradients
    optimizer = build_optimizer(network, cfg.train)
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    batch = TrainBatch(
        paired_input=images[:2],
        paired_target=images[:2] * 0.5,
        real_input=images[2:],
        real_pseudo=images[2:] * 0.5,
        real_has_pseudo=torch.tensor([True, True]),
        paired_weather=["rain", "rain"],
    )
    train_step(network, loss, optimizer, batch, step=1)
    sites = network.film.sites
    moved = {CONDITIONS[row] for site in sites for row in range(len(CONDITIONS)) if site[row].abs().sum() > 0}
    assert moved == {"rain", "unknown"}
