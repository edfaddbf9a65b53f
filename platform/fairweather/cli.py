"""``fairweather`` command line: parse, load the config, call one stage function. Nothing else lives here.

Every subcommand takes ``--config`` (a shipped profile name or a YAML path) and dotted ``key=value``
overrides, e.g. ``fairweather label --config smoke label.concurrency=2 vlm.max_new_tokens=32``;
``fairweather config show`` prints the resolved config. Expected errors are one line with exit code 2, Ctrl-C one
line with exit code 130.
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

from fairweather.contracts.config import FairweatherConfig, load_config, load_sweep, to_dict, to_yaml
from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.redact import redact
from fairweather.stages.infra.preflight import apply_weights_cache

#: Layouts of ``fairweather import-pairs`` (kept in step with ``fairweather.data.paired_folders.LAYOUTS`` by a test;
#: listed here so ``--help`` does not import the science packages).
LAYOUT_NAMES = ("generic", "ots", "outdoor_rain", "raindrop", "snow100k", "spa")


@dataclass(frozen=True)
class Command:
    help: str
    #: ``"module:function"`` taking the config (commands with arguments of their own are dispatched in ``main``).
    target: str


COMMANDS: dict[str, Command] = {
    "synth": Command(
        "Generate procedural paired data (input/ + target/ images, rows of the 'paired' table with train/val/test "
        "splits) and an unlabeled weather pool.",
        "fairweather.stages.synth.driver:run_synth",
    ),
    "prefetch": Command(
        "Download (or, for tiny:* references, build) every model the config names into the local caches.",
        "fairweather.stages.infra.prefetch:run_prefetch",
    ),
    "label": Command(
        "Rate (r_vlm, VLM-Vis) and describe every image of data.pool with the config's VLM on Ray Data actors; "
        "results go to the labels/errors/pool tables under data.tables. Resumable: images already labeled with "
        "the same vlm.model_id and prompt versions are skipped.",
        "fairweather.stages.label.driver:run_label",
    ),
    "demo": Command(
        "The whole platform on this machine, no cluster, tracking server or downloads needed: generate data, build "
        "the tiny models, run the pipeline (label -> initial pseudo-labels -> prompts -> training rounds -> "
        "evaluation report) and a 4-trial sweep on a private local Ray; prints input vs. restored PSNR/SSIM on the "
        "synthetic test split, the report's folder and the MLflow compare command. --pool DIR uses a folder of "
        "real photos as the unlabeled pool.",
        "fairweather.stages.pipeline.demo:run_demo",
    ),
    "pseudolabel": Command(
        "Restore every labeled pool image (the input itself, pseudo.init_checkpoints and pseudo.init_folders "
        "before round 1; --checkpoint's EMA teacher as ema@round-K), store the candidates as content-addressed "
        "PNGs, score them (pseudo.metrics, r_vlm when pseudo.use_vlm), combine by pseudo.combination and replace "
        "an image's pseudo-label only when a candidate beats it; every candidate stays in the pseudo_labels table. "
        "Resumable: candidates already in the lineage's history are skipped.",
        "fairweather.stages.pseudolabel.driver:run_pseudolabel",
    ),
    "train": Command(
        "Train the restoration network with Ray Train (DDP workers: train.scaling.*) on the 'paired' table's "
        "train split and the labeled real pool, in train.rounds rounds of train.iterations_per_round steps: the "
        "initial pseudo-labels first (pseudo.init), and after a round the new EMA teacher's restorations replace "
        "the pseudo-labels they beat (after every round with pseudo.iterate, else after round 1 only). MLflow: a "
        "parent run with every loss term, validation scores and images, each round's test scores and EMA model, "
        "and a child run per round with its pseudo-label statistics. The same command resumes an interrupted run "
        "at the right round and step; a changed config starts a new one (train.new_run=true forces one). Each "
        "round ends with input vs. EMA PSNR/SSIM on the test split per weather.",
        "fairweather.stages.train.rounds:run_rounds",
    ),
    "sweep": Command(
        "Ray Tune sweep of a sweep file (sweeps/*.yaml: the loss weights w1-w4, the learning rate, the ablation "
        "rows): every trial is `fairweather train` on its own config and an MLflow child run of the sweep's run; "
        "ASHA stops weak trials early; ends with the ranked trials, a plot and the MLflow compare URL. The same "
        "command resumes an interrupted sweep. --config replaces the sweep file's base profile.",
        "fairweather.stages.sweep.driver:run_sweep",
    ),
    "evaluate": Command(
        "Score the untouched inputs, evaluate.checkpoints and evaluate.baseline_folders on the same test images "
        "(evaluate.test_sets: paired:<split>, folders, manifests) with no-reference metrics (NIMA, MUSIQ, CLIP-IQA, "
        "LIQE, Q-Align, VLM-Vis) and PSNR/SSIM where targets exist, on Ray Data actors; per-image rows and "
        "per-weather means go to the metrics table, Paper A's tables (published rows quoted beside ours) to "
        "evaluate.report_dir and the MLflow run.",
        "fairweather.stages.evaluate.driver:run_evaluate",
    ),
    "pipeline": Command(
        "Paper A end to end on the config: label the pool -> initial pseudo-labels -> stage-1 weather prompts -> "
        "training rounds with pseudo-label updates -> evaluation report. A stage already finished on the same "
        "inputs and config (the 'pipeline' table) is skipped, so rerunning the same command after a crash "
        "continues where it stopped. One MLflow parent run with a child per stage.",
        "fairweather.stages.pipeline.driver:run_pipeline",
    ),
    "restore": Command(
        "Restore a folder (recursively) or one file of weather images with a trained checkpoint's EMA network: "
        "names, sizes, format and metadata kept, pixels upright, tiled at full resolution; files that cannot be "
        "decoded are reported and skipped.",
        "fairweather.stages.restore.driver:run_restore",
    ),
}


#: Printed under every subcommand's --help: where the config keys are listed.
CONFIG_KEYS_HELP = (
    "Every config key and its value: fairweather config show --config <profile or YAML> [key=value ...]. "
    "Overrides use the YAML's dotted keys, e.g. label.concurrency=2 data.pool=s3://bucket/pool.csv."
)


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default="smoke",
        help="shipped profile name (smoke, paper; a folder of that name in the current directory does not "
        "shadow it) or a YAML file (default: smoke)",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")


def _add_restore_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="a training checkpoint folder (state.pt) or a run's model.pt"
    )
    parser.add_argument("--input", required=True, help="a folder of images (recursive) or one image file")
    parser.add_argument("--output", required=True, help="folder for the results (never the input's folder)")
    parser.add_argument(
        "--device", default="auto", help="torch device (default auto: CUDA if present, else CPU)"
    )
    parser.add_argument(
        "--config",
        default=None,
        help="profile or YAML whose network must match the checkpoint's (default: the checkpoint's own config)",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides (model.tile=256)")


def _add_pseudolabel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        help="a training checkpoint folder (state.pt) or model.pt (default: the init candidates)",
    )
    parser.add_argument(
        "--round", type=int, default=None, help="round of the checkpoint's candidates (default: 1; init is 0)"
    )
    parser.add_argument(
        "--lineage",
        help="training run the pseudo-labels belong to (default: the name `fairweather train` uses)",
    )
    _add_config_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairweather",
        description="Semi-supervised adverse-weather image restoration on Ray (Xu et al. 2024; Tan et al. 2023).",
        epilog=CONFIG_KEYS_HELP,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command_parser = sub.add_parser(
            name, help=command.help, description=command.help, epilog=CONFIG_KEYS_HELP
        )
        adders = {"restore": _add_restore_arguments, "pseudolabel": _add_pseudolabel_arguments}
        adders.get(name, _add_config_arguments)(command_parser)
        if name == "sweep":
            command_parser.add_argument(
                "--sweep", required=True, help="the sweep file (e.g. sweeps/smoke.yaml)"
            )
            command_parser.set_defaults(config=None)  # None: the sweep file's own base profile
        if name == "demo":
            command_parser.add_argument(
                "--pool", help="a folder of real weather photos to use as the unlabeled pool"
            )
            command_parser.add_argument(
                "--sweep", help="the sweep file to run at the end (default: the checkout's sweeps/smoke.yaml)"
            )
            command_parser.add_argument("--no-sweep", action="store_true", help="skip the sweep")
        if name == "prefetch":
            command_parser.add_argument(
                "--cache",
                help="one folder for every weight (HF hub, torch hub, pyiqa, NIQE): runtime.weights_cache=DIR",
            )
    text = (
        "Add a folder of labeled pairs in a paper data set's layout (Outdoor-Rain, RainDrop, SPA, OTS, Snow100K, or "
        "generic input/ + target/) to the 'paired' table under data.tables, with train/val/test splits; "
        "`fairweather train` then trains on it with the generated pairs."
    )
    pairs = sub.add_parser("import-pairs", help=text, description=text, epilog=CONFIG_KEYS_HELP)
    pairs.add_argument("--folder", required=True, help="the data set's root folder (local path or URI)")
    pairs.add_argument("--layout", required=True, choices=sorted(LAYOUT_NAMES), help="the folder layout")
    pairs.add_argument(
        "--dataset", required=True, help="name recorded in the table (pair ids are <dataset>/<name>)"
    )
    pairs.add_argument("--weather", choices=("rain", "haze", "snow"), help="weather of a generic layout")
    _add_config_arguments(pairs)
    config = sub.add_parser("config", help="Inspect configs.", description="Inspect configs.")
    actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    text = "Print the resolved config (profile or YAML file + overrides, validated) as YAML."
    _add_config_arguments(actions.add_parser("show", help=text, description=text))
    return parser


def _print_summary(summary: object) -> None:
    if summary is None:
        return
    data = dataclasses.asdict(summary) if dataclasses.is_dataclass(summary) else summary
    print(json.dumps(redact(data), indent=2, default=str))


def run_stage(name: str, cfg: FairweatherConfig) -> object:
    """Call the subcommand's stage function on a loaded config; returns its summary."""
    module, function = COMMANDS[name].target.split(":")
    return getattr(importlib.import_module(module), function)(cfg)


