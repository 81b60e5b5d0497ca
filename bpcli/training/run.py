"""A training run on disk: its data, its run directory, resuming it, and its summary.

    train_run(cfg, config_name) -> summary

A run directory holds config.yaml (the resolved config), metrics.csv and
metrics.jsonl (one row per epoch), layers.csv and layers.jsonl (one row per
layer per epoch, from diagnostics.py), checkpoints/ (last, best, and every N epochs
if asked) and summary.json. `--resume` takes the run directory or one of its
checkpoints and continues where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import yaml

from bpcli.training.callbacks import LAST, PREVIOUS, CheckpointCallback, EarlyStopping, MetricsLogger
from bpcli.training.checkpoint import Checkpoint, load_checkpoint
from bpcli.data.catalog import load_dataset
from bpcli.training.diagnostics import LayerDiagnostics
from bpcli.errors import CheckpointError, ConfigError, DiskFullError, DivergedError, Interrupted
from bpcli.fileio import atomic_write_bytes, remove_orphans, write_error
from bpcli.nn.losses import LOSSES
from bpcli.data.preprocessing import Prepared, prepare
from bpcli.training.trainer import StopRequest, Trainer, build_parts, evaluate

# Config keys that may change when a run is resumed: they do not change what is computed.
RESUMABLE_CHANGES = ("training.epochs", "data.data_dir", "data.mirrors", "data.eval_batch_size",
                     "checkpoint.every", "checkpoint.keep", "output.dir", "output.name")


def prepare_data(cfg: dict, data_dir: str | None = None, on_progress=None) -> Prepared:
    """Load the configured dataset and turn it into the arrays the loss expects."""
    data = cfg["data"]
    dataset = load_dataset(data["dataset"], data_dir=data_dir or data.get("data_dir"), mirrors=data.get("mirrors"),
                           options=data.get("options"), seed=cfg["training"]["seed"], on_progress=on_progress)
    return prepare(dataset, LOSSES[cfg["loss"]["name"]].kind, val_fraction=data["val_fraction"],
                   seed=cfg["training"]["seed"], preprocess=data["preprocess"], dtype=cfg["model"]["dtype"])


def create_run_dir(cfg: dict, config_name: str) -> Path:
    """runs/<config>-<timestamp>/, with -2, -3, ... if another run took that name in the same second."""
    parent = Path(cfg["output"]["dir"])
    base = cfg["output"]["name"] or f"{Path(config_name).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 1000):
            run_dir = parent / (base if attempt == 1 else f"{base}-{attempt}")
            try:
                run_dir.mkdir()
            except FileExistsError:
                if cfg["output"]["name"]:
                    raise CheckpointError(f"run directory {run_dir} already exists; continue it with "
                                          f"--resume {run_dir}, or choose another output.name") from None
                continue
            (run_dir / "checkpoints").mkdir()
            return run_dir
    except OSError as error:
        raise CheckpointError(f"cannot create the run directory under {parent}: {error.strerror or error}") \
            from None
    raise CheckpointError(f"cannot find a free run directory name for {base} in {parent}")


def find_checkpoint(target: str | Path, on_warning=None) -> Checkpoint:
    """A checkpoint file, or a run directory's latest good one: `last`, else `last.prev` (with a warning)."""
    path = Path(target)
    if path.is_dir():
        path = path / "checkpoints" / LAST
    if path.name != LAST:
        return load_checkpoint(path)
    problems = []
    for candidate in (path, path.with_name(PREVIOUS)):
        try:
            checkpoint = load_checkpoint(candidate)
        except CheckpointError as error:
            problems.append(str(error) if candidate.exists() else f"no checkpoint at {candidate}")
            continue
        if problems and on_warning:
            on_warning(f"{problems[0]}; falling back to the previous checkpoint {candidate}")
        return checkpoint
    raise CheckpointError(f"no usable checkpoint to resume from: {'; '.join(problems)}")


def resume_point(target: str | Path, on_warning=None) -> tuple[Checkpoint | None, Path]:
    """(checkpoint, run directory) to continue from; no checkpoint if the run was stopped before its first save."""
    path = Path(target)
    folder = path / "checkpoints"
    if path.is_dir() and (path / "config.yaml").is_file() and not any(folder.glob("last*.safetensors")):
        if on_warning:
            on_warning(f"{path} has no checkpoint yet (stopped before the first save): starting it from the beginning")
        return None, path
    checkpoint = find_checkpoint(path, on_warning)
    return checkpoint, checkpoint.path.parent.parent


def write_run_file(path: Path, text: str) -> None:
    try:
        atomic_write_bytes(path, text.encode())
    except OSError as error:
        raise write_error(path, error) from None


