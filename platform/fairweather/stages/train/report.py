"""What the training driver does around the trainer: stage-1 prompts, the logging callback, the final test score.

Everything here runs on the driver's node (the callback inside Ray Train's controller, which Ray pins there), so
the embedded MLflow store has one writer; the final scoring runs as one Ray task on a GPU when training uses GPUs,
through the evaluation's scoring path, so ``fairweather evaluate`` reports the same numbers for the checkpoint.
"""

from __future__ import annotations

import io
import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch

from fairweather.contracts.config import FairweatherConfig, to_dict, to_yaml
from fairweather.contracts.io import atomic_write_bytes, read_bytes
from fairweather.contracts.metric_logger import MetricLogger
from fairweather.contracts.redact import redact, redact_text
from fairweather.stages.evaluate.driver import score_checkpoint_here
from fairweather.stages.evaluate.io import INPUT_METHOD
from fairweather.stages.infra.console import say
from fairweather.stages.infra.tracking import logged_steps
from fairweather.stages.train.worker import GRID_FILE
from fairweather.training.prompt_stage import learn_prompt_context, weather_examples
from fairweather.training.restorer import load_restorer
from fairweather.training.setup import load_encoders
from fairweather.training.state import load_state, save_model_artifact
from fairweather.training.validate import PAIR_METRICS

log = logging.getLogger(__name__)

#: Name of the stage-1 prompt context file beside the run's checkpoints.
PROMPTS_FILE = "weather_prompts.pt"
#: Tag of a run resumed with changed training settings: ``after step <n>: key: old -> new; ...``.
RESUME_TAG = "fairweather.resume_changes"


class ReportToLogger(ray.train.UserCallback):
    """Ray Train callback (runs in the controller): rank 0's metrics of every report, and each checkpoint's
    validation grid, go to the run's logger.

    A resumed run replays the steps between its last checkpoint and the point where it stopped; those were logged
    already. The steps the run holds per metric are read once, when the callback is made (before the trainer
    starts; :func:`~fairweather.stages.infra.tracking.logged_steps`), and a metric is logged only at a later step,
    so every step of a curve has one value.
    """

    def __init__(self, logger: MetricLogger):
        self.logger = logger
        self.logged: dict[str, int] = logged_steps(logger)

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: ray.train.Checkpoint | None
    ):
        reported = metrics[0]
        step = int(reported["step"])
        fresh = {
            k: float(v)
            for k, v in reported.items()
            if isinstance(v, int | float) and k != "step" and step > self.logged.get(k, -1)
        }
        if not fresh:
            return  # a replayed step: logged by the process that first trained it
        self.logger.log_metrics(fresh, step=step)
        self.logged.update(dict.fromkeys(fresh, step))
        if checkpoint is None:
            return
        with checkpoint.as_directory() as folder, tempfile.TemporaryDirectory() as out:
            grid = Path(folder) / GRID_FILE
            if grid.exists():
                named = Path(out) / f"step-{step:07d}.png"
                shutil.copyfile(grid, named)
                self.logger.log_artifact(named, "validation")


