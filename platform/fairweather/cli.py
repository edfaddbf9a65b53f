"""``fairweather`` command line: parse, load the config, call one stage function. Nothing else lives here.

Every subcommand takes ``--config`` (a shipped profile name or a YAML path) and dotted ``key=value``
overrides, e.g. ``fairweather label --config smoke label.concurrency=2 vlm.max_new_tokens=32``;
``fairweather config show`` prints the resolved config.

One dispatch: :data:`COMMANDS` maps each subcommand to its help, its arguments and a small function that imports
its stage lazily (``fairweather --help`` stays fast: no torch, Ray or MLflow import) and calls it. Exit codes
(:data:`EXIT_CODES`, also printed by ``fairweather --help``): 0 done; 1 the job failed; 2 a user or input error,
one line; 130 Ctrl-C, one line.

The weights cache (``runtime.weights_cache``, ``prefetch --cache``) is set once, here, at process start: after the
config is loaded and before any stage module is imported, :func:`~fairweather.stages.infra.preflight.export_weights_cache`
points ``HF_HOME`` and ``TORCH_HOME`` below it (the libraries read them at import); stages never change it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import fairweather
from fairweather.contracts.config import FairweatherConfig, load_config, load_sweep, to_dict, to_yaml
from fairweather.contracts.errors import FairweatherError, JobFailedError
from fairweather.contracts.redact import redact, redact_text
from fairweather.contracts.vocab import CONDITIONED_WEATHER

#: Layouts of ``fairweather import-pairs`` (kept in step with ``fairweather.data.paired_folders.LAYOUTS`` by a test;
#: listed here so ``--help`` does not import the science packages).
LAYOUT_NAMES = ("generic", "ots", "outdoor_rain", "raindrop", "snow100k", "spa")

#: The exit codes of every subcommand (printed by ``fairweather --help``).
EXIT_CODES = (
    "Exit codes: 0 done; 1 the job ran and failed (one line; an unexpected error printed with its traceback); "
    "2 a user or input error (bad config, override, path or argument, missing "
    "weights, a run another live command holds), printed as one line; 130 interrupted (Ctrl-C), one line saying "
    "what was kept."
)

#: ``-v``: before the command or after it.
VERBOSE_HELP = (
    "stream the run log (<runs_dir>/logs/<command>-<timestamp>.log: Ray, library and debug output) to the console "
    "too"
)

#: Printed under every subcommand's --help: where the config keys are listed.
CONFIG_KEYS_HELP = (
    "Every config key and its value: fairweather config show --config <profile or YAML> [key=value ...]. "
    "Overrides use the YAML's dotted keys, e.g. label.concurrency=2 data.pool=s3://bucket/pool.csv."
)

#: ``(parsed arguments, loaded config or None) -> summary`` (its JSON goes to the run log unless None).
Run = Callable[[argparse.Namespace, "FairweatherConfig | None"], object]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit code 2) instead of the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_config_arguments(
    parser: argparse.ArgumentParser,
    overrides_action: type[argparse.Action] | None = None,
    *,
    default: str | None = "smoke",
    default_text: str = "smoke",
) -> None:
    parser.add_argument(
        "--config",
        default=default,
        help="shipped profile name (smoke, paper; a folder of that name in the current directory does not "
        f"shadow it) or a YAML file (default: {default_text})",
    )
    extra = {} if overrides_action is None else {"action": overrides_action}
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides", **extra)


def _add_restore_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a training run's folder (runs/<profile>/train/<run>: its newest checkpoint), one checkpoint_* "
        "folder in it (state.pt), or a run's model.pt",
    )
    parser.add_argument("--input", required=True, help="a folder of images (recursive) or one image file")
    parser.add_argument("--output", required=True, help="folder for the results (never the input's folder)")
    parser.add_argument(
        "--device", default="auto", help="torch device (default auto: CUDA if present, else CPU)"
    )
    parser.add_argument(
        "--weather",
        choices=CONDITIONED_WEATHER,
        default=None,
        help="the photos' weather, told to a weather-conditioned network (model.nafnet.weather_film); default: "
        "the weather a file's folder names (rain/, hazy/, snowy/, ...), else unknown",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="profile or YAML whose network must match the checkpoint's (default: the checkpoint's own config)",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides (model.tile=256)")


_PSEUDOLABEL_SHOW = (
    "`pseudolabel show IMAGE_ID [--lineage NAME]` prints one pool image's pseudo-label history instead (every "
    "round and source: candidate file, scores, guard values, combined score, decision, times; and where the "
    "current pseudo-label is); IMAGE_ID: its sha256 or a unique prefix, or the pool file's name or path; default "
    "lineage: the most recent one."
)


class _PseudolabelPositionals(argparse.Action):
    """``pseudolabel``'s positionals: a leading ``show IMAGE_ID`` selects the show action (``args.action``,
    ``args.image_id``); the rest are config overrides. A subparser would take every override for an action name."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[override]
        values = list(values or [])
        if values[:1] == ["show"]:
            # Without one the command says so; not here, where it would come before a --help after `show`.
            given = len(values) > 1 and "=" not in values[1]
            namespace.action, namespace.image_id = "show", values[1] if given else None
            values = values[1 + given :]
        namespace.overrides = values


