"""Config files: the schema, YAML 1.2 reading, every kind of mistake and its message, --set, the CLI."""

import inspect
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bpcli.config.shipped import shipped_configs
from bpcli.nn.activations import ACTIVATIONS
from bpcli.cli import config as config_command
from bpcli.config.loading import load_config, parse_config_text
from bpcli.config.reference import config_json_schema, reference_markdown
from bpcli.config.sections import SECTIONS, optimizer_kwargs, resolved_dict
from bpcli.data.catalog import DATASETS
from bpcli.errors import EXIT_USAGE, ConfigError
from bpcli.nn.initializers import INITIALIZERS
from bpcli.nn.layers import BatchNorm, Dropout
from bpcli.nn.losses import LOSSES
from bpcli.nn.layers import LAYERS
from bpcli.nn.model import build_model
from bpcli.optim.optimizers import OPTIMIZERS, build_optimizer
from bpcli.optim.schedules import SCHEDULES, schedule_from_config
from bpcli.config.schema import (ACTIVATION_CHOICES, INIT_CHOICES, LAYER_TYPES, LOSS_OPTIONS, OPTIMIZER_OPTIONS, SCHEDULE_CONTEXT,
                          SCHEDULE_OPTIONS)
from bpcli.config.yamlio import dump_yaml, parse_yaml

MINIMAL = """\
model:
  layers:
    - {type: dense, units: 32, activation: relu}
    - {type: dense, units: 10}
"""

FULL = """\
model:
  dtype: float64
  layers:
    - {type: dense, units: 128, activation: relu, init: he_normal, bias_init: zeros}
    - {type: batchnorm, momentum: 0.1, eps: 1.0e-5}
    - {type: dropout, rate: 0.2}
    - type: dense
      units: 64
      activation: {name: leaky_relu, slope: 0.1}
      init: {name: normal, std: 0.05}
    - {type: elu, alpha: 1.0}
    - {type: dense, units: 10}
loss:
  name: cross_entropy
  label_smoothing: 0.1
  l2: 1e-4
optimizer:
  name: adamw
  lr: 3e-4
  beta2: 0.98
schedule:
  name: cosine
  warmup_epochs: 0.5
  min_lr: 1e-6
data:
  dataset: mnist-mini
  val_fraction: 0.2
  preprocess: standardize
  batch_size: 128
  mirrors: [http://mirror.example/mnist/]
training:
  epochs: 20
  seed: 7
  monitor: val_accuracy
  early_stopping: {patience: 3}
  clip_grad_norm: 5
checkpoint: {every: 5, keep: 2}
output: {dir: experiments, name: mnist-adamw}
"""

DEFAULT_SECTIONS = {
    "loss": {"name": "cross_entropy", "l1": 0.0, "l2": 0.0, "regularize_bias": False, "label_smoothing": 0.0},
    "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
    "schedule": {"name": "constant", "warmup_epochs": 0.0},
    "data": {"dataset": "mnist-mini", "options": {}, "test": None, "test_fraction": 0.0, "val_fraction": 0.1,
             "preprocess": "scale", "target_preprocess": "auto", "augment": None, "batch_size": 64,
             "eval_batch_size": 4096, "data_dir": None, "mirrors": None},
    "training": {"epochs": 10, "seed": 0, "monitor": "val_loss", "mode": "auto", "early_stopping": None,
                 "clip_grad_norm": None, "clip_grad_value": None},
    "diagnostics": {"enabled": True, "samples": 8,
                    "warn": {"vanishing_gradients": True, "exploding_gradients": True, "dead_units": True,
                             "saturation": True, "update_ratio": True},
                    "gradient_ratio": 1000.0, "exploding_norm": 1000.0, "dead_fraction": 0.5,
                    "saturated_fraction": 0.5, "update_ratio_low": 1e-5, "update_ratio_high": 0.1},
    "checkpoint": {"every": 0, "keep": 3},
    "output": {"dir": "runs", "name": None, "tensorboard": False},
}


def problems(text: str, *overrides: str, name: str = "run.yaml") -> list[str]:
    """The lines of the ConfigError raised for `text`, after checking its first line counts them."""
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, name, overrides)
    first, *lines = str(caught.value).split("\n")
    assert first == f"{name}: {len(lines)} problem{'s' if len(lines) != 1 else ''} in the config:"
    assert caught.value.exit_code == EXIT_USAGE
    return [line.strip() for line in lines]


