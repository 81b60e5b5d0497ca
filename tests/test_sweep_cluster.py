"""bpcli sweep on real engines: Dask worker processes on 127.0.0.1, Optuna's samplers, pruners and storage.

One sweep of 12 trials on a LocalCluster of 2 workers (as `bpcli sweep` runs it, in a subprocess)
is shared by the first tests: tiny spiral networks, 6 epochs, a median pruner, a learning rate
range wide enough for some trials to be pruned, an L2 choice that makes some diverge, and a
momentum choice that the config refuses with nesterov. Then a grid on a cluster the test
starts itself, joined by address as a remote one would be.
"""

import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.sweep_files import spirals_base
from bpcli.cli.app import app
from bpcli.config.loading import load_config
from bpcli.sweep.cluster import connect
from bpcli.sweep.driver import preview, run_sweep
from bpcli.sweep.engine import journal_storage
from bpcli.sweep.spec import load_sweep
from bpcli.sweep.trials import trial_seed
from bpcli.training.run import train_run

pytestmark = pytest.mark.slow

BASE = spirals_base()

SWEEP = """\
base: base.yaml
metric: val_accuracy
trials: 12
sampler: random
seed: 3
pruner: {name: median, min_epochs: 2, startup_trials: 2}
space:
  optimizer.lr: {loguniform: [1.0e-3, 1.0]}
  model.layers.0.units: {int: [4, 32]}
  optimizer.momentum: {choice: [0.0, 0.5, 0.9]}
  loss.l2: {choice: [0.0, 1.0e-4, 1.0e+5]}
name: spirals
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """(folder, sweep directory, the --json summary) of the 12-trial sweep on 2 local workers."""
    folder = tmp_path_factory.mktemp("sweep")
    (folder / "base.yaml").write_text(BASE)
    (folder / "sweep.yaml").write_text(SWEEP)
    result = subprocess.run([sys.executable, "-m", "bpcli", "sweep", "sweep.yaml", "--workers", "2", "--json"],
                            cwd=folder, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    return folder, Path(folder / summary["sweep_dir"]), summary, result.stderr


def rows(sweep_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (sweep_dir / "trials.jsonl").read_text().splitlines()]


def test_every_trial_is_recorded_once_with_params_from_the_space(swept):
    folder, sweep_dir, summary, _ = swept
    trials = rows(sweep_dir)
    assert [t["number"] for t in trials] == list(range(12))
    with open(sweep_dir / "trials.csv") as f:
        table = list(csv.DictReader(f))
    assert [int(r["number"]) for r in table] == list(range(12))
    assert list(table[0]) == ["number", "state", "value", "best_epoch", "epochs_run", "seconds", "training_seconds",
                              "worker", "continued_from_epoch", "error", "optimizer.lr", "model.layers.0.units", "optimizer.momentum",
                              "loss.l2"]
    for t in trials:
        p = t["params"]
        assert 1e-3 <= p["optimizer.lr"] <= 1 and 4 <= p["model.layers.0.units"] <= 32
        assert p["optimizer.momentum"] in (0.0, 0.5, 0.9) and p["loss.l2"] in (0.0, 1e-4, 1e5)
    assert summary["trials"] == {"requested": 12, **{s: sum(t["state"] == s for t in trials)
                                                     for s in ("complete", "pruned", "fail", "interrupted")}}
    assert summary["finished"] and summary["trials"]["interrupted"] == 0


def test_a_seeded_random_sampler_draws_what_the_dry_run_showed(swept, monkeypatch):
    """The driver asks for every trial in order: 2 workers sample what no worker at all (--dry-run) does."""
    folder, sweep_dir, _, _ = swept
    monkeypatch.chdir(folder)
    expected = [s["params"] for s in preview(load_sweep("sweep.yaml"), 12)]
    assert [t["params"] for t in rows(sweep_dir)] == expected


def test_trials_are_pruned_refused_and_diverged_and_the_sweep_goes_on(swept):
    _, sweep_dir, summary, stderr = swept
    trials = {t["number"]: t for t in rows(sweep_dir)}
    pruned = [t for t in trials.values() if t["state"] == "pruned"]
    assert pruned and all(2 <= t["epochs_run"] <= 6 for t in pruned)
    assert all(t["value"] is not None for t in pruned)
    refused = [t for t in trials.values() if t["error"] and t["error"].startswith("config refused")]
    assert refused and all(t["params"]["optimizer.momentum"] == 0.0 and t["worker"] is None for t in refused)
    assert all(not (sweep_dir / "trials" / str(t["number"])).exists() for t in refused)
    diverged = [t for t in trials.values() if t["error"] and "the loss became" in t["error"]]
    assert diverged and all(t["params"]["loss.l2"] == 1e5 and t["state"] == "fail" for t in diverged)
    complete = [t for t in trials.values() if t["state"] == "complete"]
    assert len(complete) >= 2 and len({t["worker"] for t in complete + pruned}) == 2   # both workers trained
    assert all(f"trial {n} (" in stderr for n in trials)   # a line per finished trial


def test_each_trial_is_an_ordinary_run_directory_seeded_from_the_sweep(swept, tmp_path):
    _, sweep_dir, _, _ = swept
    trial = next(t for t in rows(sweep_dir) if t["state"] == "complete")
    run = sweep_dir / "trials" / str(trial["number"])
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "metrics.csv", "metrics.jsonl", "layers.csv",
                                               "summary.json", "checkpoints"}
    assert not (run / ".lock").exists()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["training"]["seed"] == trial_seed(3, trial["number"])
    assert (config["output"]["dir"], config["output"]["name"]) == ("runs", None)   # not the worker's temporary folder
    assert config["optimizer"]["lr"] == trial["params"]["optimizer.lr"]
    result = CliRunner().invoke(app, ["eval", str(run / "checkpoints" / "best.safetensors"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n"] == 75   # spirals' test set, beside its 300 training points
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + trial["epochs_run"]


def test_best_yaml_trains_to_the_reported_value(swept, tmp_path):
    _, sweep_dir, summary, _ = swept
    complete = [t for t in rows(sweep_dir) if t["state"] == "complete"]
    best = max(complete, key=lambda t: t["value"])
    assert summary["best"]["number"] == best["number"] and summary["best"]["value"] == best["value"]
    config = load_config(sweep_dir / "best.yaml", [f"output.dir={tmp_path}"])
    again = train_run(config, "best.yaml")
    assert again["monitor"]["best"] == best["value"] and again["best_epoch"] == best["best_epoch"]


def test_the_study_is_kept_in_the_sweep_directory(swept):
    import optuna

    folder, sweep_dir, summary, _ = swept
    assert summary["storage"] == {"kind": "journal", "where": str(Path(summary["sweep_dir"]) / "study.journal")}
    study = optuna.load_study(study_name=sweep_dir.name, storage=journal_storage(sweep_dir / "study.journal"))
    states = {t.number: t.state.name.lower() for t in study.trials}
    assert states == {t["number"]: t["state"] for t in rows(sweep_dir)}
    assert study.best_trial.number == summary["best"]["number"]
    resolved = yaml.safe_load((sweep_dir / "sweep.yaml").read_text())
    assert resolved["pruner"] == {"name": "median", "min_epochs": 2, "startup_trials": 2}


def test_a_grid_on_a_running_cluster_loopback_one_blas_thread_and_one_worker(tmp_path, monkeypatch):
    """A cluster the test starts, joined by address as a remote one is, with the study in SQLite
    (--storage); the run directories come back through Dask."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "grid.yaml").write_text(textwrap.dedent("""\
        base: base.yaml
        sampler: grid
        seed: 4
        space:
          optimizer.lr: {choice: [0.05, 0.2]}
          model.layers.0.units: {choice: [4, 8]}
        set: {training.epochs: 2}
        """))
    sweep = load_sweep("grid.yaml")
    with connect(workers=1) as cluster:
        assert cluster.address.startswith("tcp://127.0.0.1:")
        assert all(address.startswith("tcp://127.0.0.1:") for address in cluster.client.nthreads())
        blas = cluster.client.run(lambda: {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                                          "MKL_NUM_THREADS")})
        assert list(blas.values()) == [{"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}]
        events = []
        summary = run_sweep(sweep, address=cluster.address, storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                            on_event=lambda kind, data: events.append((kind, data)))
    sweep_dir = Path(summary["sweep_dir"])
    assert [kind for kind, _ in events] == ["started"] + ["queued", "trial"] * 4   # one worker: one at a time
    assert_live_display_shows(events, summary)
    assert summary["storage"] == {"kind": "url", "where": f"sqlite:///{tmp_path / 'optuna.db'}"}
    trials = rows(sweep_dir)
    assert [t["params"] for t in trials] == [s["params"] for s in preview(sweep, 4)]
    assert len({tuple(t["params"].values()) for t in trials}) == 4 and summary["cluster"] == cluster.address
    assert all((sweep_dir / "trials" / str(t["number"]) / "checkpoints" / "best.safetensors").is_file()
               for t in trials)
    import optuna

    study = optuna.load_study(study_name=sweep_dir.name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4 and not (sweep_dir / "study.journal").exists()


@pytest.fixture
def dask_processes(tmp_path):
    """A `dask scheduler` and two `dask worker` processes on 127.0.0.1, started as a user would; the
    workers' temporary folder is one of their own. Yields (scheduler address, the workers' TMPDIR)."""
    import distributed

    dask = str(Path(sys.executable).with_name("dask"))
    scheduler_file, worker_tmp = tmp_path / "scheduler.json", tmp_path / "worker-tmp"
    worker_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(worker_tmp), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    processes = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                   "--scheduler-file", str(scheduler_file)], **quiet)]
    try:
        for name in ("a", "b"):
            processes.append(subprocess.Popen(
                [dask, "worker", "--scheduler-file", str(scheduler_file), "--host", "127.0.0.1", "--nthreads", "1",
                 "--no-dashboard", "--name", name, "--local-directory", str(worker_tmp / name)],
                env=env, cwd=worker_tmp, **quiet))
        for _ in range(300):
            if scheduler_file.exists():
                break
            time.sleep(0.1)
        with distributed.Client(scheduler_file=str(scheduler_file), timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            address = client.scheduler.address
        yield address, worker_tmp, processes[1:]
        with distributed.Client(address, timeout=30) as client:
            client.shutdown()   # the scheduler closes its workers: faster than a signal to each
        for process in processes:
            process.wait(timeout=30)
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def test_separate_dask_processes_send_the_run_directories_back_and_survive_a_killed_worker(tmp_path,
                                                                                           dask_processes):
    """The workers share no folder with the sweep: each trial trains in the workers' own temporary folder,
    and its run directory arrives in the sweep directory through Dask. A worker SIGKILLed in the middle
    of a trial (its nanny starts it again) has its trial continued on a worker from the copy of its
    run directory it kept on the scheduler, ending as the trial trained alone does: every trial is
    recorded once."""
    import psutil

    address, worker_tmp, workers = dask_processes
    driver = tmp_path / "driver"
    driver.mkdir()
    (driver / "base.yaml").write_text(BASE.replace("n: 300", "n: 6000").replace("epochs: 6", "epochs: 20"))
    (driver / "sweep.yaml").write_text(SWEEP.replace("trials: 12", "trials: 4").replace("seed: 3", "seed: 5")
                                       .replace("  loss.l2: {choice: [0.0, 1.0e-4, 1.0e+5]}\n", "")
                                       .replace("{choice: [0.0, 0.5, 0.9]}", "{choice: [0.5, 0.9]}")
                                       + "share_every: 0\n")
    sweep = subprocess.Popen([sys.executable, "-m", "bpcli", "sweep", "sweep.yaml", "--cluster", address, "--json"],
                             cwd=driver, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert sweep.stderr.readline().startswith("sweep sweeps/")
    for _ in range(600):   # until both workers are in the middle of a trial, each with a checkpoint
        if len(list(worker_tmp.glob("bpcli-trial-*/run/checkpoints/last.safetensors"))) == 2:
            break
        time.sleep(0.05)
    time.sleep(0.3)   # the copy to the scheduler follows the checkpoint
    worker = next(child for child in psutil.Process(workers[0].pid).children()   # under the `dask worker` nanny
                  if "spawn_main" in " ".join(child.cmdline()))
    worker.kill()
    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, err
    summary = json.loads(out)
    sweep_dir = driver / summary["sweep_dir"]
    trials = rows(sweep_dir)
    assert [t["number"] for t in trials] == [0, 1, 2, 3] and summary["cluster"] == address
    assert all(t["state"] in ("complete", "pruned") for t in trials), trials
    for t in trials:
        run = sweep_dir / "trials" / str(t["number"])
        assert (run / "checkpoints" / "best.safetensors").is_file() and (run / "metrics.csv").is_file()
        assert len((run / "metrics.csv").read_text().splitlines()) == 1 + t["epochs_run"]
    left = list(worker_tmp.glob("bpcli-trial-*"))   # the workers remove their folders; the killed one could not
    assert len(left) == 1
    continued = [t for t in trials if t["continued_from_epoch"]]
    assert len(continued) == 1, trials   # the killed worker's trial, from the checkpoint it had shared
    run = sweep_dir / "trials" / str(continued[0]["number"])
    alone = train_run(load_config(run / "config.yaml", [f"output.dir={tmp_path / 'alone'}"]), "alone.yaml")
    assert metric_rows(run) == metric_rows(Path(alone["run_dir"]))[:continued[0]["epochs_run"]]
    assert (sweep_dir / "study.journal").is_file() and (sweep_dir / "best.yaml").is_file()


def assert_live_display_shows(events: list, summary: dict) -> None:
    """The terminal display, fed a real sweep's events: its trial lines, then a bar with the counts and best."""
    import io

    from rich.console import Console

    from bpcli.cli.sweep import LiveTrials

    screen = io.StringIO()
    display = LiveTrials(Console(file=screen, force_terminal=True, width=160, color_system=None))
    for kind, data in events[:-1]:
        display(kind, data)
    status = display.progress.tasks[0].fields["status"]
    assert status.startswith("1 running · 3 complete · best val_accuracy") and display.progress.tasks[0].completed == 3
    display(*events[-1])
    display.close()
    best = summary["best"]
    assert display.progress.tasks[0].fields["status"] == f"0 running · 4 complete · best val_accuracy " \
                                                        f"{best['value']:.4g} (trial {best['number']})"
    text = screen.getvalue()
    assert text.startswith(f"sweep {summary['sweep_dir']}: 4 trials on the Dask cluster at")
    assert all(f"trial {n} ({n + 1}/4) complete" in text for n in range(4))


