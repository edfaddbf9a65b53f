"""Training: schedule, optimiser, EMA teacher, scaling over Ray Train workers, cadence, checkpoints, resume.

One training loop serves ``fairweather train``, the rounds of the pseudo-label loop and every Tune trial; this
section is everything that loop reads besides the model and the loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from .loader import (
    AT_LEAST_ONE,
    LEARNING_RATE,
    NON_NEGATIVE,
    POSITIVE,
    UNIT_INTERVAL,
    FieldRangeError,
    Range,
    check_ranges,
)


@dataclass(frozen=True)
class ScalingConfig:
    """How many Ray Train workers (DDP ranks) and what each one holds. Not to be confused with data threads."""

    #: DDP ranks; one per GPU on a GPU cluster.
    num_workers: int = 1
    use_gpu: bool = False
    #: CPUs reserved per worker (also the torch thread count of a CPU worker).
    cpus_per_worker: float = 1.0
    #: Ray placement strategy of the workers: PACK fills a node first, SPREAD / STRICT_SPREAD one per node.
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    #: Accelerator type (e.g. "H100") a worker must run on; None: any.
    accelerator_type: str | None = None

    def __post_init__(self) -> None:
        check_ranges(self, num_workers=AT_LEAST_ONE, cpus_per_worker=POSITIVE)


@dataclass(frozen=True)
class CalibrationConfig:
    """The image-level colour calibration fitted at the end of every training job and stored in its final
    checkpoint (:mod:`fairweather.training.calibration`): what the network leaves of a photo's veil and tone
    (measured on 377 real pairs in docs/real-weather.md)."""

    enabled: bool = True
    #: Training pairs it is fitted on (the first by pair id of each dataset and weather in turn; each counts twice,
    #: with its clean target).
    max_pairs: int = 256
    #: Width of the RBF kernel on standardised features (larger: more local).
    gamma: float = 0.05
    #: Ridge regulariser on the kernel's diagonal (larger: smaller corrections, closer to none).
    ridge: float = 10.0
    #: Each pair also gives lighter degradations of itself, ``target + s * (input - target)`` for each strength
    #: ``s`` in (0, 1): a thinner veil by the scattering model, fainter streaks for additive rain. They teach the
    #: fit how much of the network's change to take back between a clear image and the pair's own weather.
    lighter: tuple[float, ...] = ()
    #: The calibration is told the weather the network is told: in its kernel, an example of another weather lies
    #: this much further (in standardised feature units) than one of the photo's own, so light rain's map is not
    #: drawn from a thin veil's. 0: the weather is not used. Photos of unknown weather always use the map fitted
    #: without it.
    weather_distance: float = 4.0

    def __post_init__(self) -> None:
        check_ranges(
            self, max_pairs=Range(2, None), gamma=POSITIVE, ridge=POSITIVE, weather_distance=NON_NEGATIVE
        )
        if any(not 0.0 < s < 1.0 for s in self.lighter):
            raise FieldRangeError("lighter", f"every strength must lie in (0, 1), got {self.lighter!r}")


@dataclass(frozen=True)
class WeatherRepeats:
    """How many times each weather's labeled pairs appear in a training epoch (``train.weather_repeats.rain=2``).

    A small network trained on an even mix learns the weather whose error is large and smooth first: haze's veil
    dominates the L1 loss, and the network learns to darken every image as if removing one, which costs light
    real rain (no veil). Measured with the smoke profile's network on real Rain100L pairs (docs/real-weather.md):
    400 steps on the rain pairs alone gain +1.4 dB, on rain and snow +1.2 dB, on the even mix of all three -0.8 dB.
    Repeats are whole numbers, so an epoch stays a fixed list that every rank shards the same way."""

    rain: int = 1
    haze: int = 1
    snow: int = 1

    def __post_init__(self) -> None:
        check_ranges(self, rain=AT_LEAST_ONE, haze=AT_LEAST_ONE, snow=AT_LEAST_ONE)

    def of(self, weather: str) -> int:
        """The repeats of ``weather`` (an imported pair of another weather label counts once)."""
        return asdict(self).get(weather, 1)


@dataclass(frozen=True)
class TrainConfig:
    #: Paper A: 4 rounds of mean-teacher training with a pseudo-label refresh between rounds.
    rounds: int = 4
    iterations_per_round: int = 40_000
    #: Labeled pairs per worker per step.
    batch_size: int = 8
    #: Real (unlabeled) images per worker per step; 0 trains on the pairs alone (L_sup only).
    real_batch_size: int = 8
    #: Probability that a training pair's input is its clean target instead (the network learns to leave clear
    #: content untouched). Without it, a network trained on synthetic weather alters light real rain: measured on
    #: real Rain100L pairs, 0.15 turned a loss of about -2 dB into a gain (docs/real-weather.md).
    clean_pair_fraction: float = 0.0
    #: Times each weather's pairs appear per epoch (:class:`WeatherRepeats`); the default mixes them as generated.
    weather_repeats: WeatherRepeats = field(default_factory=WeatherRepeats)
    #: Probability that a training image is shown to a weather-conditioned network (``model.nafnet.weather_film``)
    #: as of unknown weather, so that a photo restored without a weather gets a network trained for that case.
    weather_dropout: float = 0.0
    #: Square training crop; images smaller than this are padded by reflection first.
    crop_size: int = 256
    #: AdamW peak learning rate, reached after ``warmup_steps`` linear steps, then a cosine decay to
    #: ``lr * min_lr_ratio`` at the last step of the run. In (0, 1] (``loader.LEARNING_RATE``). A resumed run
    #: with a pinned ``run_name`` takes a changed value from the step it resumes at.
    lr: float = 2e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    min_lr_ratio: float = 0.01
    #: Gradient-norm clipping (0 disables).
    grad_clip: float = 1.0
    #: Decay of the EMA (mean-teacher) copy. The effective decay is ``min(ema_decay, (1 + s) / (10 + s))`` at step
    #: s, so a short run's teacher is not dominated by its random initialisation.
    ema_decay: float = 0.999
    #: bf16 autocast of the forward pass on CUDA (ignored on CPU).
    bf16: bool = True
    #: channels-last memory format for the network's weights and inputs, on CUDA and CPU alike: cuDNN's and
    #: oneDNN's convolutions run faster with it (the smoke NAFNet on 2 CPU cores: 1.23x the training steps/s,
    #: about 1.7x the restoring speed; docs/benchmarks.md).
    channels_last: bool = True
    #: Threads per worker that read, decode and crop images ahead of the step.
    loader_threads: int = 2
    #: Batches prepared ahead of the step per worker.
    prefetch_batches: int = 4
    #: Report losses (to MLflow, through the driver) every this many steps.
    log_every: int = 10
    #: Validate the EMA teacher and save a checkpoint every this many steps (and at the end).
    checkpoint_every: int = 500
    #: Checkpoints kept under the storage path (oldest deleted first).
    keep_checkpoints: int = 2
    #: Worker failures the run recovers from (restart from the last registered checkpoint) before it fails.
    max_failures: int = 3
    #: Synthetic ``val`` pairs scored at each validation (PSNR/SSIM of the EMA teacher); 0: all of them.
    val_images: int = 16
    #: Real labeled images scored with the weight-free no-reference PIQE at each validation (0 disables).
    val_real_images: int = 8
    #: Stage 1 (weather prompt learning, Paper A) runs before restoration when ``loss.weights.wpl`` > 0; this
    #: caps the images per weather it learns from.
    prompt_images_per_weather: int = 64
    #: A checkpoint (a folder or its ``state.pt`` / ``model.pt``, as ``fairweather restore`` takes) whose network
    #: and EMA teacher start the run at step 0, with a fresh optimizer and schedule: fine-tuning a trained restorer.
    #: A network built otherwise (``model.*``) is refused before training starts; a run that resumes from its own
    #: checkpoint never reads it. "": random initialisation.
    init_weights: str = ""
    #: Name of the run under ``runtime.storage_path``. None: ``train-<fingerprint of the config>``, so the same
    #: command resumes an interrupted run and a changed config starts a new one.
    run_name: str | None = None
    #: True starts a new run even when one with the same name exists (its name gets a time stamp).
    new_run: bool = False
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    def __post_init__(self) -> None:
        check_ranges(
            self,
            **dict.fromkeys(
                (
                    "rounds",
                    "iterations_per_round",
                    "batch_size",
                    "crop_size",
                    "log_every",
                    "checkpoint_every",
                ),
                AT_LEAST_ONE,
            ),
            **dict.fromkeys(("loader_threads", "prefetch_batches", "keep_checkpoints"), AT_LEAST_ONE),
            prompt_images_per_weather=AT_LEAST_ONE,
            **dict.fromkeys(
                ("real_batch_size", "warmup_steps", "val_images", "val_real_images", "max_failures"),
                NON_NEGATIVE,
            ),
            lr=LEARNING_RATE,
            weight_decay=NON_NEGATIVE,
            min_lr_ratio=UNIT_INTERVAL,
            clean_pair_fraction=UNIT_INTERVAL,
            weather_dropout=UNIT_INTERVAL,
            grad_clip=NON_NEGATIVE,
            ema_decay=Range(0, 1, high_open=True),
        )
        if self.crop_size % 8:
            # Every backbone pads to its own multiple anyway; 8 keeps the crops aligned with three down-samplings.
            raise FieldRangeError("crop_size", f"must be a multiple of 8, got {self.crop_size}")

    @property
    def total_steps(self) -> int:
        return self.rounds * self.iterations_per_round