def error(text: str, *overrides: str, name: str = "run.yaml") -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, name, overrides)
    return str(caught.value)


def with_layers(text: str) -> str:
    return MINIMAL + text


# -- valid configs ------------------------------------------------------------------------------

def test_minimal_config_gets_every_default():
    assert resolved_dict(parse_config_text(MINIMAL)) == {
        "model": {"dtype": "float32", "layers": [
            {"type": "dense", "units": 32, "activation": "relu", "init": "he_normal", "bias_init": "zeros"},
            {"type": "dense", "units": 10, "activation": None, "init": "glorot_uniform", "bias_init": "zeros"}]},
        **DEFAULT_SECTIONS}


def test_full_config_resolves_and_round_trips_through_yaml():
    resolved = resolved_dict(parse_config_text(FULL))
    assert resolved["model"]["layers"] == [
        {"type": "dense", "units": 128, "activation": "relu", "init": "he_normal", "bias_init": "zeros"},
        {"type": "batchnorm", "momentum": 0.1, "eps": 1e-5},
        {"type": "dropout", "rate": 0.2},
        {"type": "dense", "units": 64, "activation": {"name": "leaky_relu", "slope": 0.1},
         "init": {"name": "normal", "mean": 0.0, "std": 0.05}, "bias_init": "zeros"},
        {"type": "elu", "alpha": 1.0},
        {"type": "dense", "units": 10, "activation": None, "init": "glorot_uniform", "bias_init": "zeros"}]
    assert resolved["loss"] == {"name": "cross_entropy", "l1": 0.0, "l2": 0.0001, "regularize_bias": False,
                                "label_smoothing": 0.1}
    assert resolved["optimizer"] == {"name": "adamw", "lr": 0.0003, "beta1": 0.9, "beta2": 0.98, "eps": 1e-8,
                                     "weight_decay": 0.01}
    assert resolved["schedule"] == {"name": "cosine", "min_lr": 1e-6, "warmup_epochs": 0.5}
    assert resolved["training"]["early_stopping"] == {"patience": 3, "min_delta": 0.0, "restore_best": True}
    assert resolved["training"]["clip_grad_norm"] == 5.0 and resolved["data"]["eval_batch_size"] == 4096
    assert json.loads(json.dumps(resolved)) == resolved
    assert resolved_dict(parse_config_text(dump_yaml(resolved))) == resolved   # `config show` reads back


def test_resolved_layers_build_the_same_model_as_the_written_ones():
    config = parse_config_text(FULL)
    written = parse_yaml(FULL).data["model"]["layers"]
    resolved = resolved_dict(config)["model"]["layers"]
    a, b = build_model(written, 784, seed=3), build_model(resolved, 784, seed=3)
    assert np.array_equal(a.theta, b.theta) and list(a.params) == list(b.params)


def test_optimizer_and_schedule_build_from_their_kwargs():
    config = parse_config_text(FULL)
    assert optimizer_kwargs(config) == {"beta1": 0.9, "beta2": 0.98, "eps": 1e-8, "weight_decay": 0.01}
    assert config.training.monitor_mode == "max" and parse_config_text(MINIMAL).training.monitor_mode == "min"
    assert type(build_optimizer(config.optimizer.name, **optimizer_kwargs(config))).__name__ == "AdamW"
    schedule = schedule_from_config(config.schedule.model_dump(), lr=config.optimizer.lr, steps_per_epoch=10,
                                    epochs=20, mode="max")
    assert schedule(0) == pytest.approx(3e-4 / 5)


def test_an_empty_section_means_its_defaults():
    assert resolved_dict(parse_config_text(MINIMAL + "checkpoint:\noptimizer:\n"))["checkpoint"] == {
        "every": 0, "keep": 3}


def test_csv_and_npz_paths_are_datasets():
    for path in ("my/data.csv", "DATA.NPZ"):
        assert parse_config_text(with_layers(f"data: {{dataset: {path}}}")).data.dataset == path


SHIPPED = sorted(shipped_configs().values())   # training configs (configs/sweeps/ holds sweep files)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.name)
def test_every_shipped_config_is_valid_and_round_trips(path):
    resolved = resolved_dict(load_config(path))
    assert resolved_dict(parse_config_text(dump_yaml(resolved))) == resolved


# -- YAML 1.2 decisions -------------------------------------------------------------------------

