"""`bpcli gradcheck`: analytic gradients against central finite differences."""

from __future__ import annotations

from typing import List, Optional

import typer

from bpcli.cli.common import console, print_json, user_errors


@user_errors
def gradcheck(
    config: Optional[str] = typer.Argument(None, help="Check this config's own network and loss instead."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key (repeatable)."),
    max_entries: int = typer.Option(64, help="With CONFIG: entries checked per tensor (drawn from the seed)."),
    eps: float = typer.Option(1e-6, help="Finite-difference step."),
    tol: float = typer.Option(1e-6, help="Largest relative error that passes."),
    seed: int = typer.Option(0, help="Seed for the random networks and data."),
    samples: int = typer.Option(4, min=1, help="Examples in each checked batch."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Check every analytic gradient against central finite differences in float64.

    Without CONFIG: each layer, activation, loss and regularizer alone and in
    small networks, for every parameter and for the input. With CONFIG: that
    config's network, loss and penalties on a few examples of its data. Exits 1
    if any check fails.

    Example: bpcli gradcheck --tol 1e-7 --json; bpcli gradcheck configs/quickstart.yaml
    """
    from bpcli.tools.gradcheck import check_all, check_config

    if config:
        from bpcli.config.loading import load_config

        results = check_config(load_config(config, overrides or []), eps=eps, tol=tol, seed=seed, samples=samples,
                               max_entries=max_entries)
    else:
        results = check_all(eps=eps, tol=tol, seed=seed, samples=samples)
    failed = [r for r in results if not r.passed]
    if as_json:
        summary = {"passed": not failed, "checks": len(results), "failed": len(failed), "eps": eps, "tol": tol}
        print_json({**summary, "results": [r.as_dict() for r in results]})
    else:
        print_results(results, tol)
    if failed:
        raise typer.Exit(1)


def print_results(results, tol: float) -> None:
    from rich.table import Table

    table = Table(title="Gradient check (float64, central differences)")
    for column in ("component", "parameter", "rel. error", "checked", "kinks skipped", "result"):
        table.add_column(column, justify="right" if column in ("rel. error", "checked", "kinks skipped") else "left")
    for r in results:
        verdict = "[green]pass[/]" if r.passed else "[bold red]FAIL[/]"
        table.add_row(r.component, r.parameter, f"{r.rel_error:.2e}", str(r.checked), str(r.skipped), verdict)
    out = console()
    out.print(table)
    failed = sum(not r.passed for r in results)
    worst = max((r.rel_error for r in results), default=0.0)
    out.print(f"{len(results) - failed}/{len(results)} checks passed; "
              f"largest relative error {worst:.2e} (tolerance {tol:.0e}).")