def config_differences(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    """(key.path, old, new) for every value that differs between two resolved configs, lists item by item."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(old) + [k for k in new if k not in old]
        return [d for k in keys for d in config_differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in config_differences(a, b, f"{prefix}{i}.")]
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def check_resume_config(saved: dict, cfg: dict, force: bool) -> None:
    """Refuse to resume with a config that changes what is computed, unless forced."""
    changed = [d for d in config_differences(saved, cfg)
               if d[0] not in RESUMABLE_CHANGES and not d[0].startswith("diagnostics")]  # they only observe
    if changed and not force:
        lines = "; ".join(f"{path}: {old!r} in the checkpoint, {new!r} now" for path, old, new in changed)
        raise ConfigError(f"the config differs from the checkpoint's: {lines}. Resuming would not continue the "
                          f"same run; use --force to resume anyway (only {', '.join(RESUMABLE_CHANGES)} may "
                          "change freely)")


def train_run(cfg: dict, config_name: str, *, data_dir: str | None = None, resume: str | None = None,
              force: bool = False, callbacks=(), stop: StopRequest | None = None, on_progress=None,
              on_warning=None) -> dict:
    """Train from a resolved config (or resume a run); returns the summary also written to summary.json."""
    checkpoint, run_dir = resume_point(resume, on_warning) if resume else (None, None)
    if checkpoint:
        check_resume_config(checkpoint.meta["config"], cfg, force)
    data = prepare_data(cfg, data_dir, on_progress)
    if checkpoint and checkpoint.meta.get("val_hash") != data.val_hash:
        raise CheckpointError(f"the validation split differs from the one {checkpoint.path} was trained with "
                              f"(hash {checkpoint.meta.get('val_hash')} vs {data.val_hash}): different data?")
    run_dir = run_dir or create_run_dir(cfg, config_name)
    for orphan in remove_orphans(run_dir) + remove_orphans(run_dir / "checkpoints"):  # left by a killed run
        if on_warning:
            on_warning(f"removed {orphan}, a partial file left by an interrupted write")
    trainer = _build_trainer(cfg, data, run_dir, callbacks, stop, on_warning)
    if checkpoint:
        try:
            trainer.load_checkpoint(checkpoint)
        except CheckpointError as error:  # the weights or states do not fit the model this config builds
            if isinstance(error, DiskFullError):
                raise
            hint = ("; --force accepts a changed config, but not one whose model or optimizer cannot take this "
                    "checkpoint's state: start a new run (without --resume) instead") if force else ""
            raise CheckpointError(f"cannot resume from {checkpoint.path}: {error}{hint}") from None
    write_run_file(run_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    try:
        trainer.fit()
    except Interrupted as stopped:
        trainer.save_checkpoint(run_dir / "checkpoints" / LAST, "last", backup=run_dir / "checkpoints" / PREVIOUS)
        finish(trainer, run_dir, evaluate_test=False)
        stopped.run_dir = run_dir
        raise
    except DivergedError as error:
        trainer.stop_reason = f"diverged: {error}"
        finish(trainer, run_dir, evaluate_test=False)
        raise
    return finish(trainer, run_dir)


def _build_trainer(cfg, data: Prepared, run_dir: Path, callbacks, stop, on_warning=None) -> Trainer:
    training = cfg["training"]
    early = training.get("early_stopping") or {}
    tracker = EarlyStopping(training["monitor"], training["mode"], early.get("patience"),
                            early.get("min_delta", 0.0), early.get("restore_best", True))
    batch_size = min(cfg["data"]["batch_size"], len(data.x_train))
    parts = build_parts(cfg, data.input_dim, -(-len(data.x_train) // batch_size))
    checkpoints = CheckpointCallback(run_dir / "checkpoints", tracker, cfg["checkpoint"]["every"],
                                     cfg["checkpoint"]["keep"])
    diagnostics = cfg.get("diagnostics") or {}
    probe = (LayerDiagnostics(run_dir, diagnostics, cfg["optimizer"]["lr"], on_warning)
             if diagnostics.get("enabled") else None)
    # Diagnostics before the checkpoint, so that a checkpoint holds their state after the epoch's end.
    observers = [tracker, *([probe] if probe else []), checkpoints, MetricsLogger(run_dir), *callbacks]
    return Trainer(cfg, parts, data, observers, tracker, stop, diagnostics=probe)


def finish(trainer: Trainer, run_dir: Path, evaluate_test: bool = True) -> dict:
    """Restore the best weights if asked, evaluate on the test set, write summary.json."""
    tracker, data = trainer.tracker, trainer.data
    restored = tracker.restore(trainer)
    summary = {
        "run_dir": str(run_dir),
        "stopped_because": trainer.stop_reason,
        "epochs_run": trainer.epoch,
        "best_epoch": tracker.best_epoch or None,
        "monitor": {"metric": tracker.monitor, "mode": tracker.mode, "best": tracker.best},
        "final_weights": f"best (epoch {tracker.best_epoch})" if restored else "last",
        "seconds": round(sum(row["seconds"] for row in trainer.history), 3),
        "val_hash": data.val_hash,
        "data": data.info,
        "test": None,
        "warnings": trainer.diagnostics.warnings if trainer.diagnostics else [],
    }
    if evaluate_test and data.x_test is not None and np.isfinite(trainer.parts.model.theta).all():
        summary["test"] = evaluate(trainer.parts.model, trainer.parts.loss, data.x_test, data.y_test,
                                   trainer.eval_batch_size)
    write_run_file(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    for callback in trainer.callbacks:
        callback.on_train_end(trainer, summary)
    return summary