def _add_pseudolabel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = f"{_PSEUDOLABEL_SHOW} {parser.epilog or ''}".rstrip()
    parser.usage = (
        "%(prog)s [-h] [-v] [--checkpoint CHECKPOINT] [--round ROUND] [--lineage LINEAGE] [--config CONFIG] "
        "[key=value ...]\n       %(prog)s show IMAGE_ID [--lineage LINEAGE] [--config CONFIG] [key=value ...]"
    )
    parser.add_argument(
        "--checkpoint",
        help="a training run's folder (its newest checkpoint), one checkpoint_* folder in it (state.pt), or a "
        "model.pt (default: the init candidates)",
    )
    parser.add_argument(
        "--round", type=int, default=None, help="round of the checkpoint's candidates (default: 1; init is 0)"
    )
    parser.add_argument(
        "--lineage",
        help="training run the pseudo-labels belong to (default: the name `fairweather train` uses; "
        "show: the most recent lineage holding the image)",
    )
    _add_config_arguments(parser, _PseudolabelPositionals)
    parser.set_defaults(action=None, image_id=None)


def _add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    # None: the sweep file's own base profile
    _add_config_arguments(parser, default=None, default_text="the sweep file's `base`")
    parser.add_argument("--sweep", required=True, help="the sweep file (e.g. sweeps/smoke.yaml)")


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config_arguments(parser)
    parser.add_argument("--pool", help="a folder of real weather photos to use as the unlabeled pool")
    parser.add_argument(
        "--sweep", help="the sweep file to run at the end (default: the checkout's sweeps/smoke.yaml)"
    )
    parser.add_argument("--no-sweep", action="store_true", help="skip the sweep")


def _add_prefetch_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config_arguments(parser)
    parser.add_argument(
        "--cache",
        help="one folder for every weight (HF hub, torch hub, pyiqa, NIQE): runtime.weights_cache=DIR",
    )


def _add_import_pairs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--folder", required=True, help="the data set's root folder (local path or URI)")
    parser.add_argument(
        "--layout",
        required=True,
        choices=sorted(LAYOUT_NAMES),
        help="the folder layout; generic reads input/+target/, inputcrop/+cleancrop/, rain/+norain/, "
        "rainy/+clean/, hazy/+GT/ or clear/, SOTS names (0001_0.8_0.2 -> 0001) and name suffixes "
        "(35_outdoor_hazy -> 35_outdoor_GT, 1rain -> 1ground_truth) in one folder or two",
    )
    parser.add_argument(
        "--dataset",
        required=True,
        help="name recorded in the table (pair ids are <dataset>/<name>; evaluate.test_sets can then pick "
        "paired:<dataset>:test)",
    )
    parser.add_argument("--weather", choices=("rain", "haze", "snow"), help="weather of a generic layout")
    parser.add_argument(
        "--split",
        choices=("train", "val", "test"),
        help="put every pair in this split. Default: a folder above the input folder whose name holds a "
        "train/training, val/valid/validation or test/testing word (test/, test_a/, Rain100L-testset/) "
        "gives the set's own split (its train part lends synth.val_fraction of its pairs to val); without "
        "one, a hash of the target's path splits the pairs by synth.val_fraction/synth.test_fraction",
    )
    _add_config_arguments(parser)


