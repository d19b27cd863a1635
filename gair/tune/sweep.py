"""Driver side of a sweep: build (or restore) the Tuner, run it, write and log the outputs.

``run_sweep(sweep)`` is what ``jobs/tune.py`` calls. The layout under
``<storage>/<sweep name>/``: ``tune/`` (Tune's experiment state: the resume key),
``trials/<sweep>-<trial id>/`` (each trial's Train checkpoints), ``output/`` (a copy of
the results table, best config and plots, also logged to the MLflow parent run).
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from gair import tracking
from gair.configs import ConfigError, load_config, to_dict
from gair.configs.train import PretrainConfig
from gair.configs.tune import SweepConfig
from gair.data import storage
from gair.tracking import sweep as tracking_sweep
from gair.train.trainer import prepare_data, resolve_paths
from gair.tune import report, space
from gair.tune.trial import TrialContext, run_trial


class SweepInterrupted(RuntimeError):
    """Tune stopped before every trial finished (SIGINT); the state is saved for a resume."""


@dataclass
class SweepResult:
    rows: list[report.TrialRow]
    best: report.TrialRow | None
    files: list[Path]
    table: str
    parent_run_id: str | None
    experiment_path: str


def load_base(sweep: SweepConfig) -> tuple[dict[str, Any], PretrainConfig]:
    """(the user's base config as a dict, as loaded), validated: the sweep needs validation."""
    base = load_config(PretrainConfig, sweep.base.config, sweep.base.overrides)
    if base.train.val_every < 1:
        raise ConfigError(
            "the sweep compares trials on validation metrics: set train.val_every > 0 in base.config or "
            "base.overrides (and data.val_manifest, unless the training data is synthetic)"
        )
    if sweep.asha.enabled and sweep.asha.grace_period < base.train.val_every:
        raise ConfigError(
            f"asha.grace_period ({sweep.asha.grace_period}) is shorter than train.val_every "
            f"({base.train.val_every}): ASHA would judge trials before their first validation"
        )
    return to_dict(base), base


def sweep_root(sweep: SweepConfig, base: PretrainConfig) -> str:
    root = sweep.run.storage_path or base.run.storage_path
    return root if storage.is_remote(root) else str(Path(root).resolve())


def prepare_base(sweep: SweepConfig, base: PretrainConfig, root: str) -> PretrainConfig:
    """Paths absolute, data prepared once for all trials (synthetic data with the most observations)."""
    resolved = resolve_paths(base)
    k_max = space.max_value(sweep, "data.obs_per_tile", resolved.data.obs_per_tile)
    prepared = prepare_data(dataclasses.replace(resolved, data=dataclasses.replace(resolved.data, obs_per_tile=k_max)))
    data = dataclasses.replace(
        resolved.data, train_manifest=prepared.data.train_manifest, val_manifest=prepared.data.val_manifest
    )
    exp = sweep.mlflow.experiment or base.mlflow.experiment
    return dataclasses.replace(resolved, data=data, mlflow=dataclasses.replace(resolved.mlflow, experiment=exp))


def derive_concurrency(sweep: SweepConfig, base: PretrainConfig) -> int:
    """Trials at once: as many as the cluster's CPUs (and GPUs) hold, unless configured."""
    if sweep.resources.max_concurrent_trials:
        return sweep.resources.max_concurrent_trials
    total = ray.cluster_resources()
    t, d = base.train, base.data
    # Workers, decode tasks, and the 1-CPU file listing/reading tasks of Ray Data.
    cpus = (
        sweep.resources.trial_cpus
        + t.num_workers * t.cpus_per_worker
        + d.num_decode_workers * d.num_cpus_per_decode
        + 1.0
    )
    n = math.floor(total.get("CPU", 0) / cpus + 1e-9)
    if t.use_gpu:
        n = min(n, math.floor(total.get("GPU", 0) / t.num_workers + 1e-9))
    return max(1, n)


def build_tune_config(sweep: SweepConfig, max_t: int, concurrency: int) -> Any:
    s, a = sweep.search, sweep.asha
    scheduler = (
        # stop_last_trials=False: a trial reaching max_t ends by itself (its trainer saves the
        # final checkpoint and cleans up) instead of being killed at its last report.
        ASHAScheduler(
            time_attr="step",
            max_t=max_t,
            grace_period=a.grace_period,
            reduction_factor=a.reduction_factor,
            stop_last_trials=False,
        )
        if a.enabled
        else FIFOScheduler()
    )
    search_alg = None
    if s.searcher == "random":
        search_alg = BasicVariantGenerator(random_state=s.seed)
    elif s.searcher == "optuna":
        search_alg = OptunaSearch(seed=s.seed)
    return tune.TuneConfig(
        metric=s.metric,
        mode=s.mode,
        search_alg=search_alg,
        scheduler=scheduler,
        num_samples=s.num_samples,
        max_concurrent_trials=concurrency,
    )


TRIAL_MEMORY_BYTES = 256 * 1024**2


def build_trainable(sweep: SweepConfig, context: TrialContext) -> Any:
    """The trial function with its resources: the trial itself only starts and waits on a trainer.

    Tune needs a non-empty request per trial; with ``resources.trial_cpus: 0`` a small
    memory reservation stands in, so whole CPUs stay free for Ray Data's 1-CPU read tasks.
    """
    cpus = sweep.resources.trial_cpus
    resources = {"CPU": cpus} if cpus > 0 else {"CPU": 0, "memory": TRIAL_MEMORY_BYTES}
    return tune.with_resources(tune.with_parameters(run_trial, context=context), resources)


class TrialLog(tune.Callback):
    """Tune callback printing one line per finished trial (a resumed sweep skips those)."""

    def __init__(self, metric: str) -> None:
        self.metric = metric

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        print(
            f"[sweep] trial {trial.trial_id} finished at step {last.get('step')}: "
            f"{self.metric}={last.get(self.metric)}",
            flush=True,
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"[sweep] trial {trial.trial_id} failed", flush=True)


def run_sweep(sweep: SweepConfig) -> SweepResult:
    """Run (or resume) the sweep; returns its rows, best trial and output files."""
    base_user, base = load_base(sweep)
    space.check_space(sweep, base_user)
    root = sweep_root(sweep, base)
    prepared = prepare_base(sweep, base, root)
    max_t = sweep.asha.max_t or base.train.max_steps

    parent = start_sweep_tracking(sweep, prepared)
    context = TrialContext(
        base=to_dict(prepared),
        sweep_name=sweep.run.name,
        trials_storage=storage.join(root, sweep.run.name, "trials"),
        experiment=prepared.mlflow.experiment,
        parent_run=parent,
    )
    # Reports without the metric (a checkpoint before the first validation) are fine: ASHA
    # skips them. And save the sweep state often: a killed driver loses at most that much.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "10")
    with tracking.closing_run(parent, killed_on=(SweepInterrupted, KeyboardInterrupt)):
        tuner, resumed = build_or_restore_tuner(sweep, base, context, root, max_t)
        print(f"{'resuming' if resumed else 'starting'} sweep {sweep.run.name}: {tuner_path(sweep, root)}", flush=True)
        grid, interrupted = fit_noting_interrupt(tuner)
        if interrupted:
            raise SweepInterrupted(f"sweep {sweep.run.name} was interrupted; rerun the same command to resume it")
        rows = report.rows_from_results(grid, sweep.search.metric, sweep.search.mode, max_t)
        opts = storage.S3Options.from_config(base.data)
        return finish(sweep, rows, base_user, root, parent, prepared.mlflow.experiment, opts)


def start_sweep_tracking(sweep: SweepConfig, prepared: PretrainConfig) -> tracking.RunHandle | None:
    """The sweep's parent MLflow run (resumed if it did not finish); None with ``mlflow.enabled`` off."""
    if not prepared.mlflow.enabled:
        return None
    uri = tracking.resolve_tracking_uri(prepared.mlflow.tracking_uri)
    params = {f"sweep.{k}": v for k, v in tracking.config_params(sweep).items()}
    params.update({f"base.{k}": v for k, v in tracking.config_params(prepared).items()})
    parent = tracking_sweep.start_or_resume_sweep_run(uri, prepared.mlflow.experiment, sweep.run.name, params)
    print(f"MLflow parent run {parent.run_id} at {parent.server}", flush=True)
    return parent


def fit_noting_interrupt(tuner: Any) -> tuple[Any, bool]:
    """``tuner.fit()``, and whether Ctrl-C (SIGINT) ended it early.

    On SIGINT Tune saves the state, stops the trials and returns normally (the trials then
    look finished). Its handler puts back the handler it replaced, so ours being back in
    place afterwards tells that it fired.
    """
    if threading.current_thread() is not threading.main_thread() or os.environ.get("TUNE_DISABLE_SIGINT_HANDLER"):
        return tuner.fit(), False

    def on_sigint(sig: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        grid = tuner.fit()
        return grid, signal.getsignal(signal.SIGINT) is on_sigint
    finally:
        signal.signal(signal.SIGINT, previous)


def tuner_path(sweep: SweepConfig, root: str) -> str:
    return storage.join(root, sweep.run.name, "tune")


def build_or_restore_tuner(
    sweep: SweepConfig, base: PretrainConfig, context: TrialContext, root: str, max_t: int
) -> tuple[Any, bool]:
    """A new Tuner, or the interrupted one of the same name and storage (finished trials kept)."""
    trainable = build_trainable(sweep, context)
    path = tuner_path(sweep, root)
    opts = storage.S3Options.from_config(base.data).resolved()  # the driver's view, for Tune's processes
    fs, fs_path = storage.resolve(path, opts) if storage.is_remote(path) else (None, path)
    if tune.Tuner.can_restore(fs_path, storage_filesystem=fs):
        restored = tune.Tuner.restore(fs_path, trainable, resume_errored=True, storage_filesystem=fs)
        return restored, True
    sweep_dir = storage.join(root, sweep.run.name)
    parent_fs, parent_path = storage.resolve(sweep_dir, opts) if storage.is_remote(sweep_dir) else (None, sweep_dir)
    run_config = tune.RunConfig(
        name="tune",
        storage_path=parent_path,
        storage_filesystem=parent_fs,
        callbacks=[TrialLog(sweep.search.metric)],
        failure_config=tune.FailureConfig(max_failures=0),
    )
    tuner = tune.Tuner(
        trainable,
        param_space=space.build_param_space(sweep),
        tune_config=build_tune_config(sweep, max_t, derive_concurrency(sweep, base)),
        run_config=run_config,
    )
    return tuner, False


def finish(
    sweep: SweepConfig,
    rows: list[report.TrialRow],
    base_user: dict[str, Any],
    root: str,
    parent: tracking.RunHandle | None,
    experiment: str,
    opts: storage.S3Options | None = None,
) -> SweepResult:
    """Close the child runs, write the outputs, copy them to storage and log them to the parent run."""
    if parent is not None:
        children = tracking_sweep.trial_runs(parent.tracking_uri, experiment, sweep.run.name)
        for row in rows:
            child = children.get(row.trial_id)
            if child is not None:
                row.mlflow_run_id = child.run_id
                tracking_sweep.close_trial_run(child, row.status, row.last)
    dims = sweep.space.dimensions()
    out_dir = Path(sweep.run.output_dir or Path("runs") / sweep.run.name).resolve()
    files, best, printed = report.write_outputs(
        rows,
        metric=sweep.search.metric,
        mode=sweep.search.mode,
        keys=list(dims),
        log_keys={k for k, d in dims.items() if d.log},
        base_user=base_user,
        sweep_name=sweep.run.name,
        out_dir=out_dir,
    )
    print(f"\nsweep {sweep.run.name}: {len(rows)} trials ({sweep.search.metric}, {sweep.search.mode})\n{printed}\n")
    if best is not None:
        print(f"best trial {best.trial_id}: {best.params} -> {out_dir / 'best_config.yaml'}", flush=True)
    copy_outputs(files, storage.join(root, sweep.run.name, "output"), opts)
    if parent is not None:
        for path in files:
            parent.log_artifact(path)
        metrics = {f"best_{sweep.search.metric}": best.last[sweep.search.metric]} if best else {}
        stopped = sum(r.status == "stopped_early" for r in rows)
        metrics.update(trials=len(rows), trials_stopped_early=stopped)
        parent.log_metrics(metrics)
        parent.set_tags({"gair.tune.best_trial": best.trial_id} if best else {})
    parent_id = parent.run_id if parent is not None else None
    return SweepResult(rows, best, files, printed, parent_id, tuner_path(sweep, root))


def copy_outputs(files: list[Path], target: str, opts: storage.S3Options | None = None) -> None:
    fs, path = storage.resolve(target, opts)
    fs.create_dir(path, recursive=True)
    for f in files:
        with fs.open_output_stream(f"{path}/{f.name}") as out:
            out.write(f.read_bytes())
