"""`bpcli sweep SWEEP.yaml`: a hyperparameter search, its trials run by Dask, searched and pruned by Optuna."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from bpcli.cli.common import console, print_json, user_errors

PREVIEW = 3   # sampled configs --dry-run shows


@user_errors
def sweep(
    sweep_file: str = typer.Argument(..., metavar="SWEEP.yaml", help="Sweep file: a base config and a search "
                                     "space (see configs/sweeps/ and docs/sweeps.md)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Worker processes on this machine "
                                          "(default: one per core)."),
    cluster: Optional[str] = typer.Option(None, "--cluster", metavar="ADDRESS", help="Run the trials on a running "
                                          "Dask cluster instead, e.g. tcp://10.0.0.5:8786."),
    trials: Optional[int] = typer.Option(None, "--trials", min=1, help="How many trials (instead of the file's)."),
    storage: Optional[str] = typer.Option(None, "--storage", metavar="URL", help="An Optuna storage URL for the "
                                          "study, e.g. postgresql://... (default: a journal file in the sweep "
                                          "directory)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate, print the space and the first sampled "
                                 "configs; run nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary (or the --dry-run) as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No line per finished trial on stderr."),
) -> None:
    """Search hyperparameters: train many trials of a base config, in parallel, pruning the bad ones early.

    Creates sweeps/<name>-<stamp>/ with each trial's run directory (trials/<n>/), trials.csv, best.yaml (the
    winning config, trainable with bpcli train) and summary.json. Needs the sweep extra:
    pip install "bpcli[sweep]".

    Example: bpcli sweep configs/sweeps/quickstart-lr.yaml --workers 2; bpcli sweep my-sweep.yaml --dry-run
    """
    from bpcli.errors import ConfigError
    from bpcli.sweep.engine import require_engines
    from bpcli.sweep.spec import load_sweep

    require_engines()
    if workers and cluster:
        raise ConfigError("--workers starts worker processes on this machine and --cluster uses a running cluster's "
                          "workers: give one of them")
    spec = load_sweep(sweep_file)
    if trials:
        _set_trials(spec, trials)
    if dry_run:
        show_preview(spec, as_json)
        return
    from bpcli.sweep.driver import run_sweep

    summary = run_sweep(spec, workers=workers, address=cluster, storage=storage,
                        on_event=None if quiet else TrialLines(spec))
    if as_json:
        print_json(summary)
    else:
        print_summary(summary)


def _set_trials(spec, trials: int) -> None:
    from bpcli.errors import ConfigError

    if spec.sampler == "grid" and trials > spec.trials:
        raise ConfigError(f"--trials {trials}: the grid has {spec.trials} points, so at most {spec.trials} trials")
    spec.trials = trials


# -- --dry-run -----------------------------------------------------------------------------------

def show_preview(spec, as_json: bool) -> None:
    from bpcli.sweep.driver import preview
    from bpcli.sweep.space import PARAMS

    samples = preview(spec, PREVIEW)
    if as_json:
        print_json({"sweep": spec.resolved(), "samples": samples})
        return
    out = console()
    pruner = ", ".join(f"{k} {v}" for k, v in spec.pruner.items() if k != "name")
    out.print(f"[bold]Sweep[/] {spec.file}: {spec.trials} trials, sampler {spec.sampler} (seed {spec.seed}), "
              f"pruner {spec.pruner['name']}{f' ({pruner})' if pruner else ''}", soft_wrap=True)
    fixed = ", ".join(f"{k}={v}" for k, v in spec.fixed.items())
    out.print(f"[bold]Base[/] {spec.base}{f', with {fixed}' if fixed else ''}", soft_wrap=True)
    out.print(f"[bold]Metric[/] {spec.metric} ({spec.direction})")
    out.print("[bold]Space[/]")
    width = max(len(key) for key in spec.space)
    for key, (kind, values) in spec.space.items():
        out.print(f"  {key:<{width}}  {PARAMS[kind].describe(values)}", soft_wrap=True, highlight=False)
    out.print(f"[bold]First {len(samples)} trials[/], as the sampler draws them:")
    for sample in samples:
        verdict = "valid" if sample["error"] is None else f"refused: {one_line(sample['error'])}"
        seed = f" training.seed={sample['seed']}" if sample["seed"] is not None else ""
        out.print(f"  trial {sample['number']}: {format_params(sample['params'])}{seed}  {verdict}", soft_wrap=True)
    out.print(f"Nothing was run. Run it with: bpcli sweep {spec.file}", soft_wrap=True)


# -- progress and the end ------------------------------------------------------------------------

class TrialLines:
    """One line on stderr as the sweep starts and as each trial ends (the driver's on_event)."""

    def __init__(self, spec):
        self.spec = spec

    def __call__(self, kind: str, data: dict) -> None:
        if kind == "started":
            where = f"{data['slots']} local workers" if data["local"] else f"the Dask cluster at {data['address']}"
            self.write(f"sweep {data['sweep_dir']}: {self.spec.trials} trials on {where} "
                       f"({data['slots']} at a time)")
        elif kind == "trial":
            self.write(trial_line(data, self.spec.metric))

    @staticmethod
    def write(line: str) -> None:
        print(line, file=sys.stderr, flush=True)


def trial_line(data: dict, metric: str) -> str:
    row, counts, best = data["row"], data["counts"], data["best"]
    done = sum(counts.values())
    head = f"trial {row['number']} ({done}/{data['trials']})"
    if row["state"] == "fail":
        result = f"failed: {one_line(row['error'])}"
    else:
        how = "pruned at epoch" if row["state"] == "pruned" else "best epoch"
        at = row["epochs_run"] if row["state"] == "pruned" else row["best_epoch"]
        result = f"{row['state']}: {metric} {row['value']:.6g} ({how} {at})"
    where = f" in {row['seconds']:.1f} s on {row['worker']}" if row["seconds"] and row["worker"] else ""
    leader = f"; best so far: trial {best['number']}, {best['value']:.6g}" if best else ""
    return f"{head} {result}{where}; {format_params(row['params'])}{leader}"


def print_summary(summary: dict) -> None:
    out = console()
    trials, best = summary["trials"], summary["best"]
    if best:
        out.print(f"[bold]Best:[/] trial {best['number']}, {summary['metric']} {best['value']:.6g} (epoch "
                  f"{best['best_epoch']}): {format_params(best['params'])}", soft_wrap=True)
    else:
        out.print("[bold]Best:[/] none: no trial completed")
    out.print(f"[bold]Trials:[/] {trials['requested']}: {trials['complete']} complete, {trials['pruned']} pruned, "
              f"{trials['fail']} failed, in {summary['seconds']:.1f} s on {summary['slots']} workers")
    out.print(f"[bold]Sweep directory:[/] {summary['sweep_dir']}", soft_wrap=True)
    if best:
        out.print(f"Train the best config again with: bpcli train {best['config']}", soft_wrap=True)


def format_params(params: dict) -> str:
    return " ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                    for key, value in params.items())


def one_line(text: str) -> str:
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())
