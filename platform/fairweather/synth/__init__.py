"""Generated data: clean images (procedural scenes or real clean photos) with depth, and physically based haze,
rain and snow."""

from .clean import BUNDLED, CleanPhoto, CleanPhotoError, bundled_clean_photos, errors_table, load_clean_photos
from .dataset import SynthResult, clean_sources_of, generate
from .degrade import DEGRADATIONS, degrade, haze, rain, sample_params, snow
from .depth import PRIOR_SOURCE, depth_from_disparity, geometric_depth, photo_depth
from .paired import PHOTO_DATASET, SPLITS, PairRecord, paired_table, write_pairs
from .photo import degrade_photo, sample_photo_params, synthesize
from .photo_set import CleanPhotoShortage, generate_photo_pairs
from .scenes import procedural_scene

__all__ = [
    "BUNDLED",
    "DEGRADATIONS",
    "PHOTO_DATASET",
    "PRIOR_SOURCE",
    "SPLITS",
    "CleanPhoto",
    "CleanPhotoError",
    "CleanPhotoShortage",
    "PairRecord",
    "SynthResult",
    "bundled_clean_photos",
    "clean_sources_of",
    "degrade",
    "degrade_photo",
    "depth_from_disparity",
    "errors_table",
    "generate",
    "generate_photo_pairs",
    "geometric_depth",
    "haze",
    "load_clean_photos",
    "paired_table",
    "photo_depth",
    "procedural_scene",
    "rain",
    "sample_params",
    "sample_photo_params",
    "snow",
    "synthesize",
    "write_pairs",
]