def metric_rows(run: Path) -> list[dict]:
    """metrics.jsonl without the seconds (the one column the clock decides)."""
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_show_lists_the_best_trials_first(swept):
    _, sweep_dir, summary, _ = swept
    result = CliRunner().invoke(app, ["sweep", "show", str(sweep_dir), "--top", "3", "--json"])
    assert result.exit_code == 0, result.output
    top = json.loads(result.stdout)["top"]
    by_value = sorted(rows(sweep_dir), key=lambda t: (-t["value"] if t["value"] is not None else 0, t["number"]))
    expected = [t for t in by_value if t["state"] == "complete"] + [t for t in by_value if t["state"] == "pruned"]
    assert [t["number"] for t in top] == [t["number"] for t in expected[:3]]
    assert top[0]["number"] == summary["best"]["number"]
    text = CliRunner().invoke(app, ["sweep", "show", str(sweep_dir)]).output
    assert "Best " in text and "by val_accuracy (maximize)" in text and f"{sweep_dir}/best.yaml" in text


def test_plot_of_a_sweep_draws_its_history_each_parameter_and_the_best_curves(swept, tmp_path):
    from bpcli.plots.sweep import best_so_far, sweep_figure
    from bpcli.sweep.sweepdir import SweepDir

    _, sweep_dir, summary, _ = swept
    result = CliRunner().invoke(app, ["plot", str(sweep_dir), "-o", str(tmp_path / "sweep.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sweep.png").read_bytes().startswith(b"\x89PNG")
    search = SweepDir(sweep_dir).search()
    trials = rows(sweep_dir)
    assert search["trials"] == trials and search["metric"] == "val_accuracy"
    by_value = sorted((t for t in trials if t["value"] is not None), key=lambda t: (-t["value"], t["number"]))
    expected = [t for t in by_value if t["state"] == "complete"] + [t for t in by_value if t["state"] == "pruned"]
    assert list(search["curves"]) == [t["number"] for t in expected[:5]]   # complete ones first
    for number, curve in search["curves"].items():
        logged = [json.loads(line) for line in
                  (sweep_dir / "trials" / str(number) / "metrics.jsonl").read_text().splitlines()]
        assert curve == [(row["epoch"], row["val_accuracy"]) for row in logged]
    line = best_so_far(trials, "maximize")
    assert line[-1][1] == summary["best"]["value"] and all(a[1] <= b[1] for a, b in zip(line, line[1:]))
    axes = [ax for ax in sweep_figure(search).axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes][1:] == ["optimizer.lr", "model.layers.0.units", "optimizer.momentum",
                                                   "loss.l2", "best 5 trials, per epoch"]
    assert axes[1].get_xscale() == "log"   # the learning rate spans decades
    drawn = sum(len(collection.get_offsets()) for collection in axes[0].collections)
    assert drawn == sum(t["state"] in ("complete", "pruned") for t in trials)


def test_a_seeded_tpe_sweep_on_one_worker_draws_the_same_trials_twice(tmp_path, monkeypatch):
    """With one worker each trial is asked after the one before it was told, so TPE, past its 10 random
    startup trials, learns from the same history and draws the same params (docs/sweeps.md)."""
    import distributed

    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.yaml").write_text(BASE.replace("n: 300", "n: 90").replace("epochs: 6", "epochs: 2"))
    (tmp_path / "tpe.yaml").write_text(SWEEP.replace("sampler: random", "sampler: tpe").replace("trials: 12", "trials: 11")
                                       .replace("  loss.l2: {choice: [0.0, 1.0e-4, 1.0e+5]}\n", ""))
    drawn = []
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        for _ in range(2):
            summary = run_sweep(load_sweep("tpe.yaml"), address=cluster.scheduler_address)
            drawn.append([(t["number"], t["params"], t["state"], t["value"]) for t in rows(Path(summary["sweep_dir"]))])
    assert len(drawn[0]) == 11 and drawn[0] == drawn[1]
    startup = [params for _, params, _, _ in drawn[0][:10]]
    assert drawn[0][10][1] not in startup   # the learned trial is a new draw, not a replay
