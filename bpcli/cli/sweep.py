"""`bpcli sweep SWEEP.yaml`: a hyperparameter search, its trials run by Dask, searched and pruned by Optuna."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from bpcli.cli.common import console, print_json, user_errors

PREVIEW = 3   # sampled configs --dry-run shows


@user_errors
def sweep(
    target: Optional[List[str]] = typer.Argument(None, metavar="SWEEP.yaml | show SWEEP_DIR",
                                                 help="A sweep file, or a shipped sweep's name (quickstart-lr; see "
                                                      "docs/sweeps.md), or 'show' and a sweep directory to print its "
                                                      "best trials."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Worker processes on this machine "
                                          "(default: one per core)."),
    cluster: Optional[str] = typer.Option(None, "--cluster", metavar="ADDRESS", help="Run the trials on a running "
                                          "Dask cluster instead, e.g. tcp://10.0.0.5:8786."),
    trials: Optional[int] = typer.Option(None, "--trials", min=1, help="How many trials (instead of the file's)."),
    storage: Optional[str] = typer.Option(None, "--storage", metavar="URL", help="An Optuna storage URL for the "
                                          "study, e.g. postgresql://... (default: a journal file in the sweep "
                                          "directory)."),
    resume: Optional[str] = typer.Option(None, "--resume", metavar="SWEEP_DIR", help="Continue a stopped sweep: "
                                         "finished trials are kept, interrupted ones continue from their "
                                         "checkpoint."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate, print the space and the first sampled "
                                 "configs; run nothing."),
    top: int = typer.Option(10, "--top", min=1, help="With show: how many trials to list."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary (or the --dry-run, or show) as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No line per finished trial on stderr."),
) -> None:
    """Search hyperparameters: train many trials of a base config, in parallel, pruning the bad ones early.

    Creates sweeps/<name>-<stamp>/ with each trial's run directory (trials/<n>/), trials.csv, best.yaml (the
    winning config, trainable with bpcli train) and summary.json. Ctrl-C (or SIGTERM) stops the sweep: the
    running trials save a checkpoint, and --resume SWEEP_DIR continues it. Needs the sweep extra:
    pip install -e ".[sweep]" in a checkout.

    Example: bpcli sweep quickstart-lr --workers 2 (a shipped sweep); bpcli sweep show sweeps/quickstart-lr-20261202-120000
    """
    target = target or []
    if target[:1] == ["show"]:
        show_sweep(check_show(target), top, as_json)
        return
    check_arguments(target, resume, workers, cluster, dry_run)
    from bpcli.sweep.engine import require_engines
    from bpcli.sweep.spec import load_sweep

    require_engines()
    spec = None if resume else load_sweep(target[0])
    if spec and trials:
        spec.set_trials(trials)
    if dry_run:
        show_preview(spec, as_json)
        return
    summary = run_or_resume(spec, resume, workers, cluster, storage, trials, quiet)
    if as_json:
        print_json(summary)
    else:
        print_summary(summary)


def check_show(target: list[str]) -> str:
    from bpcli.errors import ConfigError

    if len(target) != 2:
        raise ConfigError("bpcli sweep show takes one sweep directory: bpcli sweep show SWEEP_DIR")
    return target[1]


def check_arguments(target: list[str], resume, workers, cluster, dry_run: bool) -> None:
    """One sweep file, or --resume alone; --workers or --cluster; --dry-run of a file only."""
    from bpcli.errors import ConfigError

    if len(target) > 1 or (resume and target) or not (resume or target):
        raise ConfigError("give a sweep file (bpcli sweep SWEEP.yaml), or --resume SWEEP_DIR alone, or "
                          "show SWEEP_DIR")
    if workers and cluster:
        raise ConfigError("--workers starts worker processes on this machine and --cluster uses a running cluster's "
                          "workers: give one of them")
    if resume and dry_run:
        raise ConfigError("--dry-run previews a sweep file; a sweep directory's trials are in its trials.csv "
                          "(bpcli sweep show SWEEP_DIR)")


def run_or_resume(spec, resume, workers, cluster, storage, trials, quiet) -> dict:
    """Run (or resume) the sweep with Ctrl-C and SIGTERM turned into a stop: trials checkpoint, then exit."""
    from bpcli.errors import Interrupted
    from bpcli.sweep.driver import resume_sweep, run_sweep
    from bpcli.training.interrupts import StopRequest, graceful_interrupts

    stop, lines = StopRequest(), sweep_display(quiet)
    try:
        with graceful_interrupts(stop):
            try:
                if resume:
                    return resume_sweep(resume, workers=workers, address=cluster, storage=storage, trials=trials,
                                        stop=stop, on_event=lines)
                return run_sweep(spec, workers=workers, address=cluster, storage=storage, stop=stop,
                                 on_event=lines)
            finally:   # the live display ends before anything else is printed
                lines.close()
    except Interrupted as stopped:
        typer.echo(f"sweep stopped by {stopped.signal_name}: the finished trials are recorded and the running "
                   f"ones saved a resumable checkpoint. Continue with:\n  bpcli sweep --resume {stopped.run_dir}",
                   err=True)
        raise typer.Exit(stopped.exit_code)
    except KeyboardInterrupt:   # a second Ctrl-C: stop at once
        where = f" Continue with:\n  bpcli sweep --resume {lines.sweep_dir}" if lines.sweep_dir else ""
        typer.echo(f"aborted by a second Ctrl-C: the finished trials are recorded; the running ones start again "
                   f"(from their last checkpoint, if they saved one).{where}", err=True)
        raise typer.Exit(130)


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


# -- show ----------------------------------------------------------------------------------------

def show_sweep(path: str, top: int, as_json: bool) -> None:
    """The sweep's summary and its best trials, as a table (complete trials first, then pruned ones)."""
    from rich.markup import escape
    from rich.table import Table

    from bpcli.errors import ConfigError
    from bpcli.sweep.sweepdir import SweepDir, ranked

    sweep_dir = SweepDir(path)
    if not sweep_dir.is_sweep():
        raise ConfigError(f"{path} is not a sweep directory made by bpcli sweep (it has no sweep.yaml and base.yaml)")
    summary, rows = sweep_dir.read_summary(), sweep_dir.read_rows()
    best = ranked(rows, summary.get("direction", "minimize"))[:top]
    if as_json:
        print_json({"summary": summary, "top": best})
        return
    counts = {state: sum(row["state"] == state for row in rows) for state in ("complete", "pruned", "fail",
                                                                               "interrupted")}
    metric = summary.get("metric", "value")
    out = console()
    if not out.is_terminal:
        out.width = max(out.width, 200)   # a file or a pipe: the whole table, unwrapped
    status = "finished" if summary.get("finished") else "not finished (bpcli sweep --resume continues it)"
    out.print(f"[bold]Sweep[/] {escape(str(sweep_dir))}: {len(rows)} of {summary.get('trials', {}).get('requested', '?')} "
              f"trials recorded ({', '.join(f'{n} {state}' for state, n in counts.items() if n)}), {status}",
              soft_wrap=True)
    params = list(dict.fromkeys(key for row in best for key in row["params"]))
    table = Table(title=f"Best {len(best)} by {metric} ({summary.get('direction', '?')})")
    for column in ("trial", "state", metric, "best epoch", "epochs", "seconds", *params):
        table.add_column(column, justify="right" if column != "state" else "left")
    for row in best:
        values = [format_value(row["params"].get(key)) for key in params]
        table.add_row(str(row["number"]), row["state"], f"{row['value']:.6g}", str(row["best_epoch"] or ""),
                      str(row["epochs_run"] or ""), f"{row['seconds']:.1f}" if row["seconds"] else "", *values)
    out.print(table)
    if summary.get("best"):   # named from SWEEP_DIR as given: summary.json's paths are from where the sweep ran
        out.print(f"Best config: {sweep_dir.best_yaml} (bpcli train it); its run: "
                  f"{sweep_dir.trial(summary['best']['number'])}", soft_wrap=True)


