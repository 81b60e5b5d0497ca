"""`bpcli inspect CONFIG_OR_CHECKPOINT`: the layers, parameter and memory totals, and a run's history."""

from __future__ import annotations

from typing import List, Optional

import typer

from bpcli.cli.common import console, print_json, user_errors


@user_errors
def command(
    target: str = typer.Argument(..., metavar="CONFIG_OR_CHECKPOINT",
                                 help="A config .yaml, a checkpoint .safetensors or a run directory."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """A table of the network's layers, its parameter count and training memory; for a run, its history.

    Each layer is named as its parameters are (layers.N), with its type, output
    shape for one batch of data.batch_size examples, parameter count,
    initializers and the activation it feeds. Then the totals: parameters, and
    the bytes training holds for them in the model's dtype (weights, gradients,
    optimizer state and scratch). A checkpoint or run directory adds the epochs
    run, why training stopped, the best epoch with its metrics, and the data.

    Example: bpcli inspect configs/quickstart.yaml; bpcli inspect runs/quickstart-20260101-120000
    """
    from bpcli.tools.inspect import load_target, summarize

    summary = summarize(load_target(target, overrides or (), "inspect"))
    if as_json:
        return print_json(summary)
    print_summary(summary)


def page():
    """console(): into a pipe or a file it is wide enough for every table (common.PIPE_WIDTH)."""
    return console()


def print_summary(s: dict) -> None:
    from rich.text import Text

    out, cfg = page(), s["config"]
    out.print(Text.assemble((s["source"], "bold"), f" ({s['kind']}): {s['input_dim']} inputs from "
                            f"{cfg['dataset']}, batch size {s['batch_size']}, {s['dtype']}"))
    out.print(layer_table(s))
    for label, text in summary_lines(s):
        out.print(Text.assemble((f"{label:<11}", "bold"), text))


def layer_table(s: dict):
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for column, justify in (("layer", "left"), ("type", "left"), ("output", "right"), ("params", "right"),
                            ("init (weight, bias)", "left"), ("activation", "left")):
        table.add_column(column, justify=justify, no_wrap=column in ("layer", "output", "params"), overflow="fold")
    for row in s["layers"]:
        options = ", ".join(f"{k}={v}" for k, v in row["options"].items())
        init = f"{row['init']['weight']}, {row['init']['bias']}" if row["init"] else ""
        table.add_row(row["layer"], row["type"] + (f"({options})" if options else ""),
                      "(" + ", ".join(map(str, row["output"])) + ")", f"{row['params']:,}", init,
                      row["activation"] or "")
    return table


def summary_lines(s: dict) -> list[tuple[str, str]]:
    """(label, text) lines under the table: totals, memory, config and, for a checkpoint, training."""
    p = s["parameters"]
    buffers = f"; {p['buffers']:,} values of batch-norm running statistics (not trained)" if p["buffers"] else ""
    lines = [("parameters", f"{p['total']:,}, all trainable{buffers}"), *memory_lines(s["memory"]),
             *config_lines(s["config"], s["training"])]
    return lines + (training_lines(s["training"]) if s["training"] else [])


def memory_lines(m: dict) -> list[tuple[str, str]]:
    state, copies = ", ".join(m["optimizer_state_arrays"]), m["optimizer_state_copies"]
    state_text = f"{copies:g} {'copy' if copies == 1 else 'copies'}: {state}" if state else "none"
    lines = [("memory", f"{size(m['total'])} to train in {m['dtype']}, activations not counted:"),
             ("", f"  parameters {size(m['parameters'])} + gradients {size(m['gradients'])}"),
             ("", (f"  + {m['optimizer']} state {size(m['optimizer_state'])} ({state_text}; "
                   f"per {m['optimizer_state_source']})")),
             ("", f"  + optimizer scratch {size(m['optimizer_scratch'])} (1 copy, reused each step, not saved)")]
    if m["buffers"]:
        lines.append(("", f"  + buffers {size(m['buffers'])}"))
    return lines


def config_lines(c: dict, t: dict | None) -> list[tuple[str, str]]:
    data = f"{c['dataset']}{_options(c['dataset_options'], ' (', ')')}: {c['input_dim']} inputs, {c['task']}"
    if t and t["data"]:
        data += "; " + " / ".join(f"{t['data'][k]:,} {k[2:]}" for k in ("n_train", "n_val", "n_test")
                                  if k in t["data"])
        data += f", {len(t['class_names'])} classes" if t["class_names"] else ""
    loss = c["loss"]
    extra = {k: v for k, v in loss.items() if k not in ("name", "l1", "l2", "regularize_bias")}
    penalties = [f"{k.upper()} penalty lam={loss[k]:g}" for k in ("l1", "l2") if loss.get(k)]
    on = "dense weights and biases" if loss.get("regularize_bias") else "dense weights"
    early = c["early_stopping"]
    return [("data", data),
            ("loss", loss["name"] + _options(extra, " (", ")") + (f" + {' + '.join(penalties)} on {on}"
                                                                  if penalties else "")),
            ("optimizer", c["optimizer"]["name"] + _options({k: v for k, v in c["optimizer"].items() if k != "name"},
                                                            ": ")),
            ("schedule", c["schedule"]["name"] + _options({k: v for k, v in c["schedule"].items() if k != "name"},
                                                          ": ")),
            ("training", f"batch size {c['batch_size']}, {c['epochs']} epochs, seed {c['seed']}, monitor "
                         f"{c['monitor']}" + (f", early stopping patience {early['patience']}" if early else ""))]


def training_lines(t: dict) -> list[tuple[str, str]]:
    run = f"{t['epochs_run']} of {t['epochs_configured']} epochs"
    if t["batches_into_next_epoch"]:
        run += f" and {t['batches_into_next_epoch']} batches"
    took = "" if t["seconds"] is None else f" in {t['seconds']:g} s"
    lines = [("history", f"{run}{took} ({t['checkpoint']} checkpoint); stopped: {t['stop_reason']}")]
    if t["best_epoch"]:
        metrics = ", ".join(f"{k} {_metric(v)}" for k, v in (t["best_metrics"] or {}).items()
                            if k not in ("epoch", "seconds", "lr", "grad_norm"))
        lines += [("best epoch", f"{t['best_epoch']}, by {t['monitor']} ({t['mode']}): {_metric(t['best_value'])}"),
                  ("", f"  {metrics}")]
    return lines


def _options(options: dict, before: str, after: str = "") -> str:
    """' (a=1, b=2)' or '' when there are none."""
    return f"{before}{', '.join(f'{k}={_metric(v)}' for k, v in options.items())}{after}" if options else ""


def _metric(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def size(n: int) -> str:
    """Bytes in binary units, as memory is counted: 12.8 MiB."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"
