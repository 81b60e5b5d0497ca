"""`bpcli compare RUN_DIR...`: a table of runs, one column each: the config keys that differ, how each ended."""

from __future__ import annotations

from typing import List

import typer

from bpcli.cli.common import console, print_json, user_errors


@user_errors
def command(
    run_dirs: List[str] = typer.Argument(..., metavar="RUN_DIR", help="Run directories made by bpcli train."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON (nothing else on stdout)."),
) -> None:
    """Compare runs: the config keys whose values differ (output and checkpoint keys left out), epochs run,
    the best epoch and monitored best, the last epoch's metrics, test metrics, and where the runs were
    trained (versions, BLAS, threads, host, git commit from run.json) when that differs.

    Example: bpcli compare runs/quickstart-20260101-120000 runs/quickstart-20260101-130000
    """
    from bpcli.tools.compare import compare_runs

    comparison = compare_runs(run_dirs)
    if as_json:
        print_json(comparison)
        return
    print_comparison(comparison)


def print_comparison(comparison: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    runs = comparison["runs"]
    table = Table(title=f"{len(runs)} run{'s' if len(runs) != 1 else ''}")
    table.add_column("")
    for run in runs:
        table.add_column(escape(run["name"]), overflow="fold")
    for label, values in rows(comparison):
        table.add_row(escape(label), *(escape(v) for v in values))
    out = console()
    out.print(table)
    if not comparison["config_keys"] and len(runs) > 1:
        out.print("The runs' configs are the same (apart from where they are kept).")


def rows(comparison: dict) -> list[tuple[str, list[str]]]:
    """(label, a text per run): the differing config keys, how the runs ended, their metrics, their records."""
    runs = comparison["runs"]
    table = [(key, [show(r["config"][key]) for r in runs]) for key in comparison["config_keys"]]
    table.append(("epochs run", [show(r["epochs_run"]) for r in runs]))
    table.append(("stopped because", [show(r["stopped_because"] or "(no summary.json: running or killed)")
                                      for r in runs]))
    table.append(("best epoch", [show(r["best_epoch"]) for r in runs]))
    for metric in dict.fromkeys(r["monitor"]["metric"] for r in runs if r["monitor"]):
        table.append((f"best {metric}", [show(r["monitor"]["best"], metric) if r["monitor"] and
                                         r["monitor"]["metric"] == metric else "-" for r in runs]))
    for group, label in (("final", "last epoch "), ("test", "test ")):
        for name in dict.fromkeys(k for r in runs for k in (r[group] or {})):
            table.append((label + name, [show((r[group] or {}).get(name), name) for r in runs]))
    table += [(key, [show(r["record"][key]) for r in runs]) for key in comparison["record_keys"]]
    return table


def show(value, metric: str = "") -> str:
    """A value as the table shows it: accuracies in percent, other numbers to 6 significant digits, null as -."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2%}" if metric.endswith("accuracy") else f"{value:.6g}"
    return str(value)
