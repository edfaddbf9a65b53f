"""``fairweather`` command line: parse, load the config, call one stage function. Nothing else lives here.

Every subcommand takes ``--config`` (a shipped profile name or a YAML path) and dotted ``key=value``
overrides, e.g. ``fairweather label --config smoke label.concurrency=2 vlm.max_new_tokens=32``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from fairweather.contracts.errors import FairweatherError


@dataclass(frozen=True)
class Command:
    help: str
    #: ``"module:function"`` taking the config; ``None`` while the stage is still to be built.
    target: str | None
    #: For a stage still to be built: the issue that will deliver it.
    pending: str = ""


COMMANDS: dict[str, Command] = {
    "synth": Command(
        "Generate procedural paired data (input/target + manifest) and an unlabeled weather pool.",
        "fairweather.stages.synth:run_synth",
    ),
    "prefetch": Command(
        "Download (or, for tiny:* references, build) every model the config names into the local caches.",
        "fairweather.stages.prefetch:run_prefetch",
    ),
    "label": Command(
        "Rate (r_vlm, VLM-Vis) and describe every image of data.pool with the config's VLM on Ray Data actors; "
        "results go to the labels/errors/pool tables under data.tables. Resumable: images already labeled with "
        "the same vlm.model_id and prompt versions are skipped.",
        "fairweather.stages.label:run_label",
    ),
    "demo": Command(
        "Run what exists end to end on the config (default: the embedded smoke profile).",
        "fairweather.stages.demo:run_demo",
    ),
    "pseudolabel": Command(
        "Score restorations with MUSIQ/CLIP-IQA/Q-Align/r_vlm and update the pseudo-label database.",
        None,
        "the pseudo-labeling issue",
    ),
    "train": Command(
        "Train the restoration network with Ray Train (DDP) on labeled pairs and the pseudo-labeled real pool.",
        None,
        "the training issue",
    ),
    "sweep": Command(
        "Sweep the loss weights w1-w4 with Ray Tune; every trial is an MLflow run.", None, "the sweep issue"
    ),
    "evaluate": Command(
        "Score restored test sets with no-reference metrics (NIMA, MUSIQ, CLIP-IQA, LIQE, Q-Align, VLM-Vis).",
        None,
        "the evaluation issue",
    ),
    "pipeline": Command(
        "Run label -> pseudolabel -> train rounds -> evaluate as one job.", None, "the pipeline issue"
    ),
    "restore": Command(
        "Restore a folder of weather images with a trained checkpoint.", None, "the training issue"
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairweather",
        description="Semi-supervised adverse-weather image restoration on Ray (Xu et al. 2024; Tan et al. 2023).",
        epilog="Overrides use the YAML's dotted keys, e.g. loss.weights.ps=0.3 label.concurrency=2 data.pool=s3://bucket/pool.csv.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        text = command.help if command.target else f"{command.help} [not built yet: {command.pending}]"
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "--config",
            default="smoke",
            help="shipped profile name (smoke, paper) or a YAML file (default: smoke)",
        )
        p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    return parser


def _print_summary(summary: object) -> None:
    if summary is None:
        return
    data = dataclasses.asdict(summary) if dataclasses.is_dataclass(summary) else summary
    print(json.dumps(data, indent=2, default=str))


def run_command(name: str, config: str, overrides: Sequence[str]) -> object:
    """Load the config and call the subcommand's stage function; returns its summary."""
    from fairweather.contracts.config import load_config

    command = COMMANDS[name]
    cfg = load_config(config, overrides)
    if command.target is None:
        raise FairweatherError(f"'{name}' is not built yet: its stage arrives with {command.pending}")
    module, function = command.target.split(":")
    return getattr(importlib.import_module(module), function)(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        _print_summary(run_command(args.command, args.config, args.overrides))
    except (FairweatherError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        # Expected errors: one clear line, no traceback.
        print(f"fairweather {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


def run_job(command: str) -> None:
    """Entry point of ``jobs/<command>.py``: the subcommand with the job's own arguments, then exit."""
    sys.exit(main([command, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
