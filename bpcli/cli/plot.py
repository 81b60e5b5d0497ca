"""`bpcli plot RUN_DIR [RUN_DIR ...]`: training curves of one run, or of several on one figure."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from bpcli.cli.common import user_errors

COMPARE = "compare.png"


@user_errors
def command(
    run_dirs: List[str] = typer.Argument(..., metavar="RUN_DIR", help="Run directories made by bpcli train (one or "
                                                                      "more), or one sweep directory (bpcli sweep)."),
    output: Optional[str] = typer.Option(
        None, "--output", "-o",
        help=f"Picture file (.png, .svg or .pdf); default RUN_DIR/plot.png for one run, ./{COMPARE} for several."),
) -> None:
    """Plot loss and accuracy curves (best epoch and learning-rate changes marked), the learning rate and the
    per-layer gradient norms of a run; several runs are drawn on one figure, one colour each. For a sweep
    directory: the search history, each parameter against the metric and the best trials' curves. Needs
    matplotlib (pip install matplotlib).

    Example: bpcli plot runs/quickstart-20260101-120000 runs/quickstart-20260101-130000 --output compare.png
    """
    from bpcli.plots.figures import require_matplotlib, save_figure
    from bpcli.plots.training import read_run, training_figure

    require_matplotlib()
    if len(run_dirs) == 1 and is_sweep(run_dirs[0]):
        plot_sweep(run_dirs[0], output)
        return
    runs = [read_run(path) for path in run_dirs]
    target = output or (Path(run_dirs[0]) / "plot.png" if len(runs) == 1 else Path(COMPARE))
    written = save_figure(training_figure(runs), target)
    typer.echo(f"wrote {written}", err=True)


def is_sweep(path: str) -> bool:
    from bpcli.sweep.sweepdir import SweepDir

    return SweepDir(path).is_sweep()


def plot_sweep(path: str, output: Optional[str]) -> None:
    """A sweep directory: the search history, each parameter against the metric, the best trials' curves."""
    from bpcli.plots.figures import save_figure
    from bpcli.plots.sweep import sweep_figure
    from bpcli.sweep.sweepdir import SweepDir

    written = save_figure(sweep_figure(SweepDir(path).search()), output or Path(path) / "plot.png")
    typer.echo(f"wrote {written}", err=True)
