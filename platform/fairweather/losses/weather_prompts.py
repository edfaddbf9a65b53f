"""Weather prompt learning (Paper A, after CLIP-LIT): four learnable prompts and the L_wpl loss.

Stage 1 (:func:`fit_weather_prompts`): with CLIP frozen, learn context vectors t_c, t_r, t_h, t_s (clear, rain,
haze, snow) by cross-entropy of CLIP's image-text logits on weather-labelled images. Stage 2: the prompts are
frozen and ``L_wpl = −log softmax_t(s·cos(E_I(ŷ), E_T(t)))[t_c]`` pushes restorations toward "clear".
Each prompt is ``[SOS] v_1 … v_M <class word>. [EOS]`` with M = ``LossConfig.prompt_context_len`` learnable token
embeddings v (initialised N(0, 0.02²)) spliced into CLIP's text input; the class word keeps each prompt anchored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fairweather.encoders.frozen import share_encoder

from .context import LossContext

#: Class order of every logit vector; index 0 (clear) is the target of L_wpl.
WEATHERS = ("clear", "rain", "haze", "snow")
CLASS_WORDS = ("clear", "rainy", "hazy", "snowy")
_PLACEHOLDER = "x"  # one CLIP BPE token per context slot; its embedding is replaced by a learnable vector


class WeatherPrompts(nn.Module):
    """Four learnable prompts over a shared frozen CLIP (held with ``share_encoder``: its weights are not ours).

    ``forward() -> (4, D)`` normalised prompt embeddings; ``logits(images) -> (N, 4)`` scaled cosine similarities.
    """

    def __init__(self, clip: nn.Module, context_len: int = 16):
        super().__init__()
        if context_len < 1:
            raise ValueError(f"prompt context length must be >= 1, got {context_len}")
        share_encoder(self, "clip", clip)
        texts = [" ".join([_PLACEHOLDER] * context_len) + f" {word}." for word in CLASS_WORDS]
        tokens = clip.tokenize(texts)
        with torch.no_grad():
            embeddings = clip.token_embeddings(tokens)
        self.context_len = context_len
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("embeddings", embeddings, persistent=False)
        self.context = nn.Parameter(0.02 * torch.randn(len(WEATHERS), context_len, embeddings.shape[-1]))
        self.register_buffer("frozen_text", None, persistent=False)  # set by freeze()

    def forward(self) -> torch.Tensor:
        if self.frozen_text is not None:
            return self.frozen_text
        # Position 0 is the start token; the next context_len positions are the placeholders.
        spliced = torch.cat(
            [
                self.embeddings[:, :1],
                self.context.to(self.embeddings),
                self.embeddings[:, 1 + self.context_len :],
            ],
            dim=1,
        )
        return self.clip.encode_text_embeddings(spliced, self.tokens)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` in [0, 1] -> ``(N, 4)`` logits ``s · cos(E_I(image), E_T(t))`` in WEATHERS order."""
        return self.clip.logit_scale * self.clip.encode_image(images) @ self().T

    def freeze(self) -> WeatherPrompts:
        """End of stage 1: fix the context and cache the four text embeddings (stage 2 needs no text forward)."""
        self.context.requires_grad_(False)
        self.context.grad = None  # drop stage 1's last gradient: nothing may update the context any more
        with torch.no_grad():
            self.frozen_text = self().detach()
        return self


def fit_weather_prompts(
    prompts: WeatherPrompts,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int = 0,
) -> list[float]:
    """Stage 1: cross-entropy on weather-labelled images, only the prompt context trains. Returns the loss per step.

    images: ``(M, 3, H, W)`` in [0, 1]; labels: ``(M,)`` indices into ``WEATHERS``. steps / lr / batch_size:
    ``LossConfig.prompt_fit_steps`` / ``prompt_fit_lr`` / ``prompt_fit_batch_size``.
    """
    if prompts.frozen_text is not None:
        raise ValueError(
            "fit_weather_prompts: the prompts are frozen already (fit before WeatherPrompts.freeze())"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    if labels.numel() and (labels.min() < 0 or labels.max() >= len(WEATHERS)):
        raise ValueError(f"weather labels must be in [0, {len(WEATHERS)}) ({', '.join(WEATHERS)})")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam([prompts.context], lr=lr)
    # CLIP is frozen and the images are fixed, so their embeddings are computed once, not every step.
    with torch.no_grad():
        image_embeddings = torch.cat([prompts.clip.encode_image(chunk) for chunk in images.split(batch_size)])
    history = []
    for _ in range(steps):
        index = torch.randint(0, images.shape[0], (min(batch_size, images.shape[0]),), generator=generator)
        logits = prompts.clip.logit_scale * image_embeddings[index] @ prompts().T
        loss = F.cross_entropy(logits, labels[index].to(logits.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    return history


class WeatherPromptLoss(nn.Module):
    """``wpl``: L_wpl = −log softmax over {t_c, t_r, t_h, t_s} of s·cos(E_I(ŷ), E_T(t)) at t_c, batch mean."""

    name = "wpl"
    needs_aux = False

    def __init__(self, prompts: WeatherPrompts):
        super().__init__()
        if prompts.context.requires_grad:
            raise ValueError(
                "WeatherPromptLoss needs frozen prompts: call WeatherPrompts.freeze() after stage 1"
            )
        self.prompts = prompts

    def applies(self, ctx: LossContext) -> bool:
        return True  # needs only the restored image; which domains it acts on is loss.domains.wpl

    def forward(self, ctx: LossContext) -> torch.Tensor:
        logits = self.prompts.logits(ctx.restored)
        return -F.log_softmax(logits, dim=-1)[:, WEATHERS.index("clear")].mean()