def learn_prompts(cfg: FairweatherConfig, rows: dict[str, list[dict]], run_folder: str, logger: MetricLogger):
    """Stage 1 (weather prompts) once per run: reuse ``<run>/weather_prompts.pt`` when a rerun finds it.

    Returns the context ``(4, M, D)``. Runs on the driver: it is a few hundred CLIP image embeddings and a small
    optimisation of the prompt vectors only.
    """
    path = f"{run_folder}/{PROMPTS_FILE}"
    try:
        return torch.load(io.BytesIO(read_bytes(path)), weights_only=True)
    except OSError:
        pass  # first run of this name
    clip, _ = load_encoders(cfg, torch.device("cpu"), depth=False)
    examples = weather_examples(
        rows["train"], rows["real"], cfg.train.prompt_images_per_weather, cfg.runtime.seed
    )
    context, history = learn_prompt_context(cfg, clip, examples)
    for step, value in enumerate(history):
        logger.log_metrics({"stage1/prompt_loss": value}, step=step)
    buffer = io.BytesIO()
    torch.save(context, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    say(
        f"train: stage 1 learned the weather prompts on {len(examples)} images (loss {history[0]:.3f} -> {history[-1]:.3f})"
    )
    return context


def _score_test(
    cfg: FairweatherConfig, checkpoint: ray.train.Checkpoint, rows: list[dict]
) -> dict[str, float]:
    """The EMA teacher of ``checkpoint`` and the untouched input on ``rows``, scored exactly as ``fairweather
    evaluate`` scores them (:func:`~fairweather.stages.evaluate.driver.score_checkpoint_here`):
    ``{"test/<metric>/<weather>", "test/input_<metric>/<weather>": mean}`` for PSNR/SSIM."""
    device = torch.device("cuda" if cfg.train.scaling.use_gpu and torch.cuda.is_available() else "cpu")
    torch.set_num_threads(max(1, int(cfg.train.scaling.cpus_per_worker)))
    with checkpoint.as_directory() as folder:
        restorer = load_restorer(folder, cfg, source="the training config", device=str(device))
    means = score_checkpoint_here(cfg, restorer, rows, metrics=PAIR_METRICS, device=device)
    return {
        f"test/{'input_' if r.method == INPUT_METHOD else ''}{r.metric}/{r.weather}": r.value
        for r in means.itertuples()
    }


def evaluate_checkpoint(
    cfg: FairweatherConfig, checkpoint: ray.train.Checkpoint, rows: list[dict], logger: MetricLogger
) -> dict[str, dict[str, float]]:
    """Score the final checkpoint on the ``test`` split (a Ray task, on a GPU when training used them), log the
    numbers and the model (teacher + student weights and the config) to ``logger``; ``{weather: {metric: value}}``."""
    if not rows:
        log.warning("the 'paired' table has no test split: nothing to score")
        return {}
    scaling = cfg.train.scaling
    task = ray.remote(num_cpus=scaling.cpus_per_worker, num_gpus=1 if scaling.use_gpu else 0)(_score_test)
    metrics = ray.get(task.remote(cfg, checkpoint, rows))
    with checkpoint.as_directory() as folder, tempfile.TemporaryDirectory() as out:
        state = load_state(folder)
        steps = int(state["step"])
        # No credentials in artifacts: the model's config and config.yaml are masked (a checkpoint written before
        # checkpoints were masked is masked here too).
        model = save_model_artifact(state, out)
        (Path(out) / "config.yaml").write_text(to_yaml(redact(to_dict(cfg))))
        logger.log_artifact(model, "model")
        logger.log_artifact(Path(out) / "config.yaml", "model")
    logger.log_metrics(metrics, step=steps)
    table: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():  # "test/<metric>/<weather>"
        _, metric, weather = key.split("/")
        table.setdefault(weather, {})[metric] = value
    return table


def print_test_table(run_name: str, checkpoint: str, table: dict[str, dict[str, float]]) -> None:
    """Input vs. EMA teacher on the test split, on the console in two lines (the checkpoint's URI masked:
    ``s3://key:secret@bucket/...``): overall PSNR and SSIM, and the PSNR gain per weather."""
    say(f"train: run {run_name}, final checkpoint {redact_text(checkpoint)}")
    if not table:
        return
    overall = table.get("overall", {})
    line = "  test split, input -> EMA"
    if overall:
        line += f": PSNR {overall['input_psnr']:.2f} -> {overall['psnr']:.2f} dB"
        line += f" ({overall['psnr'] - overall['input_psnr']:+.2f})"
        if not math.isnan(overall.get("ssim", math.nan)):
            line += f", SSIM {overall['input_ssim']:.4f} -> {overall['ssim']:.4f}"
    gains = [f"{w} {table[w]['psnr'] - table[w]['input_psnr']:+.2f}" for w in sorted(table) if w != "overall"]
    say(line + (f"; PSNR gain per weather: {', '.join(gains)}" if gains else ""))
