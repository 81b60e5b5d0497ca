"""`bpcli plot RUN_DIR [RUN_DIR ...]`: training curves of one run, or of several on one figure."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from bpcli.cli.common import user_errors

COMPARE = "compare.png"


@user_errors
def command(
    run_dirs: List[str] = typer.Argument(..., metavar="RUN_DIR", help="Run directories made by bpcli train (one or more)."),
    output: Optional[str] = typer.Option(
        None, "--output", "-o",
        help=f"Picture file (.png, .svg or .pdf); default RUN_DIR/plot.png for one run, ./{COMPARE} for several."),
) -> None:
    """Plot loss and accuracy curves (best epoch and learning-rate changes marked), the learning rate and the
    per-layer gradient norms of a run; several runs are drawn on one figure, one colour each. Needs matplotlib
    (pip install matplotlib).

    Example: bpcli plot runs/quickstart-20260101-120000 runs/quickstart-20260101-130000 --output compare.png
    """
    from bpcli.plots.figures import require_matplotlib, save_figure
    from bpcli.plots.training import read_run, training_figure

    require_matplotlib()
    runs = [read_run(path) for path in run_dirs]
    target = output or (Path(run_dirs[0]) / "plot.png" if len(runs) == 1 else Path(COMPARE))
    written = save_figure(training_figure(runs), target)
    typer.echo(f"wrote {written}")
