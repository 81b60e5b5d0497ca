"""Runs side by side (`bpcli compare RUN...`): what differs in their configs, how they ended, where they ran.

    compare_runs(run_dirs) -> {"config_keys": [...], "record_keys": [...], "runs": [run, ...]}

Each run: its directory and name; the values of the config keys that differ
between the runs (config.yaml; bookkeeping such as output.name left out, see
run.BOOKKEEPING); how it ended, its best epoch and monitored best, and its test
metrics (summary.json, absent while a run trains or after it was killed); its
last epoch's train_ and val_ metrics (metrics.jsonl); and what run.json says of
where it ran (versions, BLAS, threads, host, git commit), only the facts that
differ between the runs. The result is plain JSON-able data: the CLI prints it
as a table or as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

from bpcli.config.yamlio import read_yaml_file
from bpcli.errors import CheckpointError
from bpcli.fileio import read_log_rows
from bpcli.training.record import FORMAT
from bpcli.training.rundir import RunDir
from bpcli.training.run import config_value, differing_keys

RUN_HINT = "give run directories made by bpcli train (runs/<config>-<time>/, each holding config.yaml)"


def compare_runs(run_dirs: list[str | Path]) -> dict:
    """The comparison of the runs, in the order given."""
    runs = [RunDir(path) for path in run_dirs]
    configs = [run_config(run) for run in runs]
    facts = [record_facts(run) for run in runs]
    config_keys = differing_keys(configs)
    every_fact = dict.fromkeys(key for fact in facts for key in fact)
    record_keys = [key for key in every_fact if len({fact.get(key) for fact in facts}) > 1]
    return {"config_keys": config_keys, "record_keys": record_keys,
            "runs": [{**run_outcome(run),
                      "config": {key: config_value(config, key) for key in config_keys},
                      "record": {key: fact.get(key) for key in record_keys}}
                     for run, config, fact in zip(runs, configs, facts)]}


def run_config(run: RunDir) -> dict:
    """The run's resolved config; an error naming the folder if it is no run directory."""
    if not run.path.is_dir():
        raise CheckpointError(f"{run} {'is not a directory' if run.path.exists() else 'does not exist'}: {RUN_HINT}")
    if not run.config.is_file():
        raise CheckpointError(f"{run} has no config.yaml, so it is not a run directory: {RUN_HINT}")
    config = read_yaml_file(run.config).data   # a damaged file is a ConfigError naming its line
    if not isinstance(config, dict):
        raise CheckpointError(f"{run.config} is not a YAML mapping, so {run} is not a run directory: {RUN_HINT}")
    return config


def run_outcome(run: RunDir) -> dict:
    """How the run ended (summary.json) and its last epoch's metrics (metrics.jsonl)."""
    summary = read_json(run.summary) or {}
    rows = read_log_rows(run.metrics_jsonl)
    last = rows[-1] if rows else {}
    monitor = summary.get("monitor") or {}
    return {"run_dir": str(run), "name": run.path.resolve().name,
            "stopped_because": summary.get("stopped_because"),
            "epochs_run": summary.get("epochs_run", last.get("epoch")),
            "best_epoch": summary.get("best_epoch"),
            "monitor": {"metric": monitor.get("metric"), "best": monitor.get("best")} if monitor else None,
            "final": {k: v for k, v in last.items() if k.startswith(("train_", "val_"))},
            "test": summary.get("test"), "seconds": summary.get("seconds")}


def record_facts(run: RunDir) -> dict:
    """What run.json says of where and with what the run was trained, as {fact: text}; {} without run.json.

    A run resumed elsewhere has several values for a fact: they are joined in session order.
    """
    record = read_json(run.record)
    sessions = record.get("sessions") if record and record.get("format") == FORMAT else None
    if not sessions:
        return {}
    per_session = [session_facts(s) for s in sessions if isinstance(s, dict)]
    keys = list(dict.fromkeys(k for facts in per_session for k in facts))
    return {key: " -> ".join(dict.fromkeys(str(f.get(key)) for f in per_session)) for key in keys}


def session_facts(session: dict) -> dict:
    """One session's environment and commit, each as a short text."""
    env = session.get("environment") or {}
    blas, threads, git = env.get("blas") or {}, env.get("threads") or {}, session.get("git")
    variables = " ".join(f"{k}={v}" for k, v in (threads.get("variables") or {}).items())
    return {"bpcli": env.get("bpcli"), "python": env.get("python"), "numpy": env.get("numpy"),
            "blas": " ".join(str(blas[k]) for k in ("name", "version") if blas.get(k)) or None,
            "threads": " ".join(p for p in (f"{threads.get('usable_cpus')} cpus", variables) if p),
            "host": env.get("host"), "platform": env.get("platform"),
            "git": None if not git else git["commit"][:12] + (" (dirty)" if git.get("dirty") else "")}


def read_json(path: Path) -> dict | None:
    """A JSON object from a run's file; None if it is missing; an error naming the file if it is damaged."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}:{error.lineno}: damaged, not JSON ({error.msg}); bpcli writes it whole, "
                              "so it was changed afterwards: restore or delete it") from None
    return data if isinstance(data, dict) else None