_SHOW = "Print the resolved config (profile or YAML file + overrides, validated) as YAML."


def _add_config_actions(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help=_SHOW, description=_SHOW)
    _add_verbose(show)
    _add_config_arguments(show)


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """``-v`` where a person adds it, after the command too, without resetting one given before it."""
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)


# The commands: each imports its stage when it runs, so `fairweather --help` imports no torch, Ray or MLflow.


def _synth(args: argparse.Namespace, cfg: FairweatherConfig) -> object:
    from fairweather.stages.synth.driver import run_synth

    return run_synth(cfg)


def _prefetch(args: argparse.Namespace, cfg: FairweatherConfig) -> object:
    from fairweather.stages.infra.prefetch import run_prefetch

    return run_prefetch(cfg)


def _label(args: argparse.Namespace, cfg: FairweatherConfig) -> object:
    from fairweather.stages.label.driver import run_label

    return run_label(cfg)


def _demo(args: argparse.Namespace, cfg: FairweatherConfig) -> object:
    from fairweather.stages.pipeline.demo import SMOKE_SWEEP, run_demo

    sweep = None if args.no_sweep else (args.sweep or SMOKE_SWEEP)
    run_demo(cfg, base=args.config, overrides=args.overrides, pool=args.pool, sweep=sweep)
    return None  # the demo prints its own summary


def _pseudolabel(args: argparse.Namespace, cfg: FairweatherConfig) -> object:
    if args.action == "show":
        if args.image_id is None:
            raise FairweatherError(
                "pseudolabel show needs an IMAGE_ID (its sha256 or a unique prefix, or the pool file's name or path)"
            )
        if args.checkpoint is not None or args.round is not None:
            raise FairweatherError(
                "pseudolabel show reads the pseudo_labels table: --checkpoint/--round do not apply"
            )
        from fairweather.contracts.tables import TableStore
        from fairweather.stages.infra.console import say
        from fairweather.stages.pseudolabel.audit import history_text

        say(history_text(TableStore(cfg.data.tables), args.image_id, args.lineage))
        return None
    from fairweather.stages.pseudolabel.driver import run_pseudolabel
    from fairweather.stages.train.driver import default_lineage

    round_index = args.round if args.round is not None else int(args.checkpoint is not None)
    lineage = args.lineage or default_lineage(cfg)
    return run_pseudolabel(cfg, lineage=lineage, checkpoint=args.checkpoint, round_index=round_index)


def _train(args: argparse.Namespace, cfg: FairweatherConfig) -> object:
    from fairweather.stages.train.rounds import run_rounds

    return run_rounds(cfg)


def _sweep(args: argparse.Namespace, cfg: FairweatherConfig | None) -> object:
    sweep = load_sweep(args.sweep)
    if args.config:
        sweep = dataclasses.replace(sweep, base=args.config)
    else:  # the sweep file's base profile decides the weights cache
        _export_weights_cache(load_config(sweep.base, args.overrides))
    from fairweather.stages.sweep.driver import run_sweep

    return run_sweep(sweep, args.overrides)


def _evaluate(args: argparse.Namespace, cfg: FairweatherConfig) -> object:
    from fairweather.stages.evaluate.driver import run_evaluate

    return run_evaluate(cfg)