def format_value(value) -> str:
    return "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


# -- progress and the end ------------------------------------------------------------------------

def sweep_display(quiet: bool):
    """A live display on a terminal (colour or not), else plain lines (logs, pipes, CI)."""
    err = console(stderr=True)
    return LiveTrials(err) if err.is_terminal and not quiet else TrialLines(quiet)


class TrialLines:
    """The driver's on_event: one line on stderr as the sweep starts and as each trial ends (none with
    --quiet); it keeps the sweep directory, for the message after a second Ctrl-C."""

    def __init__(self, quiet: bool):
        self.quiet, self.sweep_dir, self.metric = quiet, None, None

    def __call__(self, kind: str, data: dict) -> None:
        if kind == "started":
            self.sweep_dir = data["sweep_dir"]
            self.write(started_line(data))
        elif kind == "trial":
            self.write(trial_line(data))

    def write(self, line: str) -> None:
        if not self.quiet:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        """Nothing drawn that must be taken down."""


class LiveTrials(TrialLines):
    """On a terminal: a bar of trials done, with the running, complete, pruned and failed counts, the
    best value so far, elapsed time and an estimate of the time left; each finished trial's line
    printed above it."""

    def __init__(self, err):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        super().__init__(quiet=False)
        self.progress = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                                 console=err, transient=True)
        self.task, self.running, self.counts, self.best = None, set(), {}, None

    def __call__(self, kind: str, data: dict) -> None:
        if kind == "started":
            self.sweep_dir = data["sweep_dir"]
            self.progress.console.print(started_line(data), soft_wrap=True, highlight=False)
            self.progress.start()
            self.task = self.progress.add_task("trials", total=data["trials"], completed=data["done"], status="")
        elif kind == "queued":
            self.running.add(data["number"])
        elif kind == "trial":
            self.running.discard(data["row"]["number"])
            self.counts, self.best, self.metric = data["counts"], data["best"], data["metric"]
            self.progress.console.print(trial_line(data), soft_wrap=True, highlight=False)
        if self.task is not None:
            done = sum(self.counts.values()) - self.counts.get("interrupted", 0)
            self.progress.update(self.task, completed=done, status=live_status(self.running, self.counts, self.best,
                                                                              self.metric))

    def close(self) -> None:
        self.progress.stop()