def test_exponent_numbers_are_floats_as_in_yaml_1_2():
    config = parse_config_text(with_layers("optimizer: {lr: 1e-3}\nschedule: {name: cosine, min_lr: .5e-4}\n"))
    assert config.optimizer.lr == 0.001 and config.schedule.min_lr == 0.00005
    assert parse_yaml("a: 1E5\nb: .5\nc: 010\nd: 0x1F\ne: 2001-12-14").data == {
        "a": 100000.0, "b": 0.5, "c": 10, "d": 31, "e": "2001-12-14"}


def test_only_true_and_false_are_booleans():
    assert problems(with_layers("optimizer: {momentum: 0.9, nesterov: yes}\n")) == [
        "run.yaml:5:28 optimizer.nesterov: must be true or false (got 'yes')"]
    for word in ("true", "True", "TRUE"):
        assert parse_config_text(with_layers(f"optimizer: {{momentum: 0.9, nesterov: {word}}}")).optimizer.nesterov
    assert parse_yaml("[yes, no, on, off, y, n]").data == ["yes", "no", "on", "off", "y", "n"]


def test_values_are_not_coerced():
    assert problems(with_layers("optimizer: {lr: '0.1'}\ntraining: {epochs: 1e1}\n")) == [
        "run.yaml:5:13 optimizer.lr: must be a number > 0 (got '0.1')",
        "run.yaml:6:12 training.epochs: must be an integer >= 1 (got 10.0)"]


# -- each kind of mistake -----------------------------------------------------------------------

def test_unknown_top_level_key():
    assert problems(with_layers("modle: 3\n")) == [
        "run.yaml:5:1 modle: unknown key; allowed: checkpoint, data, diagnostics, loss, model, optimizer, output, "
        "schedule, training. Did you mean 'model'?"]


def test_misspelled_nested_key_suggests_the_right_one():
    assert problems(with_layers("optimizer:\n  name: sgd\n  momentun: 0.9\n")) == [
        "run.yaml:7:3 optimizer.momentun: unknown key; allowed: lr, momentum, name, nesterov, weight_decay. "
        "Did you mean 'momentum'?"]


def test_wrong_type_and_out_of_range():
    assert problems(with_layers("data:\n  batch_size: many\n  val_fraction: 1.0\n")) == [
        "run.yaml:6:3 data.batch_size: must be an integer >= 1 (got 'many')",
        "run.yaml:7:3 data.val_fraction: must be a number in [0, 1) (got 1.0)"]
    assert problems(with_layers("optimizer: {lr: 0}\n")) == [
        "run.yaml:5:13 optimizer.lr: must be a number > 0 (got 0)"]


@pytest.mark.parametrize("text, line", [
    ("optimizer: {name: adamm}\n",
     "run.yaml:5:13 optimizer.name: unknown value 'adamm'; allowed: adagrad, adam, adamw, rmsprop, sgd. "
     "Did you mean 'adam'?"),
    ("schedule: {name: cosin}\n",
     "run.yaml:5:12 schedule.name: unknown value 'cosin'; allowed: constant, cosine, exponential, "
     "reduce_on_plateau, step. Did you mean 'cosine'?"),
    ("loss: {name: cross_entropi}\n",
     "run.yaml:5:8 loss.name: unknown value 'cross_entropi'; allowed: binary_cross_entropy, cross_entropy, huber, "
     "log_loss, mae, mse. Did you mean 'cross_entropy'?"),
    ("data: {dataset: mnits}\n",
     "run.yaml:5:8 data.dataset: unknown value 'mnits'; allowed: circles, fashion-mnist, mnist, mnist-mini, moons, "
     "sine, spirals, xor, or a path to a .csv or .npz file. Did you mean 'mnist'?"),
    ("data: {preprocess: standardise}\n",
     "run.yaml:5:8 data.preprocess: unknown value 'standardise'; allowed: none, scale, standardize. "
     "Did you mean 'standardize'?"),
])
def test_unknown_registry_names_suggest_the_closest(text, line):
    assert problems(with_layers(text)) == [line]


