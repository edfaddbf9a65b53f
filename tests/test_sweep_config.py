"""Sweep files: the shipped ones load, the ablation is Paper A's seven rows, bad input is one error before any trial."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fairweather.contracts.config import ConfigError, load_sweep
from fairweather.contracts.config.sweep import VARIANT_KEY, as_override, trial_overrides
from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.metric_logger import NullLogger
from fairweather.stages.sweep.trial import TrialJob, trial_status

from .conftest import REPO
from .train_fixtures import tiny_overrides

#: Paper A's ablation table: (row, w1..w4 on?, use_vlm, init, iterate); cumulative, w4 comes with L_ps.
ABLATION = [
    ("L_sup only", (0, 0, 0, 0), False, False, False),
    ("+L_ps", (1, 0, 0, 1), False, False, False),
    ("+r_vlm", (1, 0, 0, 1), True, False, False),
    ("+init", (1, 0, 0, 1), True, True, False),
    ("+L_wpl", (1, 1, 0, 1), True, True, False),
    ("+L_sem", (1, 1, 1, 1), True, True, False),
    ("+iter", (1, 1, 1, 1), True, True, True),
]


def job(sweep, overrides=()) -> TrialJob:
    return TrialJob(sweep, tuple(overrides), "sweep-test", NullLogger())


def test_the_ablation_expands_to_exactly_the_seven_rows_of_the_table():
    sweep = load_sweep(REPO / "sweeps" / "ablation.yaml")
    assert [v.name for v in sweep.variants] == [row[0] for row in ABLATION] and not sweep.params
    paper = (0.5, 0.2, 0.05, 0.2)  # the paper profile's w1..w4
    for name, on, use_vlm, init, iterate in ABLATION:
        cfg = job(sweep).config({VARIANT_KEY: name}, "t")
        w = cfg.loss.weights
        assert (w.ps, w.wpl, w.sem, w.feat) == tuple(p * o for p, o in zip(paper, on, strict=True)), name
        assert (cfg.pseudo.use_vlm, cfg.pseudo.init, cfg.pseudo.iterate) == (use_vlm, init, iterate), name
        assert cfg.train.run_name == "sweep-test-t"  # each trial its own training run and lineage
    # `--config smoke` runs the same rows on the smoke profile: every row names its weights, so they mean the same.
    smoke = job(dataclasses.replace(sweep, base="smoke")).config({VARIANT_KEY: "+L_wpl"}, "t")
    assert (smoke.profile, smoke.loss.weights.wpl, smoke.loss.weights.sem) == ("smoke", 0.2, 0.0)


def test_shipped_sweeps_load_and_centre_on_the_paper_weights():
    paper = load_sweep(REPO / "sweeps" / "paper.yaml")
    assert paper.name == "paper" and paper.base == "paper" and paper.scheduler.kind == "asha"
    for key, centre in {"ps": 0.5, "wpl": 0.2, "sem": 0.05, "feat": 0.2}.items():
        space = paper.params[f"loss.weights.{key}"]
        assert space.distribution == "loguniform" and space.low * 10 == pytest.approx(centre)
    smoke = load_sweep(REPO / "sweeps" / "smoke.yaml")
    assert smoke.num_samples == 2 and smoke.metric == "val/psnr/overall"


def test_overrides_apply_fixed_then_command_line_then_variant_then_sampled(tmp_path):
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(
        "metric: val/psnr/overall\nmode: max\nfixed: {train.lr: 0.1, train.rounds: 2}\n"
        "params:\n  train.lr: {distribution: grid, values: [0.0000001, 0.2]}\n"
        "variants:\n  - {name: a, overrides: {train.rounds: 3}}\n"
    )
    sweep = load_sweep(sweep_file)
    assert sweep.name == "s"  # the file's name
    overrides = trial_overrides(sweep, {VARIANT_KEY: "a", "train.lr": 1e-7}, ["train.rounds=5"])
    assert overrides == [
        "train.lr=0.1",
        "train.rounds=2",
        "train.rounds=5",
        "train.rounds=3",
        "train.lr=1.0e-07",
    ]
    cfg = job(sweep).config({VARIANT_KEY: "a", "train.lr": 1e-7}, "t")
    assert cfg.train.lr == 1e-7 and cfg.train.rounds == 3
    assert as_override("pseudo.use_vlm", False) == "pseudo.use_vlm=false"
    assert sweep.fingerprint("smoke", []) != sweep.fingerprint("smoke", ["train.rounds=5"])


@pytest.mark.parametrize(
    "body, message",
    [
        ("params:\n  loss.weights.w1: {distribution: uniform, low: 0, high: 1}", "w1"),
        ("params:\n  loss.weights.ps: {distribution: uniform, low: 1, high: 1}", "low < high"),
        ("params:\n  loss.weights.ps: {distribution: loguniform, low: 0, high: 1}", "low > 0"),
        ("params:\n  loss.weights.ps: {distribution: grid, values: []}", "needs 'values'"),
        ("params:\n  loss.weights.ps: {distribution: normal, low: 0, high: 1}", "distribution"),
        ("fixed: {train.nope: 1}\nparams:\n  train.lr: {distribution: choice, values: [0.1]}", "nope"),
        ("variants:\n  - {name: a, overrides: {pseudo.nope: true}}", "pseudo.nope"),
        ("variants:\n  - {name: a}\n  - {name: a}", "unique"),
        ("num_samples: 2", "needs 'params' or 'variants'"),
        (
            "scheduler: {kind: asha, reduction_factor: 1}\nparams:\n  train.lr: {distribution: grid, values: [1]}",
            "> 1",
        ),
    ],
)
def test_bad_sweep_files_are_refused_at_load_naming_the_problem(tmp_path, body, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"metric: val/psnr/overall\nmode: max\n{body}\n")
    with pytest.raises(ConfigError, match=message):
        load_sweep(path)


def _sweep(tmp_path: Path, body: str):
    path = tmp_path / "s.yaml"
    path.write_text(body)
    return load_sweep(path)


def test_a_value_out_of_the_configs_range_or_an_unreported_metric_fails_before_any_trial(
    tmp_path, model_cache
):
    from fairweather.stages.sweep.driver import run_sweep

    overrides = tiny_overrides(tmp_path, model_cache)
    negative = _sweep(
        tmp_path,
        "metric: val/psnr/overall\nmode: max\nparams:\n  loss.weights.ps: {distribution: uniform, low: -1, high: 1}\n",
    )
    with pytest.raises(ConfigError, match=r"loss.weights.ps.*must be >= 0"):
        run_sweep(negative, overrides)
    unreported = _sweep(
        tmp_path,
        "metric: val/musiq/overall\nmode: max\nparams:\n  train.lr: {distribution: grid, values: [0.1]}\n",
    )
    with pytest.raises(FairweatherError, match=r"'val/musiq/overall' is never reported.*val/psnr/overall"):
        run_sweep(unreported, overrides)
    real_off = _sweep(
        tmp_path,
        "metric: val_real/piqe/overall\nmode: min\nparams:\n  train.lr: {distribution: grid, values: [0.1]}\n",
    )
    with pytest.raises(FairweatherError, match="never reported"):
        run_sweep(real_off, overrides)  # the tiny config scores no real images (train.val_real_images=0)
    late = _sweep(
        tmp_path,
        "metric: val/psnr/overall\nmode: max\nscheduler: {kind: asha, grace_period: 100}\n"
        "params:\n  train.lr: {distribution: grid, values: [0.1]}\n",
    )
    with pytest.raises(FairweatherError, match="grace_period=100 steps is longer than a trial's training"):
        run_sweep(late, overrides)
    assert not (tmp_path / "runs" / "mlflow.db").exists() and not (tmp_path / "train").exists()


def test_a_trial_bigger_than_the_cluster_fails_before_any_trial(local_ray, tmp_path, model_cache):
    from fairweather.stages.sweep.driver import run_sweep

    sweep = _sweep(
        tmp_path,
        "metric: val/psnr/overall\nmode: max\nparams:\n  train.lr: {distribution: grid, values: [0.1]}\n",
    )
    overrides = tiny_overrides(
        tmp_path, model_cache, **{"train.scaling.num_workers": 3, "runtime.num_cpus": 4}
    )
    with pytest.raises(FairweatherError, match=r"a trial trains on 3 CPUs.*the cluster has 2 CPUs"):
        run_sweep(sweep, overrides)
    assert not (tmp_path / "runs" / "mlflow.db").exists()


def test_trial_status_from_the_last_result():
    assert trial_status({"step": 12}, False, 12) == "completed"
    assert trial_status({"step": 3}, False, 12) == "stopped_early"
    assert trial_status({}, True, 12) == "failed"


def _sampled(alg, n: int) -> list[dict]:
    configs = []
    for _ in range(n):
        trial = alg.next_trial()
        configs.append(trial.config)
        alg.on_trial_complete(trial.trial_id)
    return configs


def _generator(sweep, seed: int):
    from ray.tune.experiment import Experiment

    from fairweather.stages.sweep.driver import param_space, search_algorithm

    alg = search_algorithm(dataclasses.replace(sweep, seed=seed), 1)
    space = param_space(sweep)
    alg.add_configurations(
        [Experiment("s", run=lambda config: None, config=space, num_samples=sweep.num_samples)]
    )
    return alg


def test_the_seed_samples_the_same_trials_and_a_resumed_sweep_goes_on_sampling_them():
    """Tune saves its sampler with the experiment (cloudpickle); with the sweep's seed, a sampler restored after two
    trials samples the two an uninterrupted sweep would have (unseeded, it drew from numpy's global state)."""
    from ray import cloudpickle

    from fairweather.stages.sweep.driver import search_algorithm

    # Four draws of the smoke sweep's space: two before the interruption, two after.
    sweep = dataclasses.replace(load_sweep(REPO / "sweeps" / "smoke.yaml"), num_samples=4)
    assert sweep.seed == 0 and load_sweep(REPO / "sweeps" / "paper.yaml").seed == 0
    n = sweep.num_samples
    uninterrupted = _sampled(_generator(sweep, 0), n)
    assert _sampled(_generator(sweep, 0), n) == uninterrupted
    assert _sampled(_generator(sweep, 1), n) != uninterrupted
    interrupted = _generator(sweep, 0)
    first = _sampled(interrupted, 2)
    state = cloudpickle.loads(cloudpickle.dumps(interrupted.get_state()))
    restored = search_algorithm(sweep, 1)
    restored.set_state(state)
    assert first + _sampled(restored, n - 2) == uninterrupted
    # The seed is part of the sweep: another seed is another sweep (its own experiment and parent run).
    assert sweep.fingerprint("smoke", []) != dataclasses.replace(sweep, seed=1).fingerprint("smoke", [])


def test_a_relative_base_config_is_made_absolute_and_a_profile_name_stays_a_name(tmp_path, monkeypatch):
    from fairweather.stages.sweep.driver import absolute_base

    sweep = load_sweep(REPO / "sweeps" / "smoke.yaml")
    assert absolute_base(sweep).base == "smoke"
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "base.yaml").write_text(
        (REPO / "platform/fairweather/profiles/smoke.yaml").read_text()
    )
    monkeypatch.chdir(tmp_path)
    assert absolute_base(dataclasses.replace(sweep, base="conf/base.yaml")).base == str(
        tmp_path / "conf/base.yaml"
    )


def test_a_trials_failure_reason_is_the_innermost_error_line_without_its_module_path():
    from fairweather.stages.sweep.driver import failure_reason

    text = (
        'ray::ImplicitFunc.train() (pid=1, ip=127.0.0.1)\n  File "x.py", line 3, in train\n'
        "ray.exceptions.RayTaskError(FairweatherError): ray::_train() (pid=2, ip=127.0.0.1)\n"
        '  File "rounds.py", line 9, in run_rounds\n'
        "fairweather.contracts.errors.FairweatherError: no labeled pairs under s3://k:secret@b/t: run synth\n"
    )
    assert (
        failure_reason(RuntimeError(text))
        == "FairweatherError: no labeled pairs under s3://***@b/t: run synth"
    )
    assert failure_reason(TimeoutError("took too long")) == "TimeoutError: took too long"