def started_line(data: dict) -> str:
    where = f"{data['slots']} local workers" if data["local"] else f"the Dask cluster at {data['address']}"
    again = f" (resumed: {data['done']} recorded)" if data["resumed"] else ""
    return f"sweep {data['sweep_dir']}: {data['trials']} trials on {where}, {data['slots']} at a time{again}"


def live_status(running: set, counts: dict, best: dict | None, metric: str | None) -> str:
    """'2 running · 5 complete · 3 pruned · 1 failed · best val_accuracy 0.958 (trial 4)'."""
    parts = [f"{len(running)} running"] + [f"{counts[state]} {word}" for state, word in
                                           (("complete", "complete"), ("pruned", "pruned"), ("fail", "failed"))
                                           if counts.get(state)]
    if best:
        parts.append(f"best {metric} {best['value']:.4g} (trial {best['number']})")
    return " · ".join(parts)


def trial_line(data: dict) -> str:
    row, counts, best, metric = data["row"], data["counts"], data["best"], data["metric"]
    done = sum(counts.values()) - counts["interrupted"]
    head = f"trial {row['number']} ({done}/{data['trials']})"
    if row["state"] == "fail":
        result = f"failed: {one_line(row['error'])}"
    elif row["state"] == "interrupted":
        result = f"interrupted at epoch {row['epochs_run']}, with a checkpoint to continue from"
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
    out.print(f"[bold]Trials:[/] {trials['requested']} requested: {trials['complete']} complete, {trials['pruned']} "
              f"pruned, {trials['fail']} failed, in {summary['seconds']:.1f} s on {summary['slots']} workers")
    out.print(f"[bold]Sweep directory:[/] {summary['sweep_dir']}", soft_wrap=True)
    if best:
        out.print(f"Train the best config again with: bpcli train {best['config']}", soft_wrap=True)


def format_params(params: dict) -> str:
    return " ".join(f"{key}={format_value(value)}" for key, value in params.items())


def one_line(text: str) -> str:
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())
