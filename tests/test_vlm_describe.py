"""Weather parsing and the rule-based clear-weather rewrite (d_pos), as tables."""

from __future__ import annotations

import pytest

from fairweather.vlm import CLEAR_PREFIX, clear_rewrite_from_llm, parse_weather, rewrite_to_clear

WEATHER_TABLE = [
    ("A city street on a rainy day with wet roads.", "rain"),
    ("Heavy rain is falling on the cars.", "rain"),
    ("It is raining.", "rain"),
    ("Raindrops cover the windshield.", "rain"),
    ("A foggy mountain road.", "haze"),
    ("The buildings are HAZY in the distance.", "haze"),
    ("Thick fog and mist over the river.", "haze"),
    ("A snowy park with trees.", "snow"),
    ("Snowflakes are falling; it is snowing.", "snow"),
    ("A blizzard covers the road.", "snow"),
    ("A sunny beach under a clear sky.", "clear"),
    ("The weather is clear and bright.", "clear"),
    ("A red car parked next to a building.", "unknown"),
    ("A rainbow over a sunny field.", "clear"),  # a rainbow is not rain
    ("", "unknown"),
    # precedence: snow > rain > haze > clear
    ("A snowy street, foggy and misty.", "snow"),
    ("Rain and haze over the city.", "rain"),
    ("A clear sky despite the light fog.", "haze"),
    # negation is not a mention
    ("A sunny street with no rain.", "clear"),
    ("The road isn't foggy; it is a clear day.", "clear"),
    ("A park without any snow, but heavy rain.", "rain"),
]


@pytest.mark.parametrize(("description", "expected"), WEATHER_TABLE)
def test_parse_weather(description, expected):
    assert parse_weather(description) == expected


REWRITE_TABLE = [
    ("A street in heavy rain.", "A street in clear weather."),
    ("A rainy city street with cars.", "A clear city street with cars."),
    ("It is raining heavily.", "It is sunny."),
    ("A Foggy road and hazy sky.", "A Clear road and clear sky."),
    ("THE FOG hides the hills.", "THE CLEAR AIR hides the hills."),
    ("Mist over the lake.", "Clear air over the lake."),
    ("Cars drive through thick fog and light snow.", "Cars drive through clear weather."),
    ("Raindrops on the window.", "Sunshine on the window."),
    ("The weather is rainy and foggy.", "The weather is clear."),
    ("A wet road.", "A dry road."),
    ("A sunny beach with no rain.", "A sunny beach with no rain."),
    ("A red car next to a building.", "A red car next to a building."),
    ("A rainbow after the rain.", "A rainbow after the sunshine."),
]


@pytest.mark.parametrize(("description", "expected"), REWRITE_TABLE)
def test_rewrite_to_clear(description, expected):
    rewritten = rewrite_to_clear(description)
    assert rewritten == f"{CLEAR_PREFIX} {expected}"
    assert parse_weather(rewritten) in ("clear", "unknown")


def test_rewrite_of_empty_text_is_the_prefix():
    assert rewrite_to_clear("  ") == CLEAR_PREFIX


def test_llm_rewrite_post_processing():
    assert (
        clear_rewrite_from_llm(' "The weather looks good. A street." ') == "The weather looks good. A street."
    )
    assert clear_rewrite_from_llm("the weather looks good. A street.") == "The weather looks good. A street."
    assert clear_rewrite_from_llm("A sunny street.") == "The weather looks good. A sunny street."


@pytest.mark.parametrize("function", [parse_weather, rewrite_to_clear])
def test_non_text_raises(function):
    with pytest.raises(TypeError, match="description must be a string"):
        function(None)  # type: ignore[arg-type]
