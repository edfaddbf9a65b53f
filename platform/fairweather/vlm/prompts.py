"""The VLM prompts as versioned data.

Every label row stores the versions of the prompts that produced it (``prompt_versions``), so a changed wording
is never mixed silently with older labels. Bump a prompt's ``version`` whenever its text changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from fairweather.contracts.config.vlm import VLMConfig


@dataclass(frozen=True)
class Prompt:
    """A user-turn text (may contain ``{placeholders}``) and the version stored with every label it produced."""

    name: str
    version: str
    text: str

    def format(self, **fields: str) -> str:
        """The user-turn text with ``{placeholders}`` filled; raises ``KeyError`` naming a missing field."""
        return self.text.format(**fields)


#: METHOD.md, verbatim: the paper's visibility prompt.
VISIBILITY = Prompt(
    name="visibility",
    version="visibility-v1",
    text=(
        "Rate the visibility of the image against rain, fog, and snow. "
        "Please answer with excellent, good, fair, poor, or bad."
    ),
)
#: METHOD.md, verbatim: the quality variant.
QUALITY = Prompt(
    name="quality",
    version="quality-v1",
    text="Rate the quality of the image. Please answer with excellent, good, fair, poor, or bad.",
)
#: Scene description that must name the weather; its answer is d_neg and the source of the weather class.
DESCRIPTION = Prompt(
    name="description",
    version="description-v1",
    text=(
        "Describe the scene in this image in one or two sentences, including the weather: "
        "is it clear, rainy, hazy, or snowy?"
    ),
)
#: Text-only rewrite of a description to clear weather (the ``rewrite: llm`` option for d_pos).
REWRITE = Prompt(
    name="rewrite",
    version="rewrite-v1",
    text=(
        "Rewrite the following image description so that the weather is clear: remove any rain, fog, haze, "
        "mist or snow and keep everything else unchanged. Start with 'The weather looks good.' "
        "Description: {description}"
    ),
)

#: Rating prompts selectable by ``VLMConfig.rating_prompt``.
RATING_PROMPTS: dict[str, Prompt] = {VISIBILITY.name: VISIBILITY, QUALITY.name: QUALITY}
#: Version of the rule-based d_pos rewrite in ``fairweather.vlm.describe`` (bump when its rules change).
RULES_REWRITE_VERSION = "rewrite-rules-v1"


def rating_prompt(cfg: VLMConfig) -> Prompt:
    """The rating prompt chosen by ``cfg.rating_prompt``."""
    if cfg.rating_prompt not in RATING_PROMPTS:
        raise ValueError(f"unknown rating_prompt {cfg.rating_prompt!r} (known: {', '.join(RATING_PROMPTS)})")
    return RATING_PROMPTS[cfg.rating_prompt]


def prompt_versions(cfg: VLMConfig) -> dict[str, str]:
    """Versions of everything that shaped a label under ``cfg``: {"rating", "description", "rewrite"} -> version."""
    rewrite = REWRITE.version if cfg.rewrite == "llm" else RULES_REWRITE_VERSION
    return {"rating": rating_prompt(cfg).version, "description": DESCRIPTION.version, "rewrite": rewrite}
