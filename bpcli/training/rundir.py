"""The run directory: the one place that knows the name of every file a run writes.

    runs/quickstart-20261202-120000/
        config.yaml                   the resolved config (every default filled in)
        metrics.csv, metrics.jsonl    one row per epoch
        layers.csv, layers.jsonl      one row per layer per epoch (diagnostics)
        summary.json                  how the run ended, best epoch, test metrics
        checkpoints/
            last.safetensors          the latest state, to resume from
            last.prev.safetensors     the one before it, in case `last` is damaged
            best.safetensors          the best epoch's weights
            epoch-0010.safetensors    every N epochs, if asked (the newest K kept)

Everyone else asks a RunDir for paths; nothing else spells these names.
"""

from __future__ import annotations

import time
from pathlib import Path

from bpcli.errors import CheckpointError
from bpcli.fileio import remove_orphans
from bpcli.training.checkpoint import SUFFIX


class RunDir:
    """Paths inside one run directory (which need not exist yet)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RunDir) and self.path == other.path

    # -- files ---------------------------------------------------------------------------------------

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def metrics_jsonl(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def layers_csv(self) -> Path:
        return self.path / "layers.csv"

    @property
    def layers_jsonl(self) -> Path:
        return self.path / "layers.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    # -- checkpoints ---------------------------------------------------------------------------------

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / f"last{SUFFIX}"

    @property
    def last_prev(self) -> Path:
        """The `last` before the newest one: the fallback when `last` is damaged."""
        return self.checkpoints / f"last.prev{SUFFIX}"

    @property
    def best(self) -> Path:
        return self.checkpoints / f"best{SUFFIX}"

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch-{epoch:04d}{SUFFIX}"

    def epoch_checkpoints(self) -> list[Path]:
        """The periodic checkpoints on disk, oldest first."""
        return sorted(self.checkpoints.glob(f"epoch-*{SUFFIX}"))

    def has_last(self) -> bool:
        return any(self.checkpoints.glob(f"last*{SUFFIX}"))

    # -- what a folder or a checkpoint is ------------------------------------------------------------

    def is_run(self) -> bool:
        """Made by bpcli train: it has the resolved config."""
        return self.config.is_file()

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunDir:
        """The run directory a checkpoint file sits in (…/RUN/checkpoints/NAME.safetensors)."""
        return cls(Path(checkpoint).parent.parent)

    def remove_orphans(self) -> list[Path]:
        """Temporary files a killed run left behind, in the folder and its checkpoints/, now deleted."""
        return remove_orphans(self.path) + remove_orphans(self.checkpoints)

    # -- making one ----------------------------------------------------------------------------------

    @classmethod
    def create(cls, parent: str | Path, name: str | None, config_stem: str) -> RunDir:
        """parent/<name>, or parent/<config stem>-<timestamp> (with -2, -3, ... if taken in the same second)."""
        parent = Path(parent)
        base = name or f"{config_stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            parent.mkdir(parents=True, exist_ok=True)
            for attempt in range(1, 1000):
                run = cls(parent / (base if attempt == 1 else f"{base}-{attempt}"))
                try:
                    run.path.mkdir()
                except FileExistsError:
                    if name:
                        raise CheckpointError(f"run directory {run} already exists; continue it with "
                                              f"--resume {run}, or choose another output.name") from None
                    continue
                run.checkpoints.mkdir()
                return run
        except OSError as error:
            raise CheckpointError(f"cannot create the run directory under {parent}: {error.strerror or error}") \
                from None
        raise CheckpointError(f"cannot find a free run directory name for {base} in {parent}")
