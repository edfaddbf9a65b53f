"""A tiny random LLaVA-1.5-style model folder: same classes and loading path as ``llava-hf/llava-1.5-7b-hf``.

``AutoProcessor.from_pretrained(folder)`` gives a ``LlavaProcessor`` (CLIP image processor at 32 px + a BPE
tokenizer trained here on a small in-code corpus) and ``AutoModelForImageTextToText.from_pretrained(folder)`` a
``LlavaForConditionalGeneration`` (2-layer CLIP vision tower + 2-layer Llama), random weights from a fixed seed.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from fairweather.contracts.vocab import RATING_WORDS
from fairweather.vlm.prompts import DESCRIPTION, QUALITY, REWRITE, VISIBILITY

IMAGE_SIZE = 32
PATCH_SIZE = 8
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]

#: llava-1.5's conversation format ("USER: <image>\n... ASSISTANT:"), written for the HF message format.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

#: Scene and weather vocabulary so generated text looks like words; the prompts make their words whole tokens.
_WORDS = (
    "the a an image photo scene street road car cars people person tree trees building buildings sky city "
    "house mountain river field park with and of on in is are there it weather looks clear sunny bright cloudy "
    "rainy rain raining heavy light hazy haze fog foggy mist misty snowy snow snowing covered white grey dark "
    "day night visible visibility shows view in the distance wet ground"
)


def _corpus() -> list[str]:
    """Training lines for the BPE: each rating word with and without a leading space, many times, so both
    variants end up as single tokens; plus the prompts, the template words and a scene vocabulary."""
    prompts = [VISIBILITY.text, QUALITY.text, DESCRIPTION.text, REWRITE.format(description="")]
    rating_lines = [word for word in RATING_WORDS] + [" ".join(RATING_WORDS)]
    template_lines = ["USER: ASSISTANT:", "ASSISTANT: excellent", "The weather looks good."]
    return (rating_lines * 50) + (prompts * 20) + (template_lines * 20) + [_WORDS] * 20


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A small BPE tokenizer with sentencepiece-style spaces (``▁word``), as Llama's tokenizer has."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    # Newlines and punctuation become their own pieces; a space turns into a ``▁`` prefix of the next word.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never"),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=[*string.printable, "▁"],
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",
    )


def build(out_dir: Path) -> None:
    """Save processor + model into ``out_dir`` (loadable with the Auto* classes)."""
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's class token, dropped by the "default" strategy
        chat_template=CHAT_TEMPLATE,
    )
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=32,
    )
    text = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
