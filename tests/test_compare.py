"""bpcli compare: the config keys that differ, how each run ended, and where it ran when that differs; and a
comparison plot that names runs by their differing keys."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.tiny_configs import tiny_spirals
from bpcli.cli.app import app
from bpcli.config.loading import parse_config_text
from bpcli.config.sections import resolved_dict
from bpcli.tools.compare import compare_runs
from bpcli.training.run import train_run

runner = CliRunner()

TINY = tiny_spirals()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Three runs: a; b with another lr and seed; c as a, kept elsewhere (differs only in bookkeeping)."""
    folder = tmp_path_factory.mktemp("compare")
    made = []
    for name, sets in (("a", []), ("b", ["optimizer.lr=0.003", "training.seed=1"]),
                       ("c", ["checkpoint.keep=1", "output.tensorboard=false"])):
        config = parse_config_text(TINY, "tiny.yaml", [f"output.dir={folder}", f"output.name={name}", *sets])
        made.append(Path(train_run(resolved_dict(config), "tiny.yaml")["run_dir"]))
    return made


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_differing_keys_and_each_runs_outcome(runs):
    a, b, _ = runs
    comparison = compare_runs([a, b])
    assert comparison["config_keys"] == ["optimizer.lr", "training.seed"]
    assert [r["config"] for r in comparison["runs"]] == [{"optimizer.lr": 0.01, "training.seed": 0},
                                                         {"optimizer.lr": 0.003, "training.seed": 1}]
    for run, row in zip((a, b), comparison["runs"]):
        summary, last = json.loads((run / "summary.json").read_text()), jsonl(run / "metrics.jsonl")[-1]
        assert row["name"] == run.name and row["best_epoch"] == summary["best_epoch"]
        assert row["monitor"] == {"metric": "val_loss", "best": summary["monitor"]["best"]}
        assert row["test"] == summary["test"] and row["epochs_run"] == 2
        assert row["final"] == {k: v for k, v in last.items() if k.startswith(("train_", "val_"))}
    assert comparison["record_keys"] == []   # the same machine, the same versions, no repository
    assert compare_runs([a, runs[2]])["config_keys"] == []   # checkpoint.* and output.* are bookkeeping


def test_run_json_differences_are_listed_and_a_run_without_one_shows_none(runs, tmp_path):
    a, b, _ = runs
    moved = tmp_path / "b-elsewhere"
    shutil.copytree(b, moved)
    record = json.loads((moved / "run.json").read_text())
    record["sessions"][0]["environment"].update(host="gpu-box", numpy="1.26.4")
    record["sessions"].append({**record["sessions"][0], "environment": {**record["sessions"][0]["environment"],
                                                                         "host": "other-box"}})
    (moved / "run.json").write_text(json.dumps(record))
    comparison = compare_runs([a, moved])
    assert comparison["record_keys"] == ["numpy", "host"]
    host = record["sessions"][0]["environment"]["host"]
    assert [r["record"] for r in comparison["runs"]] == [
        {"numpy": json.loads((a / "run.json").read_text())["sessions"][0]["environment"]["numpy"],
         "host": json.loads((a / "run.json").read_text())["sessions"][0]["environment"]["host"]},
        {"numpy": "1.26.4", "host": f"{host} -> other-box"}]
    (moved / "run.json").unlink()   # an older run: every fact of the other differs from "unknown"
    comparison = compare_runs([a, moved])
    assert "python" in comparison["record_keys"] and comparison["runs"][1]["record"]["python"] is None


def test_the_table_and_the_json(runs):
    a, b, _ = runs
    result = runner.invoke(app, ["compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    cells = lambda label: next(line for line in lines if label in line).replace("│", " ").split()  # noqa: E731
    assert cells("optimizer.lr") == ["optimizer.lr", "0.01", "0.003"]
    assert cells("training.seed") == ["training.seed", "0", "1"] and cells("best epoch") == ["best", "epoch", "2", "2"]
    summary = json.loads((b / "summary.json").read_text())
    test_row = next(line for line in lines if "test accuracy" in line)
    assert f"{summary['test']['accuracy']:.2%}" in test_row
    result = runner.invoke(app, ["compare", str(a), str(b), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == json.loads(json.dumps(compare_runs([a, b])))


def test_a_folder_that_is_no_run_and_a_damaged_summary_are_named(runs, tmp_path):
    result = runner.invoke(app, ["compare", str(runs[0]), str(tmp_path)])
    assert result.exit_code == 5
    assert result.stderr == (f"error: {tmp_path} has no config.yaml, so it is not a run directory: give run "
                             "directories made by bpcli train (runs/<config>-<time>/, each holding config.yaml)\n")
    damaged = tmp_path / "damaged"
    shutil.copytree(runs[0], damaged)
    (damaged / "config.yaml").write_text("model: [\n")
    result = runner.invoke(app, ["compare", str(damaged)])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {damaged / 'config.yaml'}:")
    shutil.copy(runs[0] / "config.yaml", damaged / "config.yaml")
    (damaged / "summary.json").write_text('{"best_epoch": 2,\n oops}')
    result = runner.invoke(app, ["compare", str(damaged)])
    assert result.exit_code == 5 and result.stderr.startswith(
        f"error: {damaged / 'summary.json'}:2: damaged, not JSON (Expecting property name enclosed in double quotes)")


def test_a_run_without_a_summary_is_compared_from_its_logs(runs, tmp_path):
    running = tmp_path / "running"
    shutil.copytree(runs[0], running)
    (running / "summary.json").unlink()
    (row,) = compare_runs([running])["runs"]
    assert (row["stopped_because"], row["best_epoch"], row["epochs_run"], row["test"]) == (None, None, 2, None)
    result = runner.invoke(app, ["compare", str(running)])
    assert result.exit_code == 0 and "(no summary.json: running or killed)" in result.stdout


def test_a_comparison_plot_names_runs_by_their_differing_keys(runs):
    pytest.importorskip("matplotlib")
    from bpcli.plots.training import read_run, run_labels, training_figure

    a, b, c = (read_run(run) for run in runs)
    assert run_labels([a, b]) == ["optimizer.lr=0.01, training.seed=0", "optimizer.lr=0.003, training.seed=1"]
    assert run_labels([a, b, c]) == ["optimizer.lr=0.01, training.seed=0 (a)", "optimizer.lr=0.003, training.seed=1",
                                     "optimizer.lr=0.01, training.seed=0 (c)"]
    assert run_labels([a, c]) == ["a", "c"] and run_labels([a]) == ["a"]   # nothing computed differs
    figure = training_figure([a, b])
    loss = next(ax for ax in figure.axes if ax.get_title().startswith("Loss"))
    assert {line.get_label() for line in loss.get_lines()} >= {"optimizer.lr=0.01, training.seed=0 train",
                                                               "optimizer.lr=0.003, training.seed=1 val"}
    assert figure.get_suptitle() == "2 runs: a, b"