def _pipeline(args: argparse.Namespace, cfg: FairweatherConfig) -> object:
    from fairweather.stages.pipeline.driver import run_pipeline

    return run_pipeline(cfg)


def _restore(args: argparse.Namespace, cfg: FairweatherConfig | None) -> object:
    from fairweather.stages.restore.driver import run_restore

    return run_restore(
        args.checkpoint,
        args.input,
        args.output,
        cfg,  # None without --config: the checkpoint's own config
        config_source=f"--config {args.config}",
        overrides=args.overrides,
        device=args.device,
        weather=args.weather,
    )


def _import_pairs(args: argparse.Namespace, cfg: FairweatherConfig) -> object:
    from fairweather.stages.synth.import_pairs import run_import_pairs

    return run_import_pairs(
        cfg, args.folder, args.layout, args.dataset, weather=args.weather, split=args.split
    )


def _config(args: argparse.Namespace, cfg: FairweatherConfig) -> object:
    print(to_yaml(redact(to_dict(cfg))), end="")  # credentials masked: printed output is logged
    return None


@dataclass(frozen=True)
class Command:
    help: str
    #: Imports the command's stage and calls it (see :data:`Run`).
    run: Run
    #: Adds the command's arguments to its parser.
    arguments: Callable[[argparse.ArgumentParser], None] = _add_config_arguments


