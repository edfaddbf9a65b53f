"""The final test-split score of a training run: the last checkpoint's EMA teacher and the input, scored through
the evaluation's scoring path, so ``fairweather evaluate`` reports the same numbers for the checkpoint; then logged,
with the model, and printed. A CPU run scores in the driver's process, a GPU run in a Ray task on a GPU."""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path

import ray
import ray.train
import torch

from fairweather.contracts.config import FairweatherConfig, to_dict, to_yaml
from fairweather.contracts.metric_logger import MetricLogger
from fairweather.contracts.redact import redact, redact_text
from fairweather.stages.evaluate.driver import score_checkpoint_here
from fairweather.stages.evaluate.io import INPUT_METHOD
from fairweather.stages.infra.console import say
from fairweather.training.restorer import load_restorer
from fairweather.training.state import load_state, save_model_artifact
from fairweather.training.validate import PAIR_METRICS

log = logging.getLogger(__name__)


def _score_test(
    cfg: FairweatherConfig, checkpoint: ray.train.Checkpoint, rows: list[dict]
) -> dict[str, float]:
    """The EMA teacher of ``checkpoint`` and the untouched input on ``rows``, scored exactly as ``fairweather
    evaluate`` scores them (:func:`~fairweather.stages.evaluate.driver.score_checkpoint_here`):
    ``{"test/<metric>/<weather>", "test/input_<metric>/<weather>": mean}`` for PSNR/SSIM."""
    device = torch.device("cuda" if cfg.train.scaling.use_gpu and torch.cuda.is_available() else "cpu")
    threads = torch.get_num_threads()  # the driver's own, when it scores in-process
    torch.set_num_threads(max(1, int(cfg.train.scaling.cpus_per_worker)))
    try:
        with checkpoint.as_directory() as folder:
            restorer = load_restorer(folder, cfg, source="the training config", device=str(device))
        means = score_checkpoint_here(cfg, restorer, rows, metrics=PAIR_METRICS, device=device)
    finally:
        torch.set_num_threads(threads)
    return {
        f"test/{'input_' if r.method == INPUT_METHOD else ''}{r.metric}/{r.weather}": r.value
        for r in means.itertuples()
    }


def evaluate_checkpoint(
    cfg: FairweatherConfig, checkpoint: ray.train.Checkpoint, rows: list[dict], logger: MetricLogger
) -> dict[str, dict[str, float]]:
    """Score the final checkpoint on the ``test`` split (on a GPU when training used them), log the numbers and
    the model (teacher + student weights and the config) to ``logger``; ``{weather: {metric: value}}``."""
    if not rows:
        log.warning("the 'paired' table has no test split: nothing to score")
        return {}
    scaling = cfg.train.scaling
    if scaling.use_gpu:  # the driver's node may have no GPU: a task that holds one, as a worker did
        task = ray.remote(num_cpus=scaling.cpus_per_worker, num_gpus=1)(_score_test)
        metrics = ray.get(task.remote(cfg, checkpoint, rows))
    else:
        # Here, not in a task: the workers' CPUs are free once fit returns, but a task asking for them again waits
        # behind whatever takes them first (a sweep's next trial: up to minutes, seen on 2 CPUs), and its fresh
        # process imports torch and the scoring code again (3-5 s a run).
        metrics = _score_test(cfg, checkpoint, rows)
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
