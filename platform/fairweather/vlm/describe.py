"""Descriptions -> weather class and clear-weather rewrite (d_pos) by keyword rules.

d_neg is the VLM's description of a real weather image; d_pos is the same text with the weather made clear,
prefixed with "The weather looks good." (METHOD.md, L_sem). The rules below are a documented approximation: they
replace weather words (any case, plurals, "heavy rain", "foggy", "it is snowing") and leave the scene untouched.
"""

from __future__ import annotations

import re

#: Sentence that opens every d_pos.
CLEAR_PREFIX = "The weather looks good."

# Word stems per adverse class; each pattern matches whole words with their inflections.
_WEATHER_WORDS: dict[str, str] = {
    "snow": r"snow\w*|blizzards?|sleet\w*|frost\w*|icy",
    "rain": r"rain(?!bow)\w*|drizzl\w*|downpours?|showers?|storm\w*|thunderstorms?",
    "haze": r"haz\w*|fog\w*|mist\w*|smog\w*|smok\w*|dust\w*",
}
_CLEAR_WORDS = r"clear|sunny|sunlit|sunshine|bright|cloudless|fine weather|good weather"
#: "no rain", "not foggy", "isn't snowy", "without any fog": a negated weather word is neither counted nor rewritten.
_NEGATED_BEFORE = re.compile(r"(?:\b(?:no|not|without|free of|nor)|n't)\s+(?:\w+\s+)?$", flags=re.IGNORECASE)
#: Precedence when several adverse classes are mentioned: snow, then rain, then haze. Snow scenes are often
#: described as "foggy" or "misty" and rain scenes as "hazy", while the reverse is rare, so the rarer, more
#: specific word wins. An adverse word beats "clear" (e.g. "clear sky despite the fog" -> haze).
PRECEDENCE = ("snow", "rain", "haze")


def _negated(match: re.Match[str]) -> bool:
    """True if the matched word directly follows a negation (looking back a few words only)."""
    return _NEGATED_BEFORE.search(match.string[max(0, match.start() - 24) : match.start()]) is not None


def _mentions(pattern: str, text: str) -> bool:
    """True if a word of ``pattern`` occurs in ``text`` and is not negated."""
    return any(not _negated(m) for m in re.finditer(rf"\b(?:{pattern})\b", text, flags=re.IGNORECASE))


def parse_weather(description: str) -> str:
    """Weather class of a description: ``clear | rain | haze | snow | unknown`` (precedence: ``PRECEDENCE``, then
    clear; ``unknown`` when no weather word is mentioned)."""
    if not isinstance(description, str):
        raise TypeError(f"description must be a string, got {type(description).__name__}")
    for weather in PRECEDENCE:
        if _mentions(_WEATHER_WORDS[weather], description):
            return weather
    return "clear" if _mentions(_CLEAR_WORDS, description) else "unknown"


# Ordered (pattern, replacement) rules: multi-word phrases before single words so "heavy rain" is one unit.
_INTENSITY = r"(?:(?:very|extremely|quite|a|an|some)\s+)?(?:heavy|light|dense|thick|thin|torrential|pouring|"
_INTENSITY += r"falling|steady|constant|persistent|fresh|deep|gray|grey|white|blowing|driving|morning)\s+"
_REWRITE_RULES: list[tuple[str, str]] = [
    # verbs: "it is raining", "snowing heavily"
    (r"(?:raining|snowing|drizzling|pouring)(?:\s+(?:heavily|lightly|hard|steadily))?", "sunny"),
    # adjectives: "a rainy day", "foggy", "hazy sky", "stormy"
    (r"(?:rainy|snowy|foggy|hazy|misty|smoggy|stormy|drizzly|wintry|snow-covered|rain-soaked)", "clear"),
    (r"(?:wet|damp|slushy|icy)", "dry"),
    # nouns with an intensity word: "heavy rain", "thick fog", "light snowfall"
    (rf"{_INTENSITY}(?:rain(?!bow)\w*|snow\w*|fog|haze|mist|smog|drizzle)", "clear weather"),
    # fog/haze-like nouns: "the fog", "a layer of haze", "mist"
    (r"(?:fog|haze|mist|smog)s?", "clear air"),
    # rain/snow nouns and their compounds: "rain", "raindrops", "snowflakes", "a snowstorm", "blizzard"
    (
        r"(?:rain(?!bow)\w*|snow\w*|drizzle|downpours?|blizzards?|sleet|storms?|thunderstorms?|puddles?)",
        "sunshine",
    ),
]


def _replace(match: re.Match[str], replacement: str) -> str:
    """``replacement`` in the casing of the matched word (ALL CAPS, Capitalised, lower); negated words are kept."""
    source = match.group(0)
    if _negated(match):
        return source
    if source.isupper() and len(source) > 1:
        return replacement.upper()
    if source[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def rewrite_to_clear(description: str) -> str:
    """Rule-based d_pos: ``CLEAR_PREFIX`` + ``description`` with its weather words replaced by clear ones.

    E.g. "A street in heavy rain." -> "The weather looks good. A street in clear weather."
    """
    if not isinstance(description, str):
        raise TypeError(f"description must be a string, got {type(description).__name__}")
    text = description.strip()
    for pattern, replacement in _REWRITE_RULES:
        text = re.sub(
            rf"\b{pattern}\b", lambda match, new=replacement: _replace(match, new), text, flags=re.I
        )
    # A rewrite can produce "clear and clear" from "rainy and foggy": keep the first.
    text = re.sub(
        r"\b(clear(?: weather| air)?)(\s*(?:,|and|or)\s*clear(?: weather| air)?\b)+", r"\1", text, flags=re.I
    )
    return f"{CLEAR_PREFIX} {text}".strip()


def clear_rewrite_from_llm(answer: str) -> str:
    """Post-process an LLM rewrite: strip it and make sure it opens with ``CLEAR_PREFIX`` (models sometimes drop it)."""
    text = answer.strip().strip('"').strip()
    if text.lower().startswith(CLEAR_PREFIX.lower()):
        return CLEAR_PREFIX + text[len(CLEAR_PREFIX) :]
    return f"{CLEAR_PREFIX} {text}".strip()
