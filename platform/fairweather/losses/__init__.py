"""Paper A's losses (L_sup, L_ps, L_wpl, L_sem, L_feat), Tan et al.'s CLIP-SRD, and their weighted sum."""

from .composite import CompositeLoss, LossOutput, build_composite_loss
from .context import LossContext, LossTerm
from .depth_feature import DepthFeatureLoss
from .pixel import PixelLoss, PseudoLabelLoss, SupervisedLoss
from .semantic import SemanticLoss, TextEmbeddingCache
from .srd import CLIPSoftResidualDistillation
from .weather_prompts import WEATHERS, WeatherPromptLoss, WeatherPrompts, fit_weather_prompts

__all__ = [
    "WEATHERS",
    "CLIPSoftResidualDistillation",
    "CompositeLoss",
    "DepthFeatureLoss",
    "LossContext",
    "LossOutput",
    "LossTerm",
    "PixelLoss",
    "PseudoLabelLoss",
    "SemanticLoss",
    "SupervisedLoss",
    "TextEmbeddingCache",
    "WeatherPromptLoss",
    "WeatherPrompts",
    "build_composite_loss",
    "fit_weather_prompts",
]
