"""The registries are the extension points: a component registered in one place is picked up everywhere.

Two kinds of proof. First, a plugin: a fresh interpreter registers a throwaway
layer (Scale, y = x * w with a learnable w per feature), metric (error_rate)
and optimizer (sign_sgd) in the nn/ and optim/ registries, then imports the
config schema and the tools, as a plugin would (the pydantic schema is built
when bpcli.config.schema is first imported), and each component must be
accepted by the schema, listed in the JSON Schema, gradient-checked, explained,
inspected and trained with, with no other edit. Second, every entry of every
built-in registry appears in the schema, the JSON Schema, gradcheck, explain
and inspect.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bpcli.config.schema import ACTIVATION_CHOICES, LAYER_TYPES, LOSS_OPTIONS, OPTIMIZER_OPTIONS
from bpcli.config.loading import parse_config_text
from bpcli.config.reference import config_json_schema
from bpcli.config.sections import resolved_dict
from bpcli.nn.activations import ACTIVATIONS
from bpcli.nn.layers import LAYERS, substitute
from bpcli.nn.losses import LOSSES
from bpcli.nn.metrics import METRICS, TASKS, evaluate, format_metric, metric_for, monitorable, resolve_mode
from bpcli.nn.model import build_model
from bpcli.optim.optimizers import OPTIMIZERS
from bpcli.tools.explain import Net, explain
from bpcli.tools.gradcheck import check_all
from bpcli.tools.inspect import Target, input_dim, summarize

DATASET = {"multiclass": "spirals", "binary": "moons", "regression": "sine"}

PLUGIN = '''
import json, sys
from pathlib import Path

import numpy as np

from bpcli.nn.layers import LAYERS, Layer
from bpcli.nn.metrics import METRICS, Metric, accuracy
from bpcli.optim.optimizers import OPTIMIZERS, Optimizer


class Scale(Layer):
    """Scales each feature by a learned factor: y = x * w."""

    option_specs = {"start": (float, {"gt": 0}, "The factor every feature starts with.")}

    def __init__(self, start: float = 1.0):
        super().__init__()
        self.start, self.dim = start, 0

    def build(self, input_dim):
        self.dim = input_dim
        return input_dim

    def param_shapes(self):
        return {"w": (self.dim,)}

    def initial_params(self, rng):
        return {"w": np.full(self.dim, self.start)}

    def forward(self, x, training):
        self.x = x
        return x * self.params["w"]

    def backward(self, dy):
        np.sum(dy * self.x, axis=0, out=self.grads["w"])
        return dy * self.params["w"]

    def equations(self, t):
        return [(f"{t.y} = {t.x} * w{t.i}", f"w{t.i} ({t.n_out},) -> {t.shape(t.n_out)}")]

    def backward_equations(self, t):
        lines = [(f"dw{t.i} = batch sum of d{t.y} * {t.x}", f"({t.n_out},)")]
        return lines + ([(f"d{t.x} = d{t.y} * w{t.i}", t.shape(t.n_in))] if t.input_grad else [])


class SignSGD(Optimizer):
    """Steps by the sign of the gradient alone."""

    update = (("", "p = p - lr * sign(g)"),)

    def _update(self, p, g, state, tmp, lr, c):
        np.sign(g, out=tmp)
        tmp *= c(lr)
        p -= tmp


LAYERS["scale"] = Scale
OPTIMIZERS["sign_sgd"] = SignSGD
METRICS["error_rate"] = Metric("error_rate", "min", ("multiclass", "binary"),
                               lambda logits, y, loss: 1 - accuracy(logits, y, loss.kind), "err", "{:.2%}",
                               per_epoch=True, tally=lambda logits, y, loss: (0, 1))

# Only now the schema and everything that reads it.
from typer.testing import CliRunner

from bpcli.cli.app import app
from bpcli.config.loading import parse_config_text
from bpcli.config.reference import config_json_schema
from bpcli.config.sections import resolved_dict
from bpcli.errors import ConfigError
from bpcli.nn.metrics import evaluate, monitorable, resolve_mode
from bpcli.nn.losses import LOSSES
from bpcli.nn.model import build_model
from bpcli.tools.explain import explain, render
from bpcli.tools.gradcheck import check_all
from bpcli.tools.inspect import load_target, summarize

out = Path(sys.argv[1])
TEXT = """
model:
  layers:
    - {type: scale, start: 0.5}
    - {type: dense, units: 8, activation: tanh}
    - {type: dense, units: 3}