def test_unknown_layer_activation_and_initializer_names():
    text = ("model:\n  layers:\n"
            "    - {type: dense, units: 8, activation: rleu, init: he_normall}\n"
            "    - {type: dense, units: 2, activation: {name: leaky_rel, slope: 0.2}, bias_init: {name: zeroes}}\n"
            "    - {type: dropuot}\n")
    activations = "elu, gelu, identity, leaky_relu, relu, sigmoid, softmax, softplus, tanh"
    inits = ("constant, glorot_normal, glorot_uniform, he_normal, he_uniform, kaiming_normal, kaiming_uniform, "
             "lecun_normal, normal, uniform, xavier_normal, xavier_uniform, zeros")
    assert problems(text) == [
        f"run.yaml:3:31 model.layers.0.activation: unknown value 'rleu'; allowed: {activations}. "
        "Did you mean 'relu'?",
        f"run.yaml:3:49 model.layers.0.init: unknown value 'he_normall'; allowed: {inits}. Did you mean 'he_normal'?",
        f"run.yaml:4:44 model.layers.1.activation.name: unknown value 'leaky_rel'; allowed: {activations}. "
        "Did you mean 'leaky_relu'?",
        f"run.yaml:4:86 model.layers.1.bias_init.name: unknown value 'zeroes'; allowed: {inits}. "
        "Did you mean 'zeros'?",
        "run.yaml:5:8 model.layers.2.type: unknown value 'dropuot'; allowed: batchnorm, dense, dropout, elu, gelu, "
        "identity, leaky_relu, relu, sigmoid, softmax, softplus, tanh. Did you mean 'dropout'?"]


def test_layer_options_are_checked_per_type():
    text = ("model:\n  layers:\n    - {type: dense}\n    - {type: dropout, rate: 1}\n    - {type: relu, slope: 0.1}\n"
            "    - {type: dense, units: 4, init: {name: normal, sd: 1}}\n    - {units: 3}\n    - []\n")
    assert problems(text) == [
        "run.yaml:3:7 model.layers.0.units: required key is missing",
        "run.yaml:4:23 model.layers.1.rate: must be a number in [0, 1) (got 1)",
        "run.yaml:5:20 model.layers.2.slope: unknown key; allowed: type.",
        "run.yaml:6:52 model.layers.3.init.sd: unknown key; allowed: mean, name, std. Did you mean 'std'?",
        "run.yaml:7:7 model.layers.4.type: required key is missing; one of: batchnorm, dense, dropout, elu, gelu, "
        "identity, leaky_relu, relu, sigmoid, softmax, softplus, tanh",
        "run.yaml:8:7 model.layers.5: must be a mapping with 'type' (one of: batchnorm, dense, dropout, elu, gelu, "
        "identity, leaky_relu, relu, sigmoid, softmax, softplus, tanh) (got [])"]


def test_an_option_of_another_optimizer_names_the_allowed_ones():
    assert problems(with_layers("optimizer:\n  name: adam\n  momentum: 0.9\n")) == [
        "run.yaml:7:3 optimizer.momentum: unknown key; allowed: beta1, beta2, eps, lr, name, weight_decay."]


def test_a_required_schedule_argument():
    assert problems(with_layers("schedule: {name: step}\n")) == [
        "run.yaml:5:1 schedule.step_size: required key is missing"]


def test_a_missing_model_and_an_empty_layer_list():
    assert problems("training: {epochs: 3}\n") == ["run.yaml:1:1 model: required key is missing"]
    assert problems("model: {layers: []}\n") == ["run.yaml:1:9 model.layers: must be a non-empty list (got [])"]


def test_duplicate_keys_name_both_lines():
    assert problems(with_layers("optimizer:\n  lr: 0.1\n  momentum: 0.9\n  lr: 0.2\n")) == [
        "run.yaml:8:3 optimizer.lr: duplicate key: first on line 6, again on line 8"]


def test_yaml_syntax_error_names_line_and_column():
    assert error(with_layers("optimizer: {lr: 0.1\ndata: {}\n")) == (
        "run.yaml:6:5: YAML syntax error: expected ',' or '}', but got ':' (while parsing a flow mapping)")
    assert error("model:\n  layers: [\n    - x\n") == (
        "run.yaml:3:5: YAML syntax error: expected the node content, but found '-' (while parsing a flow node)")


