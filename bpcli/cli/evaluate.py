"""`bpcli eval CHECKPOINT` and `bpcli predict CHECKPOINT INPUT`: a checkpoint file or a run directory (its best)."""

from __future__ import annotations

from typing import Optional

import typer

from bpcli.cli.common import console, print_json, user_errors

CHECKPOINT_HELP = "A checkpoint file, or a run directory (its best checkpoint)."


def warn(message: str) -> None:
    """On stderr, so that stdout keeps only the report (or the JSON, or the predictions)."""
    typer.echo(f"warning: {message}", err=True)


@user_errors
def eval_(
    checkpoint: str = typer.Argument(..., metavar="CHECKPOINT_OR_RUN_DIR", help=CHECKPOINT_HELP),
    dataset: Optional[str] = typer.Option(None, help="Another dataset name or .csv/.npz path (default: the training "
                                          "one); a file is evaluated whole unless --split is given."),
    split: Optional[str] = typer.Option(None, help="test, val, train or all (default: test; all rows of a --dataset "
                                        "file)."),
    target: Optional[str] = typer.Option(None, "--target", help="The target column of a CSV (default: the one the "
                                         "model was trained on)."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Dataset cache folder."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    plot: Optional[str] = typer.Option(
        None, "--plot", metavar="FILE.png",
        help="Also draw the confusion matrix (and, for images, the most confidently wrong examples), or predicted "
             "against true values for regression, to this file (.png, .svg or .pdf). Needs matplotlib."),
) -> None:
    """Loss, accuracy, confusion matrix and per-class precision/recall/F1 (or MSE, MAE, R²) of a checkpoint.

    Example: bpcli eval runs/quickstart-20260101-120000 --split test --plot eval.png
    """
    from bpcli.errors import UsageError
    from bpcli.tools.inference import SPLITS, evaluate_with_outputs

    if split is not None and split not in SPLITS:
        raise UsageError(f"--split {split}: unknown split; allowed: {', '.join(SPLITS)}")
    if plot:
        from bpcli.plots.figures import require_matplotlib

        require_matplotlib()  # before the evaluation, not after it
    evaluation = evaluate_with_outputs(checkpoint, dataset=dataset, split=split, data_dir=data_dir,
                                       on_warning=warn, target=target)
    if as_json:
        print_json(evaluation.result)
    else:
        print_evaluation(evaluation.result)
    if plot:
        from bpcli.plots.evaluation import evaluation_figure
        from bpcli.plots.figures import save_figure

        typer.echo(f"wrote {save_figure(evaluation_figure(evaluation), plot)}", err=True)


def print_evaluation(r: dict) -> None:
    """One line of figures; for classes, then the confusion matrix and the per-class report."""
    out = console()
    figures = [f"loss {r['loss']:.6g}"] + [f"{k} {r[k]:.6g}" for k in ("mse", "mae", "r2") if k in r]
    if "accuracy" in r:
        figures.insert(1, f"accuracy {r['accuracy']:.2%}")
    out.print(f"[bold]{r['dataset']}[/] {r['split']} split, {r['n']} examples: " + ", ".join(figures))
    if "per_class" in r:
        out.print(_confusion_table(r))
        out.print(_per_class_table(r))


def _confusion_table(r: dict):
    from rich.table import Table

    names = [row["class"] for row in r["per_class"]]
    matrix = Table(title="Confusion matrix (rows: true class, columns: predicted)")
    matrix.add_column("")
    for name in names:
        matrix.add_column(name, justify="right")
    for name, counts in zip(names, r["confusion_matrix"]):
        matrix.add_row(name, *(str(c) for c in counts))
    return matrix


def _per_class_table(r: dict):
    from rich.table import Table

    report = Table(title="Per class")
    for column in ("class", "precision", "recall", "f1", "support"):
        report.add_column(column, justify="left" if column == "class" else "right")
    for row in r["per_class"]:
        report.add_row(row["class"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                       str(row["support"]))
    for avg in ("macro", "weighted"):
        report.add_row(f"{avg} avg", *(f"{r[avg][k]:.3f}" for k in ("precision", "recall", "f1")), "")
    return report


@user_errors
def predict(
    checkpoint: str = typer.Argument(..., metavar="CHECKPOINT_OR_RUN_DIR", help=CHECKPOINT_HELP),
    inputs: str = typer.Argument(..., metavar="INPUT", help="A .csv of features (header row) or an .npz with X."),
    output: Optional[str] = typer.Option(None, help="Write the predictions CSV here instead of stdout."),
) -> None:
    """Predictions (class and probabilities, or values) for every row of INPUT, as CSV.

    Example: bpcli predict runs/spirals-20260101-120000 points.csv --output preds.csv
    """
    from bpcli.api import load
    from bpcli.fileio import write_file

    text = load(checkpoint, on_warning=warn).predictions_csv(inputs)   # the Python API's own path
    if output:
        write_file(output, text, "predictions", when_full="free some space and run the command again")
        typer.echo(f"wrote {text.count(chr(10)) - 1} predictions to {output}", err=True)
    else:
        typer.echo(text, nl=False)
