"""`bpcli time CONFIG`: per-layer forward/backward milliseconds and the epoch against its bare GEMMs."""

from __future__ import annotations

from typing import List, Optional

import typer

from bpcli.cli.common import console, print_json, user_errors


@user_errors
def time_(
    config: str = typer.Argument(..., help="YAML config file."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key (repeatable)."),
    synthetic: bool = typer.Option(False, help="Random data of the right shape instead of the dataset."),
    repeats: int = typer.Option(20, min=3, help="Timed repetitions; medians are reported."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Where a batch's time goes, on the config's own network and batch size (as `caffe time` does).

    Prints each layer's forward and backward milliseconds per batch, samples per
    second, and the epoch time next to the time of its bare matrix multiplies.

    Example: bpcli time configs/quickstart.yaml --synthetic
    """
    from bpcli.config.loading import load_config
    from bpcli.tools.timing import time_config

    typed = load_config(config, overrides or [])
    x, y, n, augment = timing_data(typed, synthetic)
    report = time_config(typed, x, y, n, repeats, augment)
    if as_json:
        return print_json(report)
    print_report(report, config)


def timing_data(config, synthetic: bool):
    """(x, y, training-set size, data.augment's Augmenter or None): a few real batches, or one random batch of
    the dataset's shape."""
    import numpy as np

    from bpcli.data.augment import Augmenter, augmenter_for
    from bpcli.data.catalog import DATASETS, IdxSource
    from bpcli.nn.losses import LOSSES
    from bpcli.training.run import prepare_data

    entry = DATASETS.get(config.data.dataset)
    if not (synthetic and isinstance(entry, IdxSource)):
        data = prepare_data(config)
        return data.x_train, data.y_train, len(data.x_train), augmenter_for(config.data.augment, data,
                                                                            config.training.seed)
    n = round(60000 * (1 - config.data.val_fraction)) if not entry.shipped else 4500
    rng = np.random.default_rng(0)
    x = rng.random((config.data.batch_size_for(n), int(np.prod(entry.image_shape))), dtype=config.model.dtype)
    kind = LOSSES[config.loss.name].kind
    units = getattr(config.model.layers[-1], "units", None) or len(entry.class_names)
    y = (rng.integers(0, units, len(x)) if kind == "multiclass" else
         rng.integers(0, 2, (len(x), units)).astype(x.dtype) if kind == "binary" else
         rng.standard_normal((len(x), units)).astype(x.dtype))
    size = x.shape[1]
    augment = Augmenter(config.data.augment, entry.image_shape, np.zeros(size), np.ones(size), config.training.seed) \
        if config.data.augment else None
    return x, y, n, augment


def print_report(r: dict, config: str) -> None:
    from rich.table import Table

    table = Table(title=f"{config}: one batch of {r['batch_size']} (median, min-max of {r['repeats']} repeats)")
    for column in ("layer", "type", "output", "forward ms", "backward ms"):
        table.add_column(column, justify="right" if "ms" in column or column == "layer" else "left")
    for row in r["layers"]:
        table.add_row(str(row["layer"]), row["type"], "x".join(map(str, row["output"])),
                      spread(row["forward_spread_ms"]), spread(row["backward_spread_ms"]))
    out = console()
    out.print(table)
    out.print(f"whole batch (forward, loss, backward, update): {spread(r['batch_spread_ms'])} ms; "
              f"{r['samples_per_second']:,.0f} samples/s; a max far above the min means a busy machine")
    out.print(f"epoch of {r['batches_per_epoch']} batches: {r['epoch_s']:.2f} s; its bare GEMMs: "
              f"{r['bare_gemm_epoch_s']:.2f} s; ratio {r['ratio']:.2f}x")
    if "augment_ms" in r:
        out.print(f"data.augment, per batch: {spread(r['augment_spread_ms'])} ms; per epoch: {r['augment_epoch_s']:.2f} s "
                  "more")


def spread(ms: dict) -> str:
    """'0.512 (0.498-0.730)': the median, then the fastest and slowest repeat."""
    return f"{ms['median']:.3f} ({ms['min']:.3f}-{ms['max']:.3f})"