def test_python_tags_are_refused_and_nothing_runs(tmp_path):
    canary = tmp_path / "canary"
    text = with_layers(f'data:\n  dataset: !!python/object/apply:os.system ["touch {canary}"]\n'
                       f"output: {{name: !!binary aGk=, dir: !!python/object/apply:pathlib.Path [{tmp_path}]}}\n")
    message = "is not allowed: a config holds plain data only (mappings, lists, strings, numbers, true/false, null)"
    assert problems(text) == [
        f"run.yaml:6:12 data.dataset: the tag !!python/object/apply:os.system {message}",
        f"run.yaml:7:16 output.name: the tag !!binary {message}",
        f"run.yaml:7:36 output.dir: the tag !!python/object/apply:pathlib.Path {message}"]
    assert not canary.exists()


def test_a_file_over_one_mib_is_refused_unread(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(MINIMAL + "# padding\n" * (2 * 2**20 // 10))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: the file is larger than 1 MiB; a config is a short text file"


def test_an_alias_bomb_is_refused_fast():
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]   # 9**10 strings expanded
    start = time.perf_counter()
    assert error("\n".join(lines)) == (
        "run.yaml: more than 10000 values once aliases are expanded (an alias bomb?); a config is small")
    assert time.perf_counter() - start < 0.5
    assert error("a: &x [1, *x]") == "run.yaml:1:4: a recursive alias (an anchor used inside itself)"


def test_small_aliases_are_fine():
    text = "model:\n  layers:\n    - &hidden {type: dense, units: 16, activation: tanh}\n    - *hidden\n"
    assert [layer.units for layer in parse_config_text(text).model.layers] == [16, 16]


def test_empty_and_non_mapping_files():
    for text in ("", "# nothing yet\n", "---\n"):
        assert error(text) == "run.yaml: the config is empty; it needs at least model.layers"
    assert error("- model\n- data\n") == (
        "run.yaml:1:1: the top level must be a mapping of sections (model, loss, optimizer, schedule, data, "
        "training, diagnostics, checkpoint, output), not [model, data]")


def test_several_problems_are_reported_together_in_line_order():
    text = ("training:\n  epochs: 0\n  bogus: 1\n"
            "model:\n  layers:\n    - {type: dense, units: -1, activation: rleu}\n"
            "optimizer: {name: adam, lr: -0.1, momentum: 0.9}\n")
    assert problems(text) == [
        "run.yaml:2:3 training.epochs: must be an integer >= 1 (got 0)",
        "run.yaml:3:3 training.bogus: unknown key; allowed: clip_grad_norm, clip_grad_value, early_stopping, epochs, "
        "mode, monitor, seed.",
        "run.yaml:6:21 model.layers.0.units: must be an integer >= 1 (got -1)",
        "run.yaml:6:32 model.layers.0.activation: unknown value 'rleu'; allowed: elu, gelu, identity, leaky_relu, "
        "relu, sigmoid, softmax, softplus, tanh. Did you mean 'relu'?",
        "run.yaml:7:25 optimizer.lr: must be a number > 0 (got -0.1)",
        "run.yaml:7:35 optimizer.momentum: unknown key; allowed: beta1, beta2, eps, lr, name, weight_decay."]


def test_load_config_names_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(with_layers("data: {batch_size: 0}\n"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (f"{path}: 1 problem in the config:\n"
                                 f"  {path}:5:8 data.batch_size: must be an integer >= 1 (got 0)")
    with pytest.raises(ConfigError, match=r"missing\.yaml: no such config file, and no shipped config of that name"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(ConfigError, match=r"folder\.yaml: cannot read the config: Is a directory"):
        load_config(tmp_path / "folder.yaml")


# -- rules across keys --------------------------------------------------------------------------

def test_a_validation_monitor_needs_a_validation_set():
    assert problems(with_layers("data: {val_fraction: 0}\n")) == [
        "run.yaml:1:1 training.monitor: 'val_loss' needs a validation set: set data.val_fraction > 0, "
        "or monitor a train_* metric"]
    assert parse_config_text(with_layers("data: {val_fraction: 0}\ntraining: {monitor: train_loss}\n"))


def test_an_accuracy_monitor_needs_a_classification_loss():
    assert problems(with_layers("loss: {name: mse}\ntraining: {monitor: train_accuracy}\n")) == [
        "run.yaml:6:12 training.monitor: 'train_accuracy' needs a classification loss (binary_cross_entropy, "
        "cross_entropy, log_loss), not 'mse'"]


def test_loss_options_belong_to_their_loss():
    assert problems(with_layers("loss: {name: mse, label_smoothing: 0.1}\n")) == [
        "run.yaml:5:19 loss.label_smoothing: unknown key; allowed: l1, l2, name, regularize_bias."]
    assert problems(with_layers("loss: {delta: 2}\n")) == [
        "run.yaml:5:8 loss.delta: unknown key; allowed: l1, l2, label_smoothing, name, regularize_bias."]
    assert parse_config_text(with_layers("loss: {name: huber, delta: 2}\n")).loss.delta == 2


def test_the_classes_own_rules_are_checked_too():
    assert problems(with_layers("optimizer: {nesterov: true}\nschedule: {name: cosine, min_lr: 0.5}\n")) == [
        "run.yaml:5:13 optimizer.nesterov: nesterov requires momentum > 0",
        "run.yaml:6:26 schedule.min_lr: min_lr must be a number in [0, lr=0.01], got 0.5"]


# -- --set overrides ----------------------------------------------------------------------------

def test_overrides_set_nested_keys_list_items_and_create_mappings():
    config = parse_config_text(MINIMAL, overrides=[
        "optimizer.lr=1e-3", "model.layers.0.units=64", "training.early_stopping.patience=3",
        "data.mirrors=[http://a/, http://b/]", "model.layers.1.activation={name: leaky_relu, slope: 0.2}",
        "output.name=run-1"])
    assert config.optimizer.lr == 0.001 and config.model.layers[0].units == 64
    assert config.training.early_stopping.patience == 3 and config.training.early_stopping.restore_best
    assert config.data.mirrors == ["http://a/", "http://b/"] and config.output.name == "run-1"
    assert config.model.layers[1].activation.slope == 0.2


def test_a_later_override_wins_and_an_empty_value_is_null():
    config = parse_config_text(MINIMAL, overrides=["data.batch_size=8", "data.batch_size=16", "output.name="])
    assert config.data.batch_size == 16 and config.output.name is None


def test_problems_in_overrides_name_the_override():
    assert problems(with_layers("optimizer: {name: adam}\nbogus: 1\n"), "model.layers.0.units=-1",
                    "optimizer.momentum=0.9", "optimizer={name: sgd, lr: 0}") == [
        "run.yaml:6:1 bogus: unknown key; allowed: checkpoint, data, diagnostics, loss, model, optimizer, output, "
        "schedule, training.",
        "--set model.layers.0.units=-1: must be an integer >= 1 (got -1)",
        "--set optimizer={name: sgd, lr: 0} optimizer.lr: must be a number > 0 (got 0)"]


@pytest.mark.parametrize("override, message", [
    ("optimizer.lr", "--set optimizer.lr: expected KEY.PATH=VALUE, e.g. optimizer.lr=0.001"),
    ("=3", "--set =3: expected KEY.PATH=VALUE, e.g. optimizer.lr=0.001"),
    ("optimizer..lr=3", "--set optimizer..lr=3: expected KEY.PATH=VALUE, e.g. optimizer.lr=0.001"),
    ("model.layers.2.units=3",
     "--set model.layers.2.units=3: model.layers is a list of 2 items; '2' is not an index from 0 to 1"),
    ("model.layers.first.units=3",
     "--set model.layers.first.units=3: model.layers is a list of 2 items; 'first' is not an index from 0 to 1"),
    ("model.dtype.x=3", "--set model.dtype.x=3: model.dtype is 'float64', not a mapping or a list"),
    ("optimizer.lr=[1", "--set optimizer.lr=[1: the value is not valid: YAML syntax error: expected ',' or ']', "
                        "but got '<stream end>' (while parsing a flow sequence)"),
    ("optimizer.lr=!!python/name:os.system x", "--set optimizer.lr=!!python/name:os.system x: the value is not "
     "valid: the tag !!python/name:os.system is not allowed: a config holds plain data only (mappings, lists, "
     "strings, numbers, true/false, null)"),
])
def test_malformed_overrides(override, message):
    assert error(MINIMAL + "  dtype: float64\n", override) == message


# -- Hypothesis: one broken field is reported at exactly its key path ---------------------------

layers = st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.just("dense"), "units": st.integers(1, 512)},
                          optional={"activation": st.sampled_from(sorted(ACTIVATIONS))}),
    st.fixed_dictionaries({"type": st.just("dropout"), "rate": st.floats(0, 0.9)}),
), min_size=1, max_size=4).map(lambda items: items + [{"type": "dense", "units": 3}])

valid_configs = st.fixed_dictionaries({
    "model": st.fixed_dictionaries({"layers": layers}, optional={"dtype": st.sampled_from(["float32", "float64"])}),
    "optimizer": st.fixed_dictionaries({"name": st.sampled_from(sorted(OPTIMIZERS)), "lr": st.floats(1e-6, 1.0)}),
    "data": st.fixed_dictionaries({"batch_size": st.integers(1, 4096), "val_fraction": st.floats(0.01, 0.5)}),
    "training": st.fixed_dictionaries({"epochs": st.integers(1, 100), "seed": st.integers(0, 2**32)}),
})

BAD_VALUES = {
    ("data", "batch_size"): st.integers(max_value=0),
    ("data", "val_fraction"): st.floats(min_value=1, max_value=1e9),
    ("optimizer", "lr"): st.floats(max_value=0, allow_infinity=False),
    ("optimizer", "name"): st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1).filter(lambda s: s not in OPTIMIZERS),
    ("training", "epochs"): st.one_of(st.integers(max_value=0), st.floats(1, 100), st.sampled_from(["ten", None])),
    ("model", "layers", 0, "type"): st.sampled_from(["dens", "conv", "Dense"]),
    ("model", "layers", -1, "units"): st.one_of(st.integers(max_value=0), st.just(True)),
}


