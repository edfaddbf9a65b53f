"""Resolve the token ids of the five rating words as the model would emit them after the rendered prompt.

The model's first answer token depends on the template: after ``ASSISTANT:`` (llava-1.5) the answer starts with
a space, so the id is that of ``▁excellent``; after ``assistant\\n`` (Qwen-style) it is ``excellent``. Rather than
guessing, we tokenize ``rendered_prompt + separator + word`` and take the first token after the prompt's tokens.
Everything that could make a score wrong later (ids that collide, unknown tokens, a whitespace-only first piece,
a prompt whose tokens change when the word is appended) raises ``ValueError`` here, at start-up.
"""

from __future__ import annotations

from typing import Any

from .rating import RATING_WORDS
from .requests import render_prompt


def answer_separator(rendered_prompt: str) -> str:
    """The text between the open assistant turn and its first word: nothing if the template already ends in
    whitespace (e.g. ``"assistant\\n"``), else one space (``"ASSISTANT:"`` -> ``"ASSISTANT: excellent"``)."""
    return "" if rendered_prompt[-1:].isspace() else " "


def first_answer_token(tokenizer: Any, rendered_prompt: str, word: str) -> int:
    """Id of the first token ``word`` gets when it follows ``rendered_prompt`` (tokenizer: any HF tokenizer)."""
    prompt_ids = tokenizer(rendered_prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(
        rendered_prompt + answer_separator(rendered_prompt) + word, add_special_tokens=False
    )["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids or len(full_ids) == len(prompt_ids):
        # The word merged into the prompt's last token: there is no clean "next token" to read.
        raise ValueError(
            f"rating word {word!r} does not tokenize as a continuation of the prompt "
            f"(prompt ends with {rendered_prompt[-20:]!r}); cannot resolve its first token"
        )
    return int(full_ids[len(prompt_ids)])


def resolve_rating_token_ids(tokenizer: Any, rendered_prompt: str) -> tuple[int, ...]:
    """Ids of the first answer token of excellent, good, fair, poor, bad (that order) after ``rendered_prompt``.

    rendered_prompt: the chat template's output with the assistant turn left open (text, not ids).
    Raises ``ValueError`` naming the word(s) when an id is unknown, whitespace only, not a prefix of its word, or
    shared by two words.
    """
    if not rendered_prompt:
        raise ValueError("rendered_prompt is empty; render the chat template first")
    ids = [first_answer_token(tokenizer, rendered_prompt, word) for word in RATING_WORDS]
    # Collisions first: two words on one id (typically both unknown) is the clearest diagnosis.
    if len(set(ids)) != len(ids):
        shared = {
            word: token_id
            for word, token_id in zip(RATING_WORDS, ids, strict=True)
            if ids.count(token_id) > 1
        }
        raise ValueError(
            f"rating words share first tokens {shared}; their probabilities cannot be told apart"
        )
    unk_id = getattr(tokenizer, "unk_token_id", None)
    for word, token_id in zip(RATING_WORDS, ids, strict=True):
        piece = tokenizer.decode([token_id]).strip()
        if unk_id is not None and token_id == unk_id:
            raise ValueError(
                f"rating word {word!r} maps to the unknown token (id {token_id}) in this tokenizer"
            )
        if not piece:
            raise ValueError(
                f"rating word {word!r} starts with a whitespace-only token (id {token_id}); its score would not "
                "tell the five words apart"
            )
        if not word.startswith(piece.lower()):
            raise ValueError(
                f"rating word {word!r} starts with token {piece!r} (id {token_id}), not a prefix of it"
            )
    return tuple(ids)


class RatingTokenIds:
    """``prompt -> five rating-word ids`` for one processor, resolved on first use per prompt and cached.

    Both backends render with the same processor chat template, so they share this lookup (a bad tokenizer raises
    ``ValueError`` from :func:`resolve_rating_token_ids` the first time a prompt is used: at start-up).
    """

    def __init__(self, processor: Any):
        self.processor = processor
        self._ids: dict[str, tuple[int, ...]] = {}

    def __call__(self, prompt: str) -> tuple[int, ...]:
        if prompt not in self._ids:
            rendered = render_prompt(self.processor, prompt, with_image=True)
            self._ids[prompt] = resolve_rating_token_ids(self.processor.tokenizer, rendered)
        return self._ids[prompt]
