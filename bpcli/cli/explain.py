"""`bpcli explain CONFIG`: the forward and backward equations of a config's network, with every shape."""

from __future__ import annotations

from typing import List, Optional

import typer

from bpcli.cli.common import user_errors


@user_errors
def command(
    target: str = typer.Argument(..., metavar="CONFIG",
                                 help="A config .yaml (or a checkpoint .safetensors / run directory)."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key (repeatable), "
                                                  "e.g. --set data.batch_size=128."),
) -> None:
    """The equations of backpropagation for your own network, layer by layer, with every shape.

    Prints the forward pass (each layer's equation and the shapes of its
    matrices for a batch of data.batch_size examples), the loss and its
    gradient, the backward pass (the chain rule through each layer with the
    activation's actual derivative, the weight and bias gradients and the
    penalty terms), the optimizer's update rule with its hyperparameters, and
    the parameter count. Plain text, 100 columns when piped.

    Example: bpcli explain configs/quickstart.yaml --set data.batch_size=128
    """
    from rich.text import Text

    from bpcli.tools.explain import explain, render_lines
    from bpcli.tools.inspect import load_target
    from bpcli.cli.inspect_command import page

    target = load_target(target, overrides or (), "explain")
    out = page()
    for kind, text in render_lines(explain(target.config, target.input_dim), out.width if out.is_terminal else 100):
        out.print(Text(text, style="bold" if kind == "title" else ""), soft_wrap=True)