optimizer: {name: sign_sgd, lr: 0.01}
data: {dataset: spirals, options: {n: 120}, batch_size: 32}
training: {epochs: 3, seed: 1%s}
output: {dir: %s, name: %s}
"""
results = {}


def check(name, function):
    try:
        results[name] = {"ok": True, "value": function()}
    except Exception as error:   # every check reports, so one failure does not hide the others
        results[name] = {"ok": False, "value": f"{type(error).__name__}: {error}"}


def config_file(name, monitor=""):
    path = out / f"{name}.yaml"
    path.write_text(TEXT % (monitor, out / "runs", name))
    return path


def refused(text):
    try:
        parse_config_text(text, "bad.yaml")
    except ConfigError as error:
        return str(error)
    return "accepted"


def train(name, monitor=""):
    result = CliRunner().invoke(app, ["train", str(config_file(name, monitor)), "--quiet"])
    rows = [json.loads(line) for line in (out / "runs" / name / "metrics.jsonl").read_text().splitlines()]
    return {"exit": result.exit_code, "rows": rows, "output": result.output[-2000:]}


schema = config_json_schema()
PLAIN = TEXT % ("", "runs", "x")
check("layer_schema", lambda: resolved_dict(parse_config_text(PLAIN, "t.yaml"))["model"]["layers"][0])
check("layer_refused", lambda: refused(PLAIN.replace("start: 0.5", "start: -1")))
check("layer_json_schema", lambda: [sorted(schema["$defs"]["ModelSection"]["properties"]["layers"]["items"]
                                           ["discriminator"]["mapping"]),
                                    schema["$defs"]["ScaleLayer"]["properties"]["start"]])
check("layer_gradcheck", lambda: [[r.parameter, r.checked, r.passed] for r in check_all()
                                  if r.component == "layer scale"])
check("explain", lambda: render(explain(load_target(config_file("explain")).config, 2)))
check("inspect", lambda: summarize(load_target(config_file("inspect")))["layers"][0])
check("optimizer_json_schema", lambda: schema["properties"]["optimizer"]["properties"]["name"]["enum"])
check("optimizer_refused", lambda: refused(PLAIN.replace("sign_sgd, lr", "sign_sgd, momentum: 0.9, lr")))
check("train", lambda: train("plain"))
check("metric_registry", lambda: [monitorable(), resolve_mode("val_error_rate")])
check("metric_evaluate", lambda: sorted(evaluate(build_model([{"type": "dense", "units": 3}], 2),
                                                 LOSSES["cross_entropy"](), np.ones((4, 2)), np.arange(4) % 3)))
check("metric_schema", lambda: parse_config_text(TEXT % (", monitor: val_error_rate", "runs", "x"),
                                                 "t.yaml").training.monitor)
check("metric_json_schema", lambda: schema["$defs"]["TrainingSection"]["properties"]["monitor"]["enum"])
check("metric_train", lambda: train("monitored", ", monitor: val_error_rate"))
print(json.dumps(results))
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """Each check's {"ok", "value"} from a fresh interpreter that registered the throwaway components first."""
    folder = tmp_path_factory.mktemp("plugin")
    script = folder / "plugin.py"
    script.write_text(textwrap.dedent(PLUGIN))
    done = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def value(plugin, name):
    result = plugin[name]
    assert result["ok"], result["value"]
    return result["value"]


# -- the plugin: each throwaway component is picked up everywhere --------------------------------------

def test_a_registered_layer_is_accepted_and_validated_by_the_schema(plugin):
    assert value(plugin, "layer_schema") == {"type": "scale", "start": 0.5}
    assert "model.layers.0.start: must be a number > 0 (got -1)" in value(plugin, "layer_refused")


