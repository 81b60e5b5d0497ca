"""`bpcli train CONFIG`: turn a YAML file into a trained network, with progress, checkpoints and logs."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from bpcli.cli.common import console, print_json, user_errors

SET_HELP = "Override a config key, e.g. --set optimizer.lr=0.05 (repeatable)."


def progress_callbacks(quiet: bool) -> list:
    """Live bars on a terminal (without colour under NO_COLOR), epoch lines otherwise, nothing with --quiet."""
    from bpcli.cli.progress import PlainProgress, RichProgress

    if quiet:
        return []
    err = console(stderr=True)
    return [RichProgress(err)] if err.is_terminal else [PlainProgress(sys.stderr)]


def resolve_config(config: Optional[str], overrides: list[str], resume: Optional[str]):
    """(Config, name) from CONFIG (+ --set), or, with --resume and no CONFIG, from the checkpoint's own."""
    from bpcli.config.loading import load_config
    from bpcli.errors import ConfigError

    if config:
        return load_config(config, overrides), config
    if not resume:
        raise ConfigError("give a CONFIG file (or --resume RUN_DIR to continue a run with its own config)")
    from bpcli.training.run import resume_point

    checkpoint, run = resume_point(resume, warn)
    if checkpoint is None:   # stopped before its first save: its config.yaml is the config
        return load_config(run.config, overrides), "resumed"
    if overrides:
        raise ConfigError("--set needs the CONFIG file; with --resume alone the checkpoint's config is used as is")
    from bpcli.config.loading import parse_config_text  # the stored config is checked like a file before it is used
    from bpcli.config.yamlio import dump_yaml

    stored = dump_yaml(checkpoint.meta["config"])
    return parse_config_text(stored, f"{checkpoint.path} (its stored config)"), "resumed"


@user_errors
def train(
    config: Optional[str] = typer.Argument(None, help="YAML config file (see configs/)."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    resume: Optional[str] = typer.Option(None, help="Continue a run: its directory or its last checkpoint."),
    init_from: Optional[str] = typer.Option(None, "--init-from", help="Start a new run from a checkpoint's weights "
                                            "(fine-tuning; e.g. RUN_DIR/checkpoints/best.safetensors)."),
    force: bool = typer.Option(False, help="Resume even if the config changed in ways that alter the run."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Dataset cache folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON object on stdout (progress "
                                 "and warnings go to stderr)."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also write TensorBoard event files to RUN_DIR/tb "
                                     "(as output.tensorboard: true; needs tensorboardX, the tensorboard extra)."),
    sanity: bool = typer.Option(False, "--sanity", help="Run the sanity checks (initial loss, l2 in the loss, "
                                "overfit 100 examples) instead of training; exit 1 if one fails."),
) -> None:
    """Train the network a config file describes; write checkpoints and metric logs to a run directory.

    Ctrl-C (or SIGTERM) finishes the current batch, saves a resumable checkpoint and
    exits 130 (143); continue with --resume RUN_DIR. With --sanity, check the setup
    in seconds instead of training (no run directory is created).

    Example: bpcli train configs/quickstart.yaml --set training.epochs=5; bpcli train configs/xor.yaml --sanity
    """
    from bpcli.cli.data import DownloadProgress
    from bpcli.errors import ConfigError, Interrupted
    from bpcli.training.run import train_run
    from bpcli.training.interrupts import StopRequest, graceful_interrupts

    if resume and init_from:
        raise ConfigError("--resume continues a run and --init-from starts a new one from another run's weights: "
                          "give one of them")
    if sanity and resume:
        raise ConfigError("--sanity checks a config before a new run starts; it cannot be combined with --resume "
                          "(run bpcli train CONFIG --sanity, then train or resume without it)")
    if sanity and as_json:
        raise ConfigError("--json prints the summary of a training run, and --sanity trains none: give one of them")
    cfg, name = resolve_config(config, overrides or [], resume)
    if tensorboard:
        cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"tensorboard": True})})
    if sanity:
        run_sanity_checks(cfg, name, data_dir)
        return
    stop = StopRequest()
    try:
        with graceful_interrupts(stop), DownloadProgress() as downloads:
            summary = train_run(cfg, name, data_dir=data_dir, resume=resume, init_from=init_from, force=force,
                                callbacks=progress_callbacks(quiet), stop=stop, on_progress=downloads,
                                on_warning=warn, invocation=invocation(config, overrides or []))
    except Interrupted as stopped:
        again = f"bpcli train {config + ' ' if config else ''}--resume {stopped.run_dir}"
        typer.echo(f"{stopped}: a resumable checkpoint was saved. Continue with:\n  {again}", err=True)
        raise typer.Exit(stopped.exit_code)
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once; every checkpoint on disk is complete
        typer.echo("aborted by a second Ctrl-C; the last checkpoint written is intact: continue with "
                   "--resume RUN_DIR", err=True)
        raise typer.Exit(130)
    if as_json:
        print_json(summary)
    else:
        print_summary(summary)


