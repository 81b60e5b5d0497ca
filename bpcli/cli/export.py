"""`bpcli export CHECKPOINT_OR_RUN_DIR --format onnx -o model.onnx`: the model for another runtime."""

from __future__ import annotations

import typer

from bpcli.cli.common import user_errors
from bpcli.cli.evaluate import CHECKPOINT_HELP, warn


@user_errors
def export(
    checkpoint: str = typer.Argument(..., metavar="CHECKPOINT_OR_RUN_DIR", help=CHECKPOINT_HELP),
    format: str = typer.Option("onnx", "--format", "-f", metavar="FORMAT", help="Export format: onnx."),
    output: str = typer.Option("model.onnx", "--output", "-o", metavar="FILE", help="Where to write the model."),
) -> None:
    """Write a trained model as an ONNX graph: its preprocessing, every layer, logits and probabilities.

    The graph takes float32 rows of raw features (input, shape (N, features)), as `bpcli predict`
    reads them, and gives logits and probabilities (softmax or sigmoid), or values for regression;
    onnxruntime reproduces bpcli's predictions. Needs the onnx package (pip install onnx).

    Example: bpcli export runs/spirals-20260101-120000 --format onnx -o spirals.onnx
    """
    from bpcli.api import load
    from bpcli.tools.export import check_format, export as export_model, outputs_of

    check_format(format)   # an unknown format, or onnx not installed: said before the checkpoint is read
    model = load(checkpoint, on_warning=warn)
    export_model(model.restored, output, format, source=str(model.path))
    typer.echo(f"wrote {output}: input (N, {model.input_dim}) -> {', '.join(outputs_of(model.task))}", err=True)