def test_a_registered_layer_is_in_the_json_schema(plugin):
    mapping, start = value(plugin, "layer_json_schema")
    assert "scale" in mapping and start["exclusiveMinimum"] == 0 and start["default"] == 1.0


def test_a_registered_layer_is_gradient_checked(plugin):
    rows = value(plugin, "layer_gradcheck")
    assert {name for name, _, _ in rows} == {"layers.0.w", "input"} and all(ok and n > 0 for _, n, ok in rows)


def test_a_registered_layer_and_optimizer_are_explained(plugin):
    text = value(plugin, "explain")
    assert "layers.0  h0 = x * w0" in text and "dw0 = batch sum of dh0 * x" in text
    assert "(dx is not computed: no layer below needs it)" in text
    assert "w0 2" in text and "Update: sign_sgd" in text and "p = p - lr * sign(g)" in text


def test_a_registered_layer_is_inspected(plugin):
    row = value(plugin, "inspect")
    assert row == {"layer": "layers.0", "type": "Scale", "options": {"start": 0.5}, "output": [32, 2], "params": 2,
                   "init": None, "activation": None}


def test_a_registered_optimizer_is_in_the_schema_with_its_own_options(plugin):
    assert "sign_sgd" in value(plugin, "optimizer_json_schema")
    assert "optimizer.momentum: unknown key; allowed: lr, name, weight_decay." in value(plugin, "optimizer_refused")


def test_training_runs_with_the_registered_layer_and_optimizer(plugin):
    run = value(plugin, "train")
    assert run["exit"] == 0, run["output"]
    assert [row["epoch"] for row in run["rows"]] == [1, 2, 3]
    assert all(np.isfinite(row["train_loss"]) for row in run["rows"])


def test_a_registered_metric_is_monitorable_and_evaluated(plugin):
    columns, mode = value(plugin, "metric_registry")
    assert {"val_error_rate", "train_error_rate"} <= set(columns) and mode == "min"
    assert value(plugin, "metric_evaluate") == ["accuracy", "error_rate", "loss"]


def test_a_registered_metric_is_accepted_as_the_monitor(plugin):
    assert value(plugin, "metric_schema") == "val_error_rate"
    assert "val_error_rate" in value(plugin, "metric_json_schema")


def test_training_logs_and_monitors_a_registered_metric(plugin):
    run = value(plugin, "metric_train")
    assert run["exit"] == 0, run["output"]
    assert all("val_error_rate" in row and "train_error_rate" in row for row in run["rows"])


# -- every built-in entry, everywhere ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def checked():
    return {r.component for r in check_all() if r.passed and r.checked > 0}


@pytest.fixture(scope="module")
def json_schema():
    return config_json_schema()


def config_of(layers: str = "[{type: dense, units: 3}]", loss: str = "cross_entropy", optimizer: str = "sgd",
              monitor: str = "val_loss") -> dict:
    task = LOSSES[loss].kind
    text = (f"model: {{layers: {layers}}}\nloss: {{name: {loss}}}\noptimizer: {{name: {optimizer}}}\n"
            f"data: {{dataset: {DATASET[task]}, batch_size: 8}}\ntraining: {{monitor: {monitor}}}\n")
    return resolved_dict(parse_config_text(text, "registry.yaml"))


def explained(cfg: dict) -> list[str]:
    """Every equation `bpcli explain` shows for cfg, and every section title."""
    sections = explain(cfg, input_dim(cfg))
    return [s.title for s in sections] + [line.math for s in sections for line in s.lines]


def inspected(cfg: dict) -> dict:
    dim = input_dim(cfg)
    model = build_model(cfg["model"]["layers"], dim, dtype=cfg["model"]["dtype"])
    return summarize(Target("config", "registry.yaml", cfg, dim, model))


def layer_types(schema: dict) -> set[str]:
    return set(schema["$defs"]["ModelSection"]["properties"]["layers"]["items"]["discriminator"]["mapping"])


