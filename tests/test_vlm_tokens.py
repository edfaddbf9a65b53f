"""Rating-token resolution on the tiny LLaVA tokenizer, and on deliberately bad tokenizers."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from fairweather.tiny.llava import CHAT_TEMPLATE, build_tokenizer
from fairweather.vlm import RATING_WORDS, VISIBILITY, resolve_rating_token_ids
from fairweather.vlm.requests import render_prompt
from fairweather.vlm.tokens import answer_separator


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    tok = build_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    return tok


def test_ids_decode_back_to_the_words_with_leading_space(tokenizer):
    rendered = render_prompt(tokenizer, VISIBILITY.text, with_image=True)
    assert rendered.endswith("ASSISTANT:")
    assert answer_separator(rendered) == " "
    ids = resolve_rating_token_ids(tokenizer, rendered)
    assert len(set(ids)) == 5
    assert [tokenizer.decode([i]).strip() for i in ids] == list(RATING_WORDS)
    # llava-1.5's "ASSISTANT:" turn is followed by " excellent": the space-prefixed variant
    assert tokenizer.convert_ids_to_tokens(list(ids)) == ["▁" + word for word in RATING_WORDS]


def test_template_ending_in_newline_gives_the_no_space_variant(tokenizer):
    rendered = render_prompt(tokenizer, VISIBILITY.text, with_image=True) + "\n"
    assert answer_separator(rendered) == ""
    ids = resolve_rating_token_ids(tokenizer, rendered)
    assert tokenizer.convert_ids_to_tokens(list(ids)) == list(RATING_WORDS)


def _word_level(words: list[str], split: bool = True) -> PreTrainedTokenizerFast:
    """A word-level tokenizer knowing only ``words`` (+ <unk>), space-prefixed like sentencepiece."""
    vocab = {"<unk>": 0, **{word: i + 1 for i, word in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    if split:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def test_missing_words_collide_on_unknown_and_raise():
    tok = _word_level(["USER:", "▁ASSISTANT:", "▁excellent", "▁good", "▁bad"])
    with pytest.raises(ValueError, match=r"share first tokens.*'fair': 0.*'poor': 0"):
        resolve_rating_token_ids(tok, "USER: ASSISTANT:")


def test_one_missing_word_raises_naming_it():
    tok = _word_level(["USER:", "▁ASSISTANT:", "▁excellent", "▁good", "▁fair", "▁bad"])
    with pytest.raises(ValueError, match="'poor' maps to the unknown token"):
        resolve_rating_token_ids(tok, "USER: ASSISTANT:")


def test_word_merging_into_the_prompt_raises():
    # no pre-tokenizer: the whole text is one (unknown) piece, so the word is no separate next token
    tok = _word_level(["excellent"], split=False)
    with pytest.raises(ValueError, match="does not tokenize as a continuation"):
        resolve_rating_token_ids(tok, "ASSISTANT:")


def test_empty_prompt_raises(tokenizer):
    with pytest.raises(ValueError, match="empty"):
        resolve_rating_token_ids(tokenizer, "")
