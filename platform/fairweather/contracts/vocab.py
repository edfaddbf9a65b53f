"""The domain's fixed words, defined once: rating words, weather classes, folder aliases, image suffixes, label keys.

Every module that needs one of these imports it from here (contracts, science and stages alike), so a new weather
class or folder alias is one edit.
"""

from __future__ import annotations

#: The five rating words in the order every probability vector uses (best first; weights 5..1).
RATING_WORDS: tuple[str, ...] = ("excellent", "good", "fair", "poor", "bad")

#: The weather classes a label can carry; ``unknown`` when the description names none.
WEATHER_CLASSES: tuple[str, ...] = ("clear", "rain", "haze", "snow", "unknown")

#: The weathers a weather-conditioned network tells apart (:mod:`fairweather.models.conditioning`); any other
#: weather is restored as ``unknown``.
CONDITIONED_WEATHER: tuple[str, ...] = ("rain", "haze", "snow")

#: Folder name (lower case) -> the weather hint it gives an image when the manifest has none.
HINT_FOLDERS: dict[str, str] = {
    **{name: name for name in ("rain", "haze", "snow", "clear")},
    **{"rainy": "rain", "hazy": "haze", "fog": "haze", "foggy": "haze", "snowy": "snow", "clean": "clear"},
}

#: File name suffixes treated as images when a folder is listed (the bytes decide the real format later).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: The ``labels`` primary key: an image and the fingerprint of everything else that changes its label.
LABEL_KEY: tuple[str, ...] = ("image_id", "labeler_fingerprint")