@pytest.mark.parametrize("name", list(LAYERS))
def test_every_layer_is_in_the_schema_gradcheck_explain_and_inspect(name, checked, json_schema):
    assert name in LAYER_TYPES and name in layer_types(json_schema) and f"layer {name}" in checked
    spec = json.dumps({"type": name, **LAYERS[name].check_options})
    cfg = config_of(f"[{{type: dense, units: 4}}, {spec}, {{type: dense, units: 3}}]")
    net = Net(build_model(cfg["model"]["layers"], 2), cfg["data"]["batch_size"])
    layer, terms = net.model.layers[1], net.terms(1)
    own = [math for math, _ in layer.equations(terms) + layer.backward_equations(terms)]
    assert own and set(own) <= set(explained(cfg))
    assert inspected(cfg)["layers"][1]["type"] == layer.summary_row()["type"] == type(layer).__name__


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_activation_is_in_the_schema_gradcheck_explain_and_inspect(name, checked, json_schema):
    assert name in LAYER_TYPES and name in ACTIVATION_CHOICES and name in layer_types(json_schema)
    assert f"activation {name}" in checked and f"network {name} + cross_entropy" in checked
    cfg = config_of(f"[{{type: dense, units: 4, activation: {name}}}, {{type: dense, units: 3}}]")
    cls = ACTIVATIONS[name]
    assert substitute(cls.equation, {"z": "z0", "a": "a1"}) in explained(cfg)
    assert substitute(cls.derivative, {"z": "z0", "a": "a1", "dz": "dz0", "da": "da1"}) in explained(cfg)
    assert inspected(cfg)["layers"][1]["type"] == cls.__name__


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_is_in_the_schema_gradcheck_explain_and_inspect(name, checked, json_schema):
    assert name in LOSS_OPTIONS and name in json_schema["properties"]["loss"]["properties"]["name"]["enum"]
    assert f"loss {name}" in checked and f"network tanh + {name}" in checked
    cfg = config_of(loss=name)
    cls = LOSSES[name]
    assert substitute(cls.derivative, {"z": "z0", "dz": "dz0"}) in explained(cfg)
    assert substitute(cls.equation, {"z": "z0"}).split(";  ")[-1] in explained(cfg)
    assert inspected(cfg)["config"]["loss"]["name"] == name


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_is_in_the_schema_explain_and_inspect(name, json_schema):
    assert name in OPTIMIZER_OPTIONS and name in json_schema["properties"]["optimizer"]["properties"]["name"]["enum"]
    cfg = config_of(optimizer=name)
    assert f"Update: {name}, once per batch (g = dL/dp)" in explained(cfg)
    assert inspected(cfg)["memory"]["optimizer"] == name


@pytest.mark.parametrize("name", list(METRICS))
def test_every_metric_is_scored_monitored_and_shown(name, json_schema):
    metric = METRICS[name]
    assert metric.mode in ("min", "max") and set(metric.tasks) <= set(TASKS)
    monitors = json_schema["$defs"]["TrainingSection"]["properties"]["monitor"]["enum"]
    for split in ("val", "train"):
        column = f"{split}_{name}"
        assert (column in monitorable()) == (column in monitors) == metric.per_epoch
        assert metric_for(column) is metric and resolve_mode(column) == metric.mode
        assert format_metric(column, 0.5).endswith(metric.show(0.5))
    task = metric.tasks[0]
    loss = next(cls() for cls in LOSSES.values() if cls.kind == task)
    model = build_model([{"type": "dense", "units": 3}], 2, dtype="float64")
    y = np.arange(6) % 3 if task == "multiclass" else (np.arange(18).reshape(6, 3) % 2).astype(float)
    scores = evaluate(model, loss, np.random.default_rng(0).normal(size=(6, 2)), y)
    assert np.isfinite(scores[name])


def test_the_registries_give_the_schema_its_names():
    assert list(LAYER_TYPES) == [*LAYERS, *ACTIVATIONS]
    assert monitorable() == ("val_loss", "val_accuracy", "train_loss", "train_accuracy")