COMMANDS: dict[str, Command] = {
    "synth": Command(
        "Generate paired data (input/ + target/ images, rows of the 'paired' table with train/val/test splits) "
        "and an unlabeled weather pool: physically based rain, haze and snow on real clean photos "
        "(synth.clean=bundled: the photos shipped with the package, the smoke profile's choice; or a folder, glob "
        "or manifest), or on procedural scenes when synth.clean is unset. Each row records its clean source, the "
        "degradation's parameters and where its depth came from.",
        _synth,
    ),
    "prefetch": Command(
        "Download (or, for tiny:* references, build) every model the config names into the local caches.",
        _prefetch,
        _add_prefetch_arguments,
    ),
    "label": Command(
        "Rate (r_vlm, VLM-Vis) and describe every image of data.pool with the config's VLM on Ray Data actors; "
        "results go to the labels/errors/pool tables under data.tables. Resumable: images already labeled with "
        "the same vlm.model_id and prompt versions are skipped.",
        _label,
    ),
    "demo": Command(
        "The whole platform on this machine, no cluster, tracking server or downloads needed: generate data, build "
        "the tiny models, run the pipeline (label -> supervised warm-up -> initial pseudo-labels -> prompts -> "
        "training rounds -> evaluation report) and a 2-trial sweep on a private local Ray; prints input vs. "
        "restored PSNR/SSIM on the synthetic test split, the report's folder and the MLflow compare command. --pool DIR uses a folder of "
        "real photos as the unlabeled pool.",
        _demo,
        _add_demo_arguments,
    ),
    "pseudolabel": Command(
        "Restore every labeled pool image (the input itself, pseudo.init_checkpoints and pseudo.init_folders "
        "before round 1; --checkpoint's EMA teacher as ema@round-K), store the candidates as content-addressed "
        "PNGs, score them (pseudo.metrics, r_vlm when pseudo.use_vlm), combine by pseudo.combination and replace "
        "an image's pseudo-label only when a candidate beats it; every candidate stays in the pseudo_labels table. "
        "A candidate that fails a guard (pseudo.guards.*: colour shift, texture, tile grid and structure against "
        "the input) never wins, and a current label that fails guards tightened since it won gives way to the "
        "input when nothing else beats it. Resumable: candidates already in the lineage's history are skipped. "
        "`pseudolabel show IMAGE_ID` prints one image's history across rounds and sources.",
        _pseudolabel,
        _add_pseudolabel_arguments,
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
        _train,
    ),
    "sweep": Command(
        "Ray Tune sweep of a sweep file (sweeps/*.yaml: the loss weights w1-w4, the learning rate, the ablation "
        "rows): every trial is `fairweather train` on its own config and an MLflow child run of the sweep's run; "
        "ASHA stops weak trials early; ends with the ranked trials, a plot and the MLflow compare URL. The same "
        "command resumes an interrupted sweep. --config replaces the sweep file's base profile.",
        _sweep,
        _add_sweep_arguments,
    ),
    "evaluate": Command(
        "Score the untouched inputs, evaluate.checkpoints and evaluate.baseline_folders on the same test images "
        "(evaluate.test_sets: paired:<split>, folders, manifests) with no-reference metrics (NIMA, MUSIQ, CLIP-IQA, "
        "LIQE, Q-Align, VLM-Vis) and PSNR/SSIM where targets exist, on Ray Data actors; per-image rows and "
        "per-weather means go to the metrics table, Paper A's tables (published rows quoted beside ours) to "
        "evaluate.report_dir and the MLflow run.",
        _evaluate,
    ),
    "pipeline": Command(
        "Paper A end to end on the config: label the pool -> supervised warm-up (pseudo.warmup_steps > 0: the "
        "init's restorer) -> initial pseudo-labels -> stage-1 weather prompts -> "
        "training rounds with pseudo-label updates -> evaluation report. A stage already finished on the same "
        "inputs and config (the 'pipeline' table) is skipped, so rerunning the same command after a crash "
        "continues where it stopped. One MLflow parent run with a child per stage.",
        _pipeline,
    ),
    "restore": Command(
        "Restore a folder (recursively) or one file of weather images with a trained checkpoint's EMA network: "
        "names, sizes, format and metadata kept, pixels upright, tiled at full resolution; files that cannot be "
        "decoded are reported and skipped.",
        _restore,
        _add_restore_arguments,
    ),
    "import-pairs": Command(
        "Add a folder of labeled pairs in a paper data set's layout (Outdoor-Rain, RainDrop, SPA, OTS, Snow100K, "
        "or generic: input/ + target/ and the other common folder and name pairs) to the 'paired' table under "
        "data.tables, with train/val/test splits (--split, else the folder names, else a hash); `fairweather "
        "train` then trains on it with the generated pairs. Links out of the folder are followed with "
        "data.follow_links_out=true.",
        _import_pairs,
        _add_import_pairs_arguments,
    ),
    "config": Command(
        "Inspect configs: `config show` prints the resolved config.", _config, _add_config_actions
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fairweather",
        description="Semi-supervised adverse-weather image restoration on Ray (Xu et al. 2024; Tan et al. 2023).",
        epilog=f"{CONFIG_KEYS_HELP} {EXIT_CODES}",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    parser.add_argument("--version", action="version", version=f"fairweather {fairweather.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command_parser = sub.add_parser(
            name, help=command.help, description=command.help, epilog=f"{CONFIG_KEYS_HELP} {EXIT_CODES}"
        )
        _add_verbose(command_parser)
        command.arguments(command_parser)
    return parser


def _log_summary(summary: object) -> None:
    """The stage's summary as JSON, secrets redacted, into the run log (with no run log, on the console with -v):
    every stage prints the lines a person reads itself."""
    if summary is None:
        return
    data = dataclasses.asdict(summary) if dataclasses.is_dataclass(summary) else summary
    logging.getLogger("fairweather.cli").info("summary:\n%s", json.dumps(redact(data), indent=2, default=str))


def _export_weights_cache(cfg: FairweatherConfig) -> None:
    """Point this process's weight caches at ``runtime.weights_cache``: once, before any stage is imported."""
    from fairweather.stages.infra.preflight import export_weights_cache

    export_weights_cache(cfg.runtime.weights_cache)


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


def _runs_dir(args: argparse.Namespace, cfg: FairweatherConfig | None) -> str | None:
    """Where the command's run log goes (``<runs_dir>/logs``); None: no run log (``config show``, ``restore``
    without ``--config``)."""
    if args.command == "config":
        return None
    if cfg is not None:
        return cfg.runtime.runs_dir
    if args.command == "sweep":  # the sweep file's base profile
        return load_config(args.config or load_sweep(args.sweep).base, args.overrides).runtime.runs_dir
    return None


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when below it (shorter on the console), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns its exit code (:data:`EXIT_CODES`).

    The console shows the stages' lines, progress bars, our warnings and the summary; everything else goes to the
    run log ``<runs_dir>/logs/<command>-<timestamp>.log`` named at the start and the end (``-v`` streams it too):
    :mod:`fairweather.stages.infra.console`.
    """
    args = build_parser().parse_args(argv)
    name = f"{args.command} {args.action}" if args.command == "config" else args.command
    from fairweather.stages.infra.console import close_run_log, say, setup_run_log

    cfg = None
    log_path: Path | None = None
    fallback: logging.Handler | None = None
    start = time.perf_counter()
    try:
        cache = getattr(args, "cache", None)
        overrides = [*args.overrides, f"runtime.weights_cache={cache}"] if cache else args.overrides
        # restore and sweep without --config: the checkpoint's or the sweep file's own config.
        cfg = load_config(args.config, overrides) if args.config else None
        runs_dir = _runs_dir(args, cfg)
        if runs_dir is not None:
            # An unusable runs folder leaves the console as it is: the stage's own checks name the config key.
            with contextlib.suppress(OSError):
                log_path = setup_run_log(runs_dir, args.command, verbose=args.verbose)
        if log_path is not None:
            say(
                f"fairweather {name}: run log {_shown(log_path)}"
                + ("" if args.verbose else " (-v shows it here)")
            )
        else:  # log records on stderr, for this command only (a later one in the process must not reuse it)
            fallback = logging.StreamHandler(sys.stderr)
            fallback.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            level = logging.getLogger().level
            logging.getLogger().addHandler(fallback)
            # What needs action only (a file skipped, a fallback taken); -v adds the rest, the summary's JSON too.
            logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.WARNING)
        if cfg is not None:
            _export_weights_cache(cfg)
        from fairweather.stages.infra.runtime import private_ray_on_loopback

        # Before any stage imports Ray: a private local Ray then listens on 127.0.0.1 only.
        with private_ray_on_loopback(cfg.runtime if cfg is not None else None):
            command = COMMANDS[args.command]
            _log_summary(command.run(args, cfg))
        code = 0
    except KeyboardInterrupt:
        say(_interrupted(name, cfg), err=True)
        code = 130  # the shell's code for "ended by SIGINT"
    except JobFailedError as err:
        say(f"fairweather {name}: failed: {err}", err=True)
        code = 1
    except (FairweatherError, OSError) as err:
        # Expected errors (bad input or environment: missing, unreadable or misplaced files): one line.
        say(f"fairweather {name}: error: {err}", err=True)
        code = 2
    except (
        Exception
    ) as err:  # a bug or a crash: keep the traceback, then one line with the exit code's meaning
        say(traceback.format_exc().rstrip(), err=True)
        line = f"fairweather {name}: failed: {type(err).__name__}: {err}".splitlines()[0]
        say(redact_text(line), err=True)
        code = 1
    finally:
        if fallback is not None:
            logging.getLogger().removeHandler(fallback)
            logging.getLogger().setLevel(level)
        if log_path is not None:
            minutes, seconds = divmod(round(time.perf_counter() - start), 60)
            took = f"{minutes} min {seconds} s" if minutes else f"{seconds} s"
            with contextlib.suppress(Exception):
                say(
                    f"fairweather {name}: {'done' if code == 0 else 'ended'} in {took}; run log {_shown(log_path)}"
                )
            close_run_log()
    return code


def run_job(command: str) -> None:
    """Entry point of ``jobs/<command>.py``: the subcommand with the job's own arguments, then exit."""
    sys.exit(main([command, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
