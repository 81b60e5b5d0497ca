"""bpcli sweep without a cluster: the sweep file's checks, the space, each trial's config and seed, --dry-run,
and the optional extra (tests/test_sweep_cluster.py runs sweeps on real Dask workers)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.sweep_files import spirals_base
from bpcli.cli.app import app
from bpcli.errors import ConfigError
from bpcli.sweep.driver import preview
from bpcli.sweep.space import PARAMS, grid_size
from bpcli.sweep.spec import load_sweep
from bpcli.sweep.trials import trial_config, trial_seed

runner = CliRunner()

BASE = spirals_base()

SWEEP = """\
base: base.yaml
trials: 12
sampler: random
seed: 1
set: {training.epochs: 3}
space:
  optimizer.lr: {loguniform: [1.0e-3, 1.0]}
  model.layers.0.units: {int: [4, 32]}
  optimizer.momentum: {choice: [0.0, 0.5, 0.9]}
"""


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A folder holding base.yaml, made the current one (the sweep files name base.yaml from it)."""
    (tmp_path / "base.yaml").write_text(BASE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(folder: Path, text: str, name: str = "sweep.yaml") -> str:
    (folder / name).write_text(textwrap.dedent(text))
    return name


def refused(folder, text: str) -> str:
    """The message `bpcli sweep` prints for a bad sweep file (exit 2, nothing created)."""
    result = runner.invoke(app, ["sweep", write(folder, text)])
    assert result.exit_code == 2, result.output
    assert not (folder / "sweeps").exists()
    return result.output


# -- the sweep file ------------------------------------------------------------------------------

def test_a_sweep_file_resolves_every_default(folder):
    sweep = load_sweep(write(folder, SWEEP))
    assert sweep.resolved() == {
        "base": str(folder / "base.yaml"), "metric": "val_accuracy", "trials": 12,
        "sampler": "random", "seed": 1, "pruner": {"name": "none"},
        "space": {"optimizer.lr": {"loguniform": [1.0e-3, 1.0]}, "model.layers.0.units": {"int": [4, 32]},
                  "optimizer.momentum": {"choice": [0.0, 0.5, 0.9]}},
        "set": {"training.epochs": 3}, "name": "sweep", "output_dir": "sweeps", "share_every": 30.0}
    assert sweep.direction == "maximize"
    assert sweep.base_config.training.epochs == 3 and sweep.base_config.training.monitor == "val_accuracy"


def test_a_misspelled_key_is_an_error_at_its_line_with_a_suggestion(folder):
    output = refused(folder, SWEEP.replace("trials: 12", "trails: 12"))
    assert output == ("error: sweep.yaml: 1 problem in the sweep file:\n"
                      "  sweep.yaml:2:1 trails: unknown key; allowed: base, metric, name, output_dir, pruner, "
                      "sampler, seed, set, share_every, space, trials. Did you mean 'trials'?\n")


@pytest.mark.parametrize("entry, message", [
    ("{choice: []}", "sweep.yaml:8:26 space.model.layers.0.units.choice: the choice is empty: list at least one "
                     "value (two, for a search)"),
    ("{int: [32, 4]}", "sweep.yaml:8:26 space.model.layers.0.units.int: the range is inverted: low 32 is above "
                       "high 4; write [4, 32]"),
    ("{int: [8, 8]}", "sweep.yaml:8:26 space.model.layers.0.units.int: the range [8, 8] holds one value: to fix a "
                      "key, put it under `set:` instead"),
    ("{int: [4, 3.5]}", "sweep.yaml:8:26 space.model.layers.0.units.int: must be a list of two integers, "
                        "[low, high] (got [4, 3.5])"),
    ("{choise: [8, 16]}", "sweep.yaml:8:26 space.model.layers.0.units.choise: unknown kind of dimension; allowed: "
                          "loguniform, uniform, int, choice. Did you mean 'choice'?"),
    ("{choice: [8, 8]}", "sweep.yaml:8:26 space.model.layers.0.units.choice: 8 is listed twice"),
    ("{choice: [8, [16]]}", "sweep.yaml:8:26 space.model.layers.0.units.choice: a choice holds plain values "
                            "(strings, numbers, true/false, null), not [16]"),
    ("16", "sweep.yaml:8:3 space.model.layers.0.units: must be a mapping with one of loguniform, uniform, int, "
           "choice, e.g. {loguniform: [1.0e-4, 1.0e-1]} or {choice: [16, 32]} (got 16); to fix a value, put it "
           "under `set:`"),
])
def test_each_badly_written_dimension_is_named_at_its_line(folder, entry, message):
    output = refused(folder, SWEEP.replace("{int: [4, 32]}", entry))
    assert f"  {message}\n" in output


def test_a_log_range_needs_a_positive_low_end(folder):
    output = refused(folder, SWEEP.replace("{loguniform: [1.0e-3, 1.0]}", "{loguniform: [0.0, 1.0]}"))
    assert ("sweep.yaml:7:18 space.optimizer.lr.loguniform: a log scale needs 0 < low (got low 0); use uniform "
            "for a range from 0") in output


def test_a_grid_over_a_continuous_range_is_refused(folder):
    output = refused(folder, SWEEP.replace("sampler: random", "sampler: grid"))
    assert ("sweep.yaml:7:18 space.optimizer.lr.loguniform: a grid needs a finite set of values, not a continuous "
            "loguniform range: use {choice: [...]} or {int: [low, high]}, or sampler: random or tpe") in output


def test_a_grid_takes_its_size_as_the_number_of_trials_and_no_more(folder):
    grid = SWEEP.replace("sampler: random", "sampler: grid").replace("{loguniform: [1.0e-3, 1.0]}",
                                                                     "{choice: [0.01, 0.1]}")
    assert load_sweep(write(folder, grid.replace("trials: 12\n", ""))).trials == 2 * 29 * 3
    output = refused(folder, grid.replace("trials: 12", "trials: 1000"))
    assert ("sweep.yaml:2:1 trials: the grid has 174 points, so at most 174 trials (got 1000); leave trials out to "
            "run the whole grid") in output


def test_a_random_or_tpe_sweep_says_how_many_trials(folder):
    output = refused(folder, SWEEP.replace("trials: 12\n", ""))
    assert "sweep.yaml:1:1 trials: required key is missing: how many trials the random sampler runs" in output


def test_keys_that_are_not_in_the_config_schema_are_refused_with_a_suggestion(folder):
    output = refused(folder, SWEEP.replace("optimizer.momentum:", "optimizer.momentun:")
                     .replace("model.layers.0.units:", "model.layers.5.units:")
                     .replace("training.epochs: 3", "trainnig.epochs: 3"))
    assert output == (
        "error: sweep.yaml: 3 problems in the sweep file:\n"
        "  sweep.yaml:5:7 set.trainnig.epochs: not a key of the config; its sections are: checkpoint, data, "
        "diagnostics, loss, model, optimizer, output, schedule, training. Did you mean 'training.epochs'?\n"
        "  sweep.yaml:8:3 space.model.layers.5.units: not a key of the config: model.layers is a list of 2 items, "
        "so '5' is not an index from 0 to 1\n"
        "  sweep.yaml:9:3 space.optimizer.momentun: not a key of the config; optimizer takes: alpha, beta1, beta2, "
        "eps, initial_accumulator_value, lr, momentum, name, nesterov, weight_decay. Did you mean "
        "'optimizer.momentum'?\n")


def test_an_option_of_another_variant_needs_that_variant_searched(folder):
    """beta1 is adam's: with optimizer.name searched, some trials take it (the others are refused);
    with the base's sgd fixed, none could."""
    beta1 = SWEEP.replace("optimizer.momentum: {choice: [0.0, 0.5, 0.9]}", "optimizer.beta1: {uniform: [0.8, 0.99]}")
    sweep = load_sweep(write(folder, beta1 + "  optimizer.name: {choice: [sgd, adam]}\n"))
    assert "optimizer.beta1" in sweep.space
    output = refused(folder, beta1)
    assert output == ("error: sweep.yaml: 1 problem in the sweep file:\n  sweep.yaml:9:3 space.optimizer.beta1: unknown "
                      "key; allowed: lr, momentum, name, nesterov, weight_decay. No trial can take it: the base's "
                      "variant here is fixed (search its name or type too)\n")


def test_values_the_config_refuses_are_named_at_their_item(folder):
    output = refused(folder, SWEEP.replace("{int: [4, 32]}", "{int: [0, 32]}")
                     .replace("optimizer.momentum: {choice: [0.0, 0.5, 0.9]}", "optimizer.momentum: {choice: [0.5, 1.5]}")
                     .replace("training.epochs: 3", "training.epochs: 0")
                     + "  data.batch_size: {uniform: [16, 64]}\n  model.layers.0.activation: {choice: [relu, tanhh]}\n")
    assert output == (
        "error: sweep.yaml: 6 problems in the sweep file:\n"
        "  sweep.yaml:5:7 set.training.epochs: must be an integer >= 1 (got 0)\n"
        "  sweep.yaml:8:32 space.model.layers.0.units.int.0: must be an integer >= 1 (got 0)\n"
        "  sweep.yaml:9:38 space.optimizer.momentum.choice.1: must be a number in [0, 1) (got 1.5)\n"
        "  sweep.yaml:10:31 space.data.batch_size.uniform.0: must be an integer >= 1 (got 16.0): uniform draws "
        "numbers with a fraction; for integers use {int: [low, high]}\n"
        "  sweep.yaml:10:35 space.data.batch_size.uniform.1: must be an integer >= 1 (got 64.0): uniform draws "
        "numbers with a fraction; for integers use {int: [low, high]}\n"
        "  sweep.yaml:11:46 space.model.layers.0.activation.choice.1: unknown value 'tanhh'; allowed: elu, gelu, "
        "identity, leaky_relu, relu, sigmoid, softmax, softplus, tanh. Did you mean 'tanh'?\n")


def test_the_metric_must_fit_the_base_configs_loss(folder):
    (folder / "base.yaml").write_text(BASE.replace("cross_entropy", "mse").replace("monitor: val_accuracy",
                                                                                   "monitor: val_loss"))
    output = refused(folder, "metric: val_accuracy\n" + SWEEP)
    assert ("sweep.yaml:1:1 metric: 'val_accuracy' needs a classification loss (binary_cross_entropy, "
            "cross_entropy, log_loss), not 'mse'") in output


def test_the_metric_and_its_direction_are_the_sweeps_own(folder):
    output = refused(folder, SWEEP + "  training.monitor: {choice: [val_loss, val_accuracy]}\n"
                     + "  training.epochs: {int: [2, 4]}\n")
    assert output == ("error: sweep.yaml: 2 problems in the sweep file:\n"
                      "  sweep.yaml:5:7 set.training.epochs: is also in space: a key is either searched or fixed\n"
                      "  sweep.yaml:10:3 space.training.monitor: cannot be searched: the sweep's `metric` sets it\n")


def test_a_missing_base_and_the_base_files_own_problems(folder):
    output = refused(folder, SWEEP.replace("base: base.yaml", "base: nothere.yaml"))
    assert output == ("error: sweep.yaml: 1 problem in the sweep file:\n  sweep.yaml:1:1 base: no config file at "
                      "nothere.yaml, and no shipped config of that name (a relative path is taken from the current "
                      "folder, else from the sweep file's)\n")
    (folder / "base.yaml").write_text(BASE.replace("units: 16", "units: -16"))
    output = refused(folder, SWEEP)
    assert output == ("error: base.yaml: 1 problem in the config:\n"
                      "  base.yaml:3:21 model.layers.0.units: must be an integer >= 1 (got -16)\n")


def test_the_base_path_may_be_relative_to_the_sweep_file(folder, monkeypatch):
    (folder / "sweeps-here").mkdir()
    write(folder, SWEEP.replace("base: base.yaml", "base: ../base.yaml"), "sweeps-here/s.yaml")
    assert load_sweep("sweeps-here/s.yaml").base == Path("sweeps-here/../base.yaml")


# -- trials --------------------------------------------------------------------------------------

def test_each_trial_is_seeded_from_the_sweep_seed_and_its_number(folder):
    sweep = load_sweep(write(folder, SWEEP))
    seeds = [trial_seed(1, n) for n in range(50)]
    assert seeds == [trial_seed(1, n) for n in range(50)] and len(set(seeds)) == 50
    assert all(0 <= s < 2**31 for s in seeds) and trial_seed(2, 0) != seeds[0]
    params = {"optimizer.lr": 0.01, "model.layers.0.units": 8, "optimizer.momentum": 0.5}
    config = trial_config(sweep, params, 7)
    assert (config.training.seed, config.optimizer.lr, config.model.layers[0].units) == (trial_seed(1, 7), 0.01, 8)
    assert (config.training.epochs, config.training.monitor, config.training.mode) == (3, "val_accuracy", "auto")
    fixed = load_sweep(write(folder, SWEEP.replace("set: {", "set: {training.seed: 5, ")))
    assert trial_config(fixed, params, 7).training.seed == 5


def test_a_combination_the_config_refuses_fails_that_trial_alone(folder):
    """nesterov needs momentum: the samples that pick momentum 0 are refused, the others are valid."""
    samples = preview(load_sweep(write(folder, SWEEP)), 12)
    refusals = [s for s in samples if s["error"]]
    assert refusals and len(refusals) < 12
    assert all(s["params"]["optimizer.momentum"] == 0.0 for s in refusals)
    assert refusals[0]["error"] == "config refused: base.yaml:6:48 optimizer.nesterov: nesterov requires momentum > 0"


def test_samples_are_in_the_space_and_the_same_every_time(folder):
    sweep = load_sweep(write(folder, SWEEP))
    samples = preview(sweep, 12)
    assert samples == preview(load_sweep("sweep.yaml"), 12)
    for sample in samples:
        params = sample["params"]
        assert 1e-3 <= params["optimizer.lr"] <= 1.0 and params["optimizer.momentum"] in (0.0, 0.5, 0.9)
        assert isinstance(params["model.layers.0.units"], int) and 4 <= params["model.layers.0.units"] <= 32
    sweep.seed = 2
    assert preview(sweep, 12) != samples


def test_a_grid_visits_every_point_once(folder):
    sweep = load_sweep(write(folder, """\
        base: base.yaml
        sampler: grid
        space:
          optimizer.lr: {choice: [0.01, 0.1, 1.0]}
          model.layers.0.units: {int: [4, 6]}
        """))
    points = [tuple(s["params"].values()) for s in preview(sweep, 100)]
    assert sweep.trials == 9 and len(points) == 9 and len(set(points)) == 9


def test_the_kinds_of_dimension():
    assert PARAMS["int"].grid([2, 5]) == [2, 3, 4, 5] and PARAMS["loguniform"].grid([0.1, 1]) is None
    assert grid_size({"a": ("int", [1, 3]), "b": ("choice", ["x", "y"])}) == 6
    assert grid_size({"a": ("uniform", [0, 1])}) is None
    assert PARAMS["choice"].problems([1, True, 1.0]) == []     # three different YAML values
    assert PARAMS["uniform"].problems([0, float("inf")]) == [
        "must be a list of two finite numbers, [low, high] (got [0, .inf])"]
    assert PARAMS["int"].describe([4, 32]) == "int 4..32 (29 values)"


# -- the command ---------------------------------------------------------------------------------

def test_dry_run_prints_the_space_and_the_first_trials_and_runs_nothing(folder):
    result = runner.invoke(app, ["sweep", write(folder, SWEEP.replace("seed: 1", "seed: 2")), "--dry-run"])
    assert result.exit_code == 0, result.output
    sample = preview(load_sweep("sweep.yaml"), 3)[2]
    lr = f"{sample['params']['optimizer.lr']:.4g}"
    assert "Sweep sweep.yaml: 12 trials, sampler random (seed 2), pruner none" in result.output
    assert "  optimizer.lr          loguniform [0.001, 1]\n" in result.output
    assert "  model.layers.0.units  int 4..32 (29 values)\n" in result.output
    assert f"  trial 2: optimizer.lr={lr} " in result.output and "training.seed=" in result.output
    assert "  refused: config refused: base.yaml:6:48 optimizer.nesterov: nesterov requires momentum > 0\n" \
        in result.output
    assert not (folder / "sweeps").exists()


def test_trials_on_the_command_line_replace_the_files(folder):
    result = runner.invoke(app, ["sweep", write(folder, SWEEP), "--dry-run", "--json", "--trials", "2"])
    assert result.exit_code == 0 and '"trials": 2' in result.output
    result = runner.invoke(app, ["sweep", "sweep.yaml", "--workers", "2", "--cluster", "tcp://127.0.0.1:1"])
    assert result.exit_code == 2 and "give one of them" in result.output


def test_without_the_extra_the_command_says_what_to_install(folder):
    """optuna hidden (an import of it fails): one line, exit 2, before the sweep file is even read."""
    hide = "import sys; sys.modules['optuna'] = None; from bpcli.cli.app import main; main()"
    result = subprocess.run([sys.executable, "-c", hide, "sweep", "sweep.yaml"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == ('error: bpcli sweep needs optuna, not installed: pip install -e ".[sweep]" in a checkout '
                             'of bpcli (or: pip install optuna distributed "optuna-integration[dask]"), then run the '
                             'command again\n')
    assert "bpcli[" not in result.stderr   # never the package index's bpcli: another project


def test_training_and_the_other_commands_never_import_the_engines():
    code = ("import sys; from bpcli.cli.app import app; import bpcli.training.run, "
            "bpcli.cli.sweep, bpcli.sweep.spec; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'optuna', 'distributed', 'dask'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize("document, after", [("README.md", "## Sweeps"), ("docs/sweeps.md", "## The sweep file")])
def test_the_documented_sweep_files_are_valid(document, after, tmp_path, monkeypatch):
    root = Path(__file__).resolve().parent.parent
    text = (root / document).read_text()
    example = text[text.index(after):].split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "example.yaml").write_text(example)
    monkeypatch.chdir(root)   # the examples name their base from the checkout's root
    assert load_sweep(tmp_path / "example.yaml").trials == 20


def test_summary_json_never_keeps_a_storage_password(folder):
    from types import SimpleNamespace

    from bpcli.sweep.driver import Driver
    from bpcli.sweep.sweepdir import SweepDir

    sweep = load_sweep(write(folder, SWEEP))
    remote = SimpleNamespace(local=False, address="tcp://10.0.0.5:8786")
    record = Driver(sweep, SweepDir("sweeps/s-1"), remote, "postgresql://me:secret@db.example:5432/optuna", None,
                    None).storage_record()
    assert record == {"kind": "url", "where": "postgresql://db.example:5432/optuna"}
    assert Driver(sweep, SweepDir("sweeps/s-1"), remote, None, None, None).storage_record()["kind"] == "scheduler"


def test_the_shipped_sweeps_run_by_name_from_any_folder(tmp_path, monkeypatch):
    from bpcli.sweep.spec import examples

    monkeypatch.chdir(tmp_path)   # no configs/ here: the base is the shipped config of that name
    assert "quickstart-lr" in examples()
    for name in examples():
        sweep = load_sweep(name)
        assert sweep.base.name == "quickstart.yaml" and sweep.name == name
        assert all(sample["error"] is None for sample in preview(sweep, 3))
    result = runner.invoke(app, ["sweep", "nothing-here.yaml"])
    assert result.exit_code == 2 and result.output == (
        f"error: nothing-here.yaml: no such sweep file, and no shipped sweep of that name (they are: "
        f"{', '.join(examples())})\n")


def test_resume_and_show_need_a_sweep_directory(folder):
    for args in (["--resume", str(folder)], ["show", str(folder)]):
        result = runner.invoke(app, ["sweep", *args])
        assert result.exit_code == 2 and result.output == (
            f"error: {folder} is not a sweep directory made by bpcli sweep (it has no sweep.yaml and base.yaml)\n")
    result = runner.invoke(app, ["sweep", "--resume", str(folder), "--dry-run"])
    assert result.exit_code == 2 and "--dry-run previews a sweep file" in result.output