@settings(max_examples=50, deadline=None)
@given(valid_configs, st.sampled_from(sorted(BAD_VALUES, key=str)), st.data())
def test_one_broken_field_is_reported_at_its_key_path(config, path, data):
    assert parse_config_text(dump_yaml(config))
    if data.draw(st.booleans(), label="unknown key instead"):
        section = path[0]
        key = data.draw(st.from_regex(r"\A[a-z]{2,12}\Z").filter(
            lambda k: k not in parse_config_text(dump_yaml(config)).model_dump()[section]), label="key")
        config[section][key], path = 1, (section, key)
    else:
        parent = config
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = data.draw(BAD_VALUES[path], label="value")
        path = tuple(len(config["model"]["layers"]) - 1 if part == -1 else part for part in path)
    text = dump_yaml(config)
    [line] = problems(text)
    position = parse_yaml(text).positions[path]
    assert line.startswith(f"run.yaml:{position} {'.'.join(map(str, path))}: ")


# -- the schema follows the code ----------------------------------------------------------------

def options(variant) -> dict:
    """{name: default} of a schema variant's options; ... for a required one."""
    return {name: ... if field.is_required() else field.default
            for name, field in variant.model_fields.items() if name not in ("name", "type")}


def signature(obj, skip=()) -> dict:
    params = inspect.signature(obj.__init__ if isinstance(obj, type) else obj).parameters
    return {name: ... if p.default is p.empty else p.default for name, p in params.items()
            if name not in ("self", *skip) and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_options_are_the_class_signature(name):
    assert options(OPTIMIZER_OPTIONS[name]) == {"lr": 0.01, **signature(OPTIMIZERS[name])}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_options_are_the_class_signature_minus_what_comes_from_elsewhere(name):
    assert options(SCHEDULE_OPTIONS[name]) == signature(SCHEDULES[name], skip=SCHEDULE_CONTEXT)


def test_every_registry_has_exactly_its_variants():
    assert list(OPTIMIZER_OPTIONS) == list(OPTIMIZERS) and list(SCHEDULE_OPTIONS) == list(SCHEDULES)
    assert list(LOSS_OPTIONS) == list(LOSSES) and list(ACTIVATION_CHOICES) == list(ACTIVATIONS)
    assert list(INIT_CHOICES) == list(INITIALIZERS)
    assert set(LAYER_TYPES) == set(LAYERS) | set(ACTIVATIONS)


def test_layer_activation_initializer_and_loss_options_are_their_signatures():
    for kind, cls in LAYERS.items():
        assert set(options(LAYER_TYPES[kind])) == set(inspect.signature(cls.option_source()).parameters)
    assert options(LAYER_TYPES["dropout"]) == signature(Dropout) and options(LAYER_TYPES["batchnorm"]) == signature(
        BatchNorm)
    for name, cls in ACTIVATIONS.items():
        assert options(ACTIVATION_CHOICES[name]) == options(LAYER_TYPES[name]) == signature(cls)
    for name, function in INITIALIZERS.items():
        assert options(INIT_CHOICES[name]) == signature(function, skip=("rng", "shape", "fan_in", "fan_out"))
    for name, cls in LOSSES.items():
        assert options(LOSS_OPTIONS[name]) == {"l1": 0.0, "l2": 0.0, "regularize_bias": False, **signature(cls)}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_schedule_builds_from_a_config(name):
    required = {"step": "step_size: 2", "exponential": "gamma: 0.9"}.get(name, "")
    config = parse_config_text(with_layers(f"schedule: {{name: {name}, {required}}}\n"))
    schedule = schedule_from_config(config.schedule.model_dump(), lr=0.1, steps_per_epoch=5, epochs=3, mode="min")
    assert schedule(0) == pytest.approx(0.1)


def test_json_schema():
    schema = json.loads(json.dumps(config_json_schema()))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "bpcli config" and schema["required"] == ["model"]
    assert list(schema["properties"]) == list(SECTIONS)
    assert all(schema["properties"][section].get("description") for section in SECTIONS)
    for section, registry in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("loss", LOSSES)):
        assert schema["properties"][section]["properties"]["name"]["enum"] == sorted(registry)
    sgd, adam = schema["$defs"]["SgdOptimizer"], schema["$defs"]["AdamOptimizer"]
    assert sgd["additionalProperties"] is False and "required" not in sgd and adam["required"] == ["name"]
    assert sgd["properties"]["momentum"] == {"default": 0.0, "description": "Momentum factor; 0 turns momentum off.",
                                             "exclusiveMaximum": 1, "minimum": 0, "title": "Momentum",
                                             "type": "number"}
    activation = schema["$defs"]["DenseLayer"]["properties"]["activation"]["anyOf"]
    assert activation[0] == {"enum": list(ACTIVATIONS), "type": "string"} and activation[2] == {"type": "null"}
    assert schema["$defs"]["DataSection"]["properties"]["dataset"]["anyOf"][0] == {"enum": sorted(DATASETS)}