def _interrupted(name: str, cfg: FairweatherConfig | None) -> str:
    """The one line printed on Ctrl-C: what was kept and how to resume."""
    if name == "restore":
        return "fairweather restore: interrupted; every result already written is complete (atomic writes)"
    if cfg is None:
        return f"fairweather {name}: interrupted before anything ran"
    kept = f"tables in {cfg.data.tables}, data in {cfg.synth.out}, runs in {cfg.runtime.runs_dir}"
    return (
        f"fairweather {name}: interrupted; finished outputs are kept ({kept}; every file and table part is "
        "written atomically); rerun the same command to resume"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        force=True,  # a second main() in one process (tests, notebooks) must not keep a stale stream
    )
    name = f"{args.command} {args.action}" if args.command == "config" else args.command
    cfg = None
    try:
        # restore without --config reads the config stored in its checkpoint.
        overrides = (
            [*args.overrides, f"runtime.weights_cache={args.cache}"]
            if getattr(args, "cache", None)
            else args.overrides
        )
        cfg = load_config(args.config, overrides) if args.config else None
        if cfg is not None:
            # Before any stage module imports a Hugging Face library (they read HF_HOME once, at import).
            apply_weights_cache(cfg)
        if args.command == "config":
            print(to_yaml(redact(to_dict(cfg))), end="")  # credentials masked: printed output is logged
        elif args.command == "restore":
            from fairweather.stages.restore.driver import run_restore

            _print_summary(
                run_restore(
                    args.checkpoint,
                    args.input,
                    args.output,
                    cfg,
                    config_source=f"--config {args.config}",
                    overrides=args.overrides,
                    device=args.device,
                )
            )
        elif args.command == "pseudolabel":
            from fairweather.stages.pseudolabel.driver import run_pseudolabel
            from fairweather.stages.train.driver import default_lineage

            round_index = args.round if args.round is not None else int(args.checkpoint is not None)
            lineage = args.lineage or default_lineage(cfg)
            _print_summary(
                run_pseudolabel(cfg, lineage=lineage, checkpoint=args.checkpoint, round_index=round_index)
            )
        elif args.command == "sweep":
            from fairweather.stages.sweep.driver import run_sweep

            sweep = load_sweep(args.sweep)
            if args.config:
                sweep = dataclasses.replace(sweep, base=args.config)
            else:
                apply_weights_cache(load_config(sweep.base, overrides))
            _print_summary(run_sweep(sweep, args.overrides))
        elif args.command == "demo":
            from fairweather.stages.pipeline.demo import SMOKE_SWEEP, run_demo

            sweep = None if args.no_sweep else (args.sweep or SMOKE_SWEEP)
            run_demo(cfg, base=args.config, overrides=args.overrides, pool=args.pool, sweep=sweep)
        elif args.command == "import-pairs":
            from fairweather.stages.synth.import_pairs import run_import_pairs

            _print_summary(
                run_import_pairs(cfg, args.folder, args.layout, args.dataset, weather=args.weather)
            )
        else:
            _print_summary(run_stage(args.command, cfg))
    except KeyboardInterrupt:
        print(_interrupted(name, cfg), file=sys.stderr)
        return 130  # the shell's code for "ended by SIGINT"
    except (FairweatherError, OSError) as err:
        # Expected errors (bad input or environment: missing, unreadable or misplaced files): one line.
        print(f"fairweather {name}: error: {err}", file=sys.stderr)
        return 2
    return 0


def run_job(command: str) -> None:
    """Entry point of ``jobs/<command>.py``: the subcommand with the job's own arguments, then exit."""
    sys.exit(main([command, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