def invocation(config: Optional[str], overrides: list[str]):
    """What run.json records of this command: its command line as the shell gave it, the --set overrides, the
    config file read (a shipped config's own path when CONFIG named one)."""
    from bpcli.config.loading import config_path
    from bpcli.training.record import Invocation

    return Invocation(list(sys.argv), list(overrides), str(config_path(config)) if config else None)


def run_sanity_checks(cfg, name: str, data_dir: Optional[str]) -> None:
    """Print the checks as a table; exit 1 if any fails. No run directory is created."""
    from bpcli.cli.data import DownloadProgress
    from bpcli.tools.sanity import sanity_check

    started = time.perf_counter()
    try:
        with DownloadProgress() as downloads:
            checks = sanity_check(cfg, data_dir, downloads)
    except KeyboardInterrupt:
        typer.echo("sanity checks interrupted; nothing was written", err=True)
        raise typer.Exit(130)
    print_checks(checks, name, time.perf_counter() - started)
    if not all(check.passed for check in checks):
        raise typer.Exit(1)


def print_checks(checks: list, name: str, seconds: float) -> None:
    """A row per check, then each check's note (what was measured, how, what was turned off)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"Sanity checks: {escape(name)}")
    for column in ("check", "result", "measured", "expected"):
        table.add_column(column)
    for check in checks:
        verdict = "[green]pass[/]" if check.passed else "[bold red]FAIL[/]"
        table.add_row(check.name, verdict, escape(check.measured), escape(check.expected))
    out = console()
    out.print(table)
    for check in checks:
        out.print(f"[bold]{check.name}:[/] {escape(check.note)}.")
    failed = sum(not check.passed for check in checks)
    out.print(f"{len(checks) - failed}/{len(checks)} checks passed in {seconds:.1f} s; no run directory was written.")


def warn(message: str) -> None:
    """On stderr, through sys.stderr itself: while Rich's progress bars run, that is Rich's proxy, which
    prints the line above the bars (typer.echo writes to the stream's buffer and would cut into them)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def print_summary(summary: dict) -> None:
    from bpcli.training.rundir import RunDir

    out = console()
    if summary.get("already_finished"):
        out.print("[bold]Nothing to train:[/] the run had already finished; its summary and best checkpoint "
                  "are up to date.")
    out.print(f"[bold]Stopped:[/] {summary['stopped_because']}")
    best = summary["monitor"]
    if summary["best_epoch"]:
        out.print(f"[bold]Best epoch:[/] {summary['best_epoch']} ({best['metric']} {best['best']:.6g}); "
                  f"final weights: {summary['final_weights']}")
    for label, line in loss_sparklines(RunDir(summary["run_dir"]).metrics_jsonl):
        out.print(f"[bold]{label}[/] {line}", soft_wrap=True)
    test = summary.get("test")
    if test:
        figures = ", ".join(f"{k} {v:.2%}" if k == "accuracy" else f"{k} {v:.6g}" for k, v in test.items())
        out.print(f"[bold]Test:[/] {figures}")
    out.print(f"[bold]Run directory:[/] {summary['run_dir']} ({summary['seconds']:.1f} s of training)")
    out.print(f"Evaluate with: {next_step(summary)}", soft_wrap=True)


def next_step(summary: dict) -> str:
    """The eval command for the run's checkpoint, on a split it has: test if held out, else val, else train."""
    from bpcli.training.rundir import RunDir

    run = RunDir(summary["run_dir"])
    checkpoint = run.best if summary["final_weights"] != "last" else run.last
    data = summary.get("data") or {}
    split = "" if summary.get("test") else " --split val" if data.get("n_val") else " --split train"
    return f"bpcli eval {checkpoint}{split}"


def loss_sparklines(metrics_file: Path, width: int = 60) -> list[tuple[str, str]]:
    """("Train loss:", "2.31 █▅▃▂▂▁▁ 0.21") per loss logged in metrics.jsonl; none if it cannot be read."""
    from bpcli.fileio import read_log_rows
    from bpcli.nn.metrics import sparkline

    rows, lines = read_log_rows(metrics_file), []
    for key, label in (("train_loss", "Train loss:"), ("val_loss", "  Val loss:")):
        values = [row[key] if isinstance(row.get(key), (int, float)) else math.nan for row in rows]
        if any(key in row for row in rows):
            lines.append((label, f"{values[0]:.3g} {sparkline(values, width)} {values[-1]:.3g}"))
    return lines
