"""A training run on disk: its data, its run directory, resuming it, and its summary.

    train_run(config, config_name) -> summary

The run directory's files are named by RunDir (rundir.py). `--resume` takes
the run directory or one of its checkpoints and continues where it stopped.
Each session that trains a run adds itself to its run.json (record.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bpcli.config.loading import parse_config_text
from bpcli.config.yamlio import dump_yaml, read_yaml_file
from bpcli.config.sections import Config, resolve_data_paths, resolved_dict
from bpcli.data.catalog import DATASETS, load_dataset
from bpcli.data.preprocessing import Prepared, prepare
from bpcli.errors import BpcliError, CheckpointError, ConfigError, DiskFullError, Interrupted
from bpcli.fileio import write_file
from bpcli.data.tables import file_sha256
from bpcli.nn.losses import LOSSES
from bpcli.nn.metrics import metrics_for, predict_logits
from bpcli.optim.schedules import takes_from_config
from bpcli.training.callbacks import CheckpointCallback, EarlyStopping, MetricsLogger
from bpcli.training.checkpoint import Checkpoint, load_checkpoint
from bpcli.training.diagnostics import LayerDiagnostics
from bpcli.training.interrupts import StopRequest
from bpcli.training.record import Invocation, RunRecord
from bpcli.training.rundir import RunDir
from bpcli.training.step import build_parts
from bpcli.training.tensorboard import TensorBoardLogger, require_tensorboardx, write_hparams
from bpcli.training.trainer import Trainer

# Config keys that may change when a run is resumed: they do not change what is computed. training.epochs
# only extends or shortens the run, unless the schedule anneals over it (cosine): see check_resume_config.
RESUMABLE_CHANGES = ("training.epochs", "data.data_dir", "data.mirrors", "data.eval_batch_size",
                     "checkpoint.every", "checkpoint.keep", "output.dir", "output.name", "output.tensorboard")
# Keys that say where a run is kept and what is watched, not what is computed: left out when runs are told apart.
BOOKKEEPING = ("output.", "checkpoint.", "diagnostics.", "data.data_dir", "data.mirrors", "data.eval_batch_size")


def as_config(config: Config | dict) -> Config:
    """A Config, also from a resolved config dict (a checkpoint's, or one a program built)."""
    if isinstance(config, Config):
        return config
    return parse_config_text(dump_yaml(config), "<config>")


def prepare_data(config: Config | dict, data_dir: str | None = None, on_progress=None) -> Prepared:
    """Load the configured dataset and turn it into the arrays the loss expects.

    A dataset file (and a data.test file) is recorded with its SHA-256 in `info["files"]`,
    so resuming or evaluating on a file that changed since is refused (check_data_files).
    """
    config = as_config(config)
    data, seed = config.data, config.training.seed
    dataset = load_dataset(data.dataset, data_dir=data_dir or data.data_dir, mirrors=data.mirrors,
                           options=data.options, seed=seed, on_progress=on_progress, test=data.test)
    input_dim = int(np.prod(dataset.x_train.shape[1:]))
    prepared = prepare(dataset, LOSSES[config.loss.name].kind, val_fraction=data.val_fraction, seed=seed,
                       preprocess=data.preprocess, dtype=config.model.dtype,
                       outputs=config.model.output_width(input_dim),   # targets checked against the outputs
                       test_fraction=data.test_fraction, target_preprocess=data.target_preprocess,
                       missing=data.options.get("missing", "error"))
    files = data_files(config)
    if files:
        prepared.info["files"] = files
    return prepared


def data_files(config: Config) -> dict:
    """{"dataset": {"path", "sha256"}, "test": ...} for the data files a config reads (none for named sets)."""
    paths = {"dataset": config.data.dataset, "test": config.data.test}
    return {key: {"path": path, "sha256": file_sha256(path)} for key, path in paths.items()
            if path is not None and path not in DATASETS}


def check_data_files(recorded: dict | None, current: dict, error=CheckpointError) -> None:
    """Refuse data files whose bytes differ from those a run was trained on (their SHA-256)."""
    for key, now in current.items():
        then = (recorded or {}).get(key)
        if then and then.get("sha256") != now["sha256"]:
            raise error(f"{now['path']} changed since the run was trained on it (SHA-256 {then['sha256'][:16]}... "
                        f"then, {now['sha256'][:16]}... now): its splits and statistics would not be the run's; "
                        "restore the file, or train a new run on it")


def in_units(trainer: Trainer, data: Prepared) -> dict:
    """The summary, its test figures in the target's own units when the model learned standardized targets."""
    summary = trainer.summary
    if summary.get("test") and data.y_test_units is not None:
        model, loss = trainer.parts.model, trainer.parts.loss
        outputs = predict_logits(model, data.x_test, trainer.eval_batch_size)
        values = data.preprocessor.unscale_outputs(outputs).astype(np.float64)
        summary["test"] = {m.name: m.compute(values, data.y_test_units, loss) for m in metrics_for(loss.kind)}
    return summary


def find_checkpoint(run: RunDir, on_warning=None) -> Checkpoint:
    """A run directory's latest good checkpoint: `last`, else `last.prev` (with a warning)."""
    problems = []
    for candidate in (run.last, run.last_prev):
        try:
            checkpoint = load_checkpoint(candidate)
        except CheckpointError as error:
            problems.append(str(error) if candidate.exists() else f"no checkpoint at {candidate}")
            continue
        if problems and on_warning:
            on_warning(f"{problems[0]}; falling back to the previous checkpoint {candidate}")
        return checkpoint
    raise CheckpointError(f"no usable checkpoint to resume from: {'; '.join(problems)}")


def resume_point(target: str | Path, on_warning=None) -> tuple[Checkpoint | None, RunDir | None]:
    """(checkpoint, run directory) to continue from.

    A run directory: its latest good `last` (no checkpoint if the run stopped before its
    first save). A checkpoint file: it must be a `last` one (a best or periodic checkpoint
    holds other weights than the state it would continue: --init-from starts a new run from
    it); inside a run directory it continues that run, kept elsewhere it continues into a
    new run directory, so no file bpcli did not make is ever written or removed.
    """
    path = Path(target)
    if path.is_dir():
        run = RunDir(path)
        if not run.is_run():
            raise CheckpointError(f"{path} is not a run directory made by bpcli train (it has no config.yaml); "
                                  "give a run directory or a checkpoint file to --resume")
        if not run.checkpoints_are_its_own():
            raise CheckpointError(f"{run.checkpoints} leads outside {run} (to {run.checkpoints.resolve()}): "
                                  "resuming would write another run's checkpoints; make it a folder of its own")
        if not run.has_last():
            if on_warning:
                on_warning(f"{run} has no checkpoint yet (stopped before the first save): starting it from the "
                           "beginning")
            return None, run
        return find_checkpoint(run, on_warning), run
    run = RunDir.of_checkpoint(path)
    checkpoint = find_checkpoint(run, on_warning) if run and path.name == run.last.name else load_checkpoint(path)
    kind = checkpoint.meta.get("kind")
    if kind != "last":
        raise ConfigError(f"{path} is a {kind} checkpoint (epoch {checkpoint.meta['state']['epoch']}), not a run's "
                          f"last state: --resume continues a run from its last checkpoint (give the run directory"
                          f"{', ' + str(run) if run else ''}); to start a new run from these weights, use "
                          f"--init-from {path}")
    return checkpoint, run


def config_differences(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    """(key.path, old, new) for every value that differs between two resolved configs, lists item by item."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(old) + [k for k in new if k not in old]
        return [d for k in keys for d in config_differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in config_differences(a, b, f"{prefix}{i}.")]
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def differing_keys(configs: list[dict], ignore: tuple[str, ...] = BOOKKEEPING) -> list[str]:
    """The dotted keys whose values are not the same in every config (first seen first), bookkeeping left out."""
    keys: list[str] = []
    for other in configs[1:]:
        keys += [key for key, _, _ in config_differences(configs[0], other) if key not in keys]
    return [key for key in keys if not key.startswith(ignore)]


def config_value(config, key: str):
    """The value at a dotted key (`model.layers.0.units`) of a resolved config; None where there is none."""
    for part in key.split("."):
        if isinstance(config, dict):
            config = config.get(part)
        elif isinstance(config, list) and part.isdigit() and int(part) < len(config):
            config = config[int(part)]
        else:
            return None
    return config


def read_run_config(run: RunDir) -> dict | None:
    """A run directory's resolved config.yaml as data; None if it has none or it cannot be read."""
    try:
        data = read_yaml_file(run.config).data
    except BpcliError:
        return None
    return data if isinstance(data, dict) else None


# Data keys added after runs were made (issue 15), with the values that reproduce what those runs did.
LEGACY_DATA = {"test": None, "test_fraction": 0.0, "target_preprocess": "none"}


def with_legacy_keys(saved: dict) -> dict:
    """A checkpoint's config as today's keys would say it: data keys it predates at the values it ran with,
    and a relative data path as it was read then (from the working folder)."""
    data = {**LEGACY_DATA, **saved.get("data", {})}
    for key in ("dataset", "test"):
        value = data.get(key)
        if isinstance(value, str) and value not in DATASETS and not Path(value).is_absolute():
            data[key] = str(Path(value).absolute())
    return {**saved, "data": data}


def as_trained(config: Config, saved: dict) -> Config:
    """A config resuming a run from before data.target_preprocess: `auto` means what that run did (none)."""
    if "target_preprocess" in saved.get("data", {}) or config.data.target_preprocess != "auto":
        return config
    return config.model_copy(update={"data": config.data.model_copy(update={"target_preprocess": "none"})})


def check_resume_config(saved: dict, resolved: dict, force: bool) -> None:
    """Refuse to resume with a config that changes what is computed, unless forced.

    A changed training.epochs is refused too when the schedule takes the epochs (cosine
    anneals to min_lr at the last one): every remaining step would get another lr than the
    run was following. Keeping the old horizon instead would train the added epochs at
    min_lr (often 0), which is never what a longer run is for; with --force the schedule
    is stretched (or squeezed) to the new number of epochs from where the run stands.
    """
    horizon = any("epochs" in takes_from_config(c["schedule"]["name"]) for c in (saved, resolved))
    changed = [d for d in config_differences(saved, resolved)
               if (d[0] == "training.epochs" and horizon)
               or (d[0] not in RESUMABLE_CHANGES and not d[0].startswith("diagnostics"))]  # diagnostics observe
    if changed and not force:
        lines = "; ".join(f"{path}: {old!r} in the checkpoint, {new!r} now" + (
            f" (the {resolved['schedule']['name']} schedule anneals the lr over training.epochs, so the lr of "
            "every step from here on would change)" if path == "training.epochs" else "")
            for path, old, new in changed)
        raise ConfigError(f"the config differs from the checkpoint's: {lines}. Resuming would not continue the "
                          f"same run; use --force to resume anyway (only {', '.join(RESUMABLE_CHANGES)} may "
                          "change freely, training.epochs only with a schedule that does not depend on it)")


def train_run(config: Config | dict, config_name: str, *, data_dir: str | None = None, resume: str | None = None,
              init_from: str | None = None, force: bool = False, callbacks=(), stop: StopRequest | None = None,
              on_progress=None, on_warning=None, invocation: Invocation | None = None) -> dict:
    """Train from a config, resume a run, or start one from another's weights (init_from); returns the
    summary also written to summary.json. `invocation` (the command line, from the CLI) goes to run.json."""
    config = resolve_data_paths(as_config(config), Path.cwd())   # relative ones: from the working folder
    if config.output.tensorboard:
        require_tensorboardx()   # before anything is loaded or written
    checkpoint, run = resume_point(resume, on_warning) if resume else (None, None)
    if checkpoint:
        config = as_trained(config, checkpoint.meta["config"])
        check_resume_config(with_legacy_keys(checkpoint.meta["config"]), resolved_dict(config), force)
    config_text = dump_yaml(resolved_dict(config))   # YAML 1.2, as every config is read back
    start = load_checkpoint(init_from) if init_from else None
    data = prepare_data(config, data_dir, on_progress)
    if checkpoint:
        check_data_files(checkpoint.meta.get("data_info", {}).get("files"), data.info.get("files", {}))
    if checkpoint and checkpoint.meta.get("val_hash") != data.val_hash:
        raise CheckpointError(f"the validation split differs from the one {checkpoint.path} was trained with "
                              f"(hash {checkpoint.meta.get('val_hash')} vs {data.val_hash}): different data?")
    run, lock = open_run(run, config, config_name, config_text, on_warning)
    record = RunRecord(run, invocation, on_warning)
    try:
        return _train(config, data, run, checkpoint, start, force, callbacks, stop, on_warning, config_text, record)
    finally:
        RunDir.unlock(lock)


def _train(config: Config, data: Prepared, run: RunDir, checkpoint: Checkpoint | None, start: Checkpoint | None,
           force: bool, callbacks, stop, on_warning, config_text: str, record: RunRecord) -> dict:
    """Build the trainer, bring it to where the run stood, train, and write the summary however it ends."""
    trainer = build_trainer(config, data, run, callbacks, stop, on_warning)
    if checkpoint:
        resume_trainer(trainer, checkpoint, force)
    write_file(run.config, config_text, "config")   # a resumed run's, once its checkpoint was accepted
    record.start(trainer.epoch)
    if start:
        start_from_weights(trainer, start)
    if trainer.finished():   # a finished run resumed: nothing to train, only what is missing to repair
        trainer.stop_reason = trainer.stop_reason or f"completed {trainer.epochs} epochs"
        trainer.end(evaluate_test=True)
        end_session(run, record, in_units(trainer, data))
        return {"run_dir": str(run), **trainer.summary, "already_finished": True}
    try:
        trainer.fit()
    except Interrupted as stopped:
        stopped.run_dir = run.path
        raise
    finally:
        run.write_logs()   # the rows the loggers held back (rowlog.py), however the run ended
        if trainer.summary:
            end_session(run, record, in_units(trainer, data))
    if config.output.tensorboard:   # with the test metrics, which the callbacks have not seen
        write_hparams(run, trainer.config_record, trainer.summary)
    return {"run_dir": str(run), **trainer.summary}


def end_session(run: RunDir, record: RunRecord, summary: dict) -> None:
    write_summary(run, summary)
    record.finish(summary)


def open_run(run: RunDir | None, config: Config, config_name: str, config_text: str,
             on_warning=None) -> tuple[RunDir, int]:
    """(run directory, its lock): the resumed one (orphaned temporary files removed), or a new one (its
    config.yaml in). The lock is held until the caller releases it or the process ends."""
    if run is None:
        run = RunDir.create(config.output.dir, config.output.name, Path(config_name).stem, config_text)
        return run, run.lock()
    lock = run.lock()
    for orphan in run.remove_orphans():  # left by a killed run
        if on_warning:
            on_warning(f"removed {orphan}, a partial file left by an interrupted write")
    return run, lock


def start_from_weights(trainer: Trainer, checkpoint: Checkpoint) -> None:
    """Fine-tuning: the model starts from a checkpoint's weights; everything else starts afresh."""
    try:
        trainer.parts.model.load_state_dict(checkpoint.model_tensors)
    except CheckpointError as error:
        raise CheckpointError(f"cannot start from {checkpoint.path}: {error}; --init-from needs a checkpoint of "
                              "the same architecture") from None


def build_trainer(config: Config, data: Prepared, run: RunDir, callbacks=(), stop=None, on_warning=None) -> Trainer:
    """The Trainer with the run's own callbacks before the caller's (progress).

    Early stopping first (it decides whether an epoch is the last); diagnostics and
    the metric logs before the checkpoint, so that a checkpoint of epoch N holds their
    state after the epoch's end and the logs on disk hold row N.
    """
    early, diagnostics = config.training.early_stopping, config.diagnostics
    board = [TensorBoardLogger(run)] if config.output.tensorboard else []
    on_rows = board[0].add_layer_rows if board else None   # the layer rows go to TensorBoard too
    observers = [*([EarlyStopping(early.patience)] if early else []),
                 *([LayerDiagnostics(run, diagnostics.model_dump(), on_warning, on_rows)] if diagnostics.enabled
                   else []),
                 MetricsLogger(run, on_warning), *board,
                 CheckpointCallback(run, config.checkpoint.every, config.checkpoint.keep), *callbacks]
    parts = build_parts(config, data.input_dim, config.data.steps_per_epoch(len(data.x_train)))
    return Trainer(config, parts, data, observers, stop)


def resume_trainer(trainer: Trainer, checkpoint: Checkpoint, force: bool) -> None:
    try:
        trainer.load_checkpoint(checkpoint)
    except CheckpointError as error:  # the weights or states do not fit the model this config builds
        if isinstance(error, DiskFullError):
            raise
        hint = ("; --force accepts a changed config, but not one whose model or optimizer cannot take this "
                "checkpoint's state: start a new run (without --resume) instead") if force else ""
        raise CheckpointError(f"cannot resume from {checkpoint.path}: {error}{hint}") from None


def write_summary(run: RunDir, summary: dict) -> None:
    write_file(run.summary, json.dumps({"run_dir": str(run), **summary}, indent=2) + "\n")