@pytest.mark.parametrize("document", ["docs/config.md", "README.md"])
def test_the_reference_doc_is_up_to_date(document):
    doc = (Path(__file__).parent.parent / document).read_text()
    generated = re.search(r"<!-- BEGIN generated by `bpcli config schema --markdown` -->\n(.*)"
                          r"<!-- END generated -->", doc, re.S)
    assert generated, f"{document} lost its markers"
    assert generated.group(1) == reference_markdown(), (
        f"{document} is out of date: replace the generated part with `bpcli config schema --markdown`")


# -- the commands -------------------------------------------------------------------------------

cli = typer.Typer()
cli.add_typer(config_command.app, name="config")
runner = CliRunner()


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(MINIMAL)
    return path


def test_show_prints_the_resolved_config_as_yaml_or_json(config_file):
    result = runner.invoke(cli, ["config", "show", str(config_file), "--set", "optimizer.lr=1e-3"])
    assert result.exit_code == 0
    expected = resolved_dict(parse_config_text(MINIMAL, overrides=["optimizer.lr=1e-3"]))
    assert parse_yaml(result.stdout).data == expected
    assert result.stdout.startswith("model:\n  dtype: float32\n  layers:\n  - type: dense\n    units: 32\n")
    assert "  lr: 0.001\n" in result.stdout
    result = runner.invoke(cli, ["config", "show", str(config_file), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == resolved_dict(parse_config_text(MINIMAL))


def test_validate_says_valid_or_lists_the_problems_with_exit_code_2(config_file):
    result = runner.invoke(cli, ["config", "validate", str(config_file)])
    assert result.exit_code == 0 and result.stdout == f"{config_file} is valid\n"
    result = runner.invoke(cli, ["config", "validate", str(config_file), "--set", "data.batch_size=0",
                                 "--set", "optimizer.lr=-1"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (f"error: {config_file}: 2 problems in the config:\n"
                             "  --set data.batch_size=0: must be an integer >= 1 (got 0)\n"
                             "  --set optimizer.lr=-1: must be a number > 0 (got -1)\n")


def test_schema_prints_json_and_markdown():
    result = runner.invoke(cli, ["config", "schema"])
    assert result.exit_code == 0 and json.loads(result.stdout) == config_json_schema()
    result = runner.invoke(cli, ["config", "schema", "--markdown"])
    assert result.exit_code == 0 and result.stdout == reference_markdown()


def test_every_config_command_has_help_with_an_example():
    for command in ("show", "validate", "schema"):
        result = runner.invoke(cli, ["config", command, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output
