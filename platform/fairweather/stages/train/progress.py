"""The training steps' progress bar on the driver's console, fed by Ray Train's step reports.

Ray Train runs its callbacks in the controller actor, which Ray places on the driver's node: :class:`FeedProgress`
writes the step of every report (``train.log_every``) to a small file there, and the driver's bar
(:func:`~fairweather.stages.infra.console.step_feed`) follows it. Off (no callback at all) where no bar is shown:
not on a terminal, with ``-v``, inside a sweep's trials.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import ray.train

from fairweather.stages.infra.console import feed, step_feed


class FeedProgress(ray.train.UserCallback):
    """Ray Train callback: each report's step to the driver's progress bar."""

    def __init__(self, path: str):
        self.path = path

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: ray.train.Checkpoint | None
    ) -> None:
        if metrics and "step" in metrics[0]:
            feed(self.path, int(metrics[0]["step"]))


@contextlib.contextmanager
def train_progress(desc: str, until_step: int, done: int = 0) -> Iterator[list[ray.train.UserCallback]]:
    """A bar from step ``done`` to ``until_step``; yields the callbacks to hand the trainer (none without a bar)."""
    with step_feed(until_step, desc, unit="step", initial=done) as path:
        yield [FeedProgress(path)] if path else []
