"""`bpcli train CONFIG`: turn a YAML file into a trained network, with progress, checkpoints and logs."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from .common import console, no_color, user_errors

SET_HELP = "Override a config key, e.g. --set optimizer.lr=0.05 (repeatable)."


def progress_callbacks(quiet: bool) -> list:
    """Rich bars on a terminal, one plain line per epoch otherwise or with NO_COLOR, nothing with --quiet."""
    from ..callbacks import PlainProgress, RichProgress

    if quiet:
        return []
    err = console(stderr=True)
    return [RichProgress(err)] if err.is_terminal and not no_color() else [PlainProgress(sys.stderr)]


def resolve_config(config: Optional[str], overrides: list[str], resume: Optional[str]) -> tuple[dict, str]:
    """The resolved config from CONFIG (+ --set), or, with --resume and no CONFIG, the checkpoint's own."""
    from ..config import load_config, resolved_dict
    from ..errors import ConfigError

    if config:
        return resolved_dict(load_config(config, overrides)), config
    if not resume:
        raise ConfigError("give a CONFIG file (or --resume RUN_DIR to continue a run with its own config)")
    from ..run import find_checkpoint

    checkpoint = find_checkpoint(resume, warn)
    if overrides:
        raise ConfigError("--set needs the CONFIG file; with --resume alone the checkpoint's config is used as is")
    import yaml

    from ..config import parse_config_text  # the stored config is checked like a file before it is used

    stored = yaml.safe_dump(checkpoint.meta["config"], sort_keys=False)
    return resolved_dict(parse_config_text(stored, f"{checkpoint.path} (its stored config)")), "resumed"


@user_errors
def train(
    config: Optional[str] = typer.Argument(None, help="YAML config file (see configs/)."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help=SET_HELP),
    resume: Optional[str] = typer.Option(None, help="Continue a run: its directory or one of its checkpoints."),
    force: bool = typer.Option(False, help="Resume even if the config changed in ways that alter the run."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Dataset cache folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Train the network a config file describes; write checkpoints and metric logs to a run directory.

    Ctrl-C (or SIGTERM) finishes the current batch, saves a resumable checkpoint and
    exits 130 (143); continue with --resume RUN_DIR.

    Example: bpcli train configs/quickstart.yaml --set training.epochs=5
    """
    from ..commands.data import DownloadProgress
    from ..errors import Interrupted
    from ..run import train_run
    from ..train import StopRequest, graceful_interrupts

    cfg, name = resolve_config(config, overrides or [], resume)
    stop = StopRequest()
    try:
        with graceful_interrupts(stop), DownloadProgress() as downloads:
            summary = train_run(cfg, name, data_dir=data_dir, resume=resume, force=force,
                                callbacks=progress_callbacks(quiet), stop=stop, on_progress=downloads,
                                on_warning=warn)
    except Interrupted as stopped:
        again = f"bpcli train {config + ' ' if config else ''}--resume {stopped.run_dir}"
        typer.echo(f"{stopped}: a resumable checkpoint was saved. Continue with:\n  {again}", err=True)
        raise typer.Exit(stopped.exit_code)
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once; every checkpoint on disk is complete
        typer.echo("aborted by a second Ctrl-C; the last checkpoint written is intact: continue with "
                   "--resume RUN_DIR", err=True)
        raise typer.Exit(130)
    print_summary(summary)


def warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


def print_summary(summary: dict) -> None:
    out = console()
    out.print(f"[bold]Stopped:[/] {summary['stopped_because']}")
    best = summary["monitor"]
    if summary["best_epoch"]:
        out.print(f"[bold]Best epoch:[/] {summary['best_epoch']} ({best['metric']} {best['best']:.6g}); "
                  f"final weights: {summary['final_weights']}")
    test = summary.get("test")
    if test:
        figures = ", ".join(f"{k} {v:.2%}" if k == "accuracy" else f"{k} {v:.6g}" for k, v in test.items())
        out.print(f"[bold]Test:[/] {figures}")
    out.print(f"[bold]Run directory:[/] {summary['run_dir']} ({summary['seconds']:.1f} s of training)")
    out.print(f"Evaluate with: bpcli eval {summary['run_dir']}/checkpoints/"
              f"{'best' if summary['final_weights'] != 'last' else 'last'}.safetensors", soft_wrap=True)
