"""`bpcli inspect` and `bpcli explain`: layer tables, parameter and memory totals, a run's history, equations."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bpcli.nn.activations import ACTIVATIONS
from bpcli.cli.app import app
from bpcli.config.loading import parse_config_text
from bpcli.config.sections import resolved_dict
from bpcli.tools.explain import Line, explain, holds, render
from bpcli.nn.losses import LOSSES
from bpcli.nn.model import build_model
from bpcli.optim.optimizers import OPTIMIZERS
from bpcli.nn.regularizers import REGULARIZERS
from bpcli.training.run import train_run
from bpcli.tools.inspect import input_dim, load_target, summarize

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "configs" / "optimizers").glob("*.yaml"))
INPUTS = {"mnist": 784, "fashion-mnist": 784, "mnist-mini": 784, "spirals": 2, "xor": 2, "sine": 1,
          "wine.csv": 13}   # a dataset file by its name (configs store the path absolute)
STATE_COPIES = {"adagrad": 1, "adam": 2, "adamw": 2, "momentum": 1, "nesterov": 1, "rmsprop": 1, "sgd": 0}


def cfg_of(text: str) -> dict:
    return resolved_dict(parse_config_text(text, "test.yaml"))


def lines_of(sections) -> list[Line]:
    return [line for section in sections for line in section.lines]


def line(sections, math: str) -> Line:
    found = [x for x in lines_of(sections) if x.math == math]
    assert found, f"no line {math!r} in:\n{render(sections)}"
    return found[0]


# -- the equations live next to the code -----------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_states_its_equation_and_derivative(name):
    cls = ACTIVATIONS[name]
    assert cls.equation.startswith("a = ") and cls.derivative.startswith("dz = ")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_states_its_value_and_gradient(name):
    cls = LOSSES[name]
    assert "L = " in cls.equation and cls.derivative.startswith("dz = ")


@pytest.mark.parametrize("name", sorted(REGULARIZERS))
def test_every_regularizer_states_its_penalty_and_gradient(name):
    cls = REGULARIZERS[name]
    assert "lam" in cls.equation and cls.derivative.startswith("dW += ")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_states_its_update_with_conditions_it_has(name):
    optimizer = OPTIMIZERS[name]()
    assert optimizer.update and any(text.startswith("p = p") for _, text in optimizer.update)
    for condition, _ in optimizer.update:
        holds(optimizer, condition)   # every attribute a condition names exists (else AttributeError)


# -- inspect: the numbers ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(ROOT / "configs").as_posix())
def test_parameter_count_and_shapes_match_the_model_training_builds(path):
    s = summarize(load_target(path))
    cfg = resolved_dict(load_target(path).config)
    dim = INPUTS[Path(cfg["data"]["dataset"]).name]
    model = build_model(cfg["model"]["layers"], dim, dtype=cfg["model"]["dtype"])
    assert s["input_dim"] == dim
    assert s["parameters"]["total"] == model.n_params == sum(row["params"] for row in s["layers"])
    assert [row["layer"] for row in s["layers"]] == [f"layers.{i}" for i in range(len(model.layers))]
    assert s["layers"][-1]["output"] == [cfg["data"]["batch_size"], model.output_dim]
    assert s["memory"]["parameters"] == s["memory"]["gradients"] == model.n_params * 4


@pytest.mark.parametrize("name", sorted(STATE_COPIES))
def test_optimizer_state_memory_counts_its_copies(name):
    m = summarize(load_target(ROOT / "configs" / "optimizers" / f"{name}.yaml"))["memory"]
    n_bytes = 101_770 * 4     # 784-128-10: 784*128 + 128 + 128*10 + 10
    assert m["parameters"] == n_bytes and m["optimizer_state"] == STATE_COPIES[name] * n_bytes
    assert m["total"] == (3 + STATE_COPIES[name]) * n_bytes   # + gradients and the optimizer's scratch


def test_quickstart_layer_table():
    rows = summarize(load_target(ROOT / "configs" / "quickstart.yaml"))["layers"]
    assert [(r["type"], tuple(r["output"]), r["params"]) for r in rows] == [
        ("Dropout", (64, 784), 0), ("Dense", (64, 512), 784 * 512 + 512), ("ReLU", (64, 512), 0),
        ("Dropout", (64, 512), 0), ("Dense", (64, 512), 512 * 512 + 512), ("ReLU", (64, 512), 0),
        ("Dropout", (64, 512), 0), ("Dense", (64, 10), 512 * 10 + 10)]
    assert rows[1]["init"] == {"weight": "he_normal", "bias": "zeros"} and rows[1]["activation"] == "relu"
    assert rows[0]["options"] == {"rate": 0.2} and rows[7]["init"]["weight"] == "glorot_uniform"


def test_initializer_options_and_batchnorm_buffers(tmp_path):
    cfg = """
model:
  dtype: float64
  layers:
    - {type: dense, units: 4, init: {name: normal, std: 0.1}, activation: {name: leaky_relu, slope: 0.2}}
    - {type: batchnorm}
    - {type: dense, units: 1}
loss: {name: mse}
data: {dataset: sine, batch_size: 16}
"""
    path = tmp_path / "bn.yaml"
    path.write_text(cfg)
    s = summarize(load_target(path))
    assert s["layers"][0]["init"]["weight"] == "normal(std=0.1)" and s["layers"][0]["activation"] == "leaky_relu(slope=0.2)"
    assert s["layers"][1]["options"] == {"slope": 0.2} and s["layers"][2]["params"] == 8
    assert s["parameters"] == {"total": 8 + 8 + 5, "trainable": 21, "buffers": 8}
    assert s["memory"]["bytes_per_value"] == 8 and s["memory"]["buffers"] == 64


def test_input_dim_of_csv_and_npz_comes_from_their_headers(tmp_path, monkeypatch):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("a,b,label,c\n1,2,0,3\n")
    npz_path = tmp_path / "d.npz"
    np.savez(npz_path, X=np.zeros((5, 4, 3)), y=np.zeros(5))
    monkeypatch.setattr("bpcli.tools.inspect.load_dataset", lambda *a, **k: pytest.fail("loaded the whole dataset"))
    def config(dataset, options="{}"):
        return parse_config_text(f"model: {{layers: [{{type: dense, units: 1}}]}}\n"
                                 f"data: {{dataset: {dataset}, options: {options}}}\n", "test.yaml")

    assert input_dim(config(csv_path)) == 3
    assert input_dim(config(csv_path, "{features: [a, c]}")) == 2
    assert input_dim(config(npz_path)) == 12
    assert input_dim(resolved_dict(config(npz_path))) == 12   # a resolved config dict is read into a Config


# -- inspect: a real run -----------------------------------------------------------------------------

TINY = """
model:
  layers:
    - {type: dense, units: 16, activation: relu}
    - {type: dense, units: 3}
loss: {name: cross_entropy}
optimizer: {name: adam, lr: 0.05}
data: {dataset: spirals, options: {n: 90}, batch_size: 16, val_fraction: 0.2}
training: {epochs: 6, seed: 0, monitor: val_loss}
output: {dir: RUNS, name: tiny}
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    train_run(cfg_of(TINY.replace("RUNS", str(runs))), "tiny.yaml")
    return runs / "tiny"


def test_checkpoint_history_matches_the_run_files(run_dir):
    s = summarize(load_target(run_dir))
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    t = s["training"]
    assert s["kind"] == "checkpoint" and s["source"].endswith("last.safetensors")
    assert t["epochs_run"] == summary["epochs_run"] == 6 and t["stop_reason"] == summary["stopped_because"]
    assert t["best_epoch"] == summary["best_epoch"] and t["monitor"] == "val_loss" and t["mode"] == "min"
    best = next(r for r in rows if r["epoch"] == summary["best_epoch"])
    assert t["best_metrics"]["val_loss"] == pytest.approx(best["val_loss"]) == pytest.approx(min(r["val_loss"] for r in rows))
    assert t["best_metrics"]["val_accuracy"] == pytest.approx(best["val_accuracy"])
    assert t["data"] == summary["data"] and t["data"]["n_train"] == 72 and t["class_names"] == ["0", "1", "2"]
    n = 2 * 16 + 16 + 16 * 3 + 3
    assert s["parameters"]["total"] == n and s["memory"]["optimizer_state"] == 2 * n * 4
    assert "checkpoint" in s["memory"]["optimizer_state_source"]


def test_best_checkpoint_holds_the_history_up_to_its_epoch(run_dir):
    t = summarize(load_target(run_dir / "checkpoints" / "best.safetensors"))["training"]
    assert t["checkpoint"] == "best" and t["best_metrics"]["epoch"] == t["best_epoch"] <= t["epochs_run"]


def test_inspect_cli_prints_the_table_and_json(run_dir):
    result = runner.invoke(app, ["inspect", str(run_dir)], env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert "layers.2" in result.output and "he_normal, zeros" in result.output and "\x1b[" not in result.output
    assert "best epoch" in result.output and "stopped: completed 6 epochs" in result.output
    data = json.loads(runner.invoke(app, ["inspect", str(ROOT / "configs" / "quickstart.yaml"), "--json"]).stdout)
    assert data["parameters"]["total"] == 669_706 and data["memory"]["optimizer_state"] == 2 * 669_706 * 4
    assert data["training"] is None and data["config"]["optimizer"]["name"] == "adam"


def test_bad_input_names_the_file_and_what_inspect_accepts(tmp_path):
    expected = "accepts a config file (.yaml) or a checkpoint: a .safetensors file or a run directory"
    readme = runner.invoke(app, ["inspect", str(ROOT / "README.md")])
    assert readme.exit_code == 2 and f"{ROOT / 'README.md'}: neither a config nor a checkpoint" in readme.output
    assert f"bpcli inspect {expected}" in readme.output
    folder = runner.invoke(app, ["explain", str(tmp_path)])
    assert folder.exit_code == 2 and "not a run directory" in folder.output and f"bpcli explain {expected}" in folder.output
    (tmp_path / "x.safetensors").write_bytes(b"not a checkpoint at all")
    broken = runner.invoke(app, ["inspect", str(tmp_path / "x.safetensors")])
    assert broken.exit_code == 5 and "x.safetensors" in broken.output and expected in broken.output
    missing = runner.invoke(app, ["inspect", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "nope.yaml: no such config file, and no shipped config of that name" in missing.output


# -- explain -----------------------------------------------------------------------------------------

MLP = """
model:
  layers:
    - {type: dense, units: 256, activation: relu}
    - {type: dense, units: 10}
loss: {name: cross_entropy, l2: L2}
data: {dataset: mnist-mini, batch_size: 128}
"""


def test_explain_shapes_for_a_known_network():
    sections = explain(cfg_of(MLP.replace("L2", "0.001")), 784)
    assert line(sections, "z0 = x @ W0 + b0").shapes == "x (128, 784) @ W0 (784, 256) + b0 (256,) -> (128, 256)"
    assert line(sections, "a1 = max(z0, 0)").shapes == "a1 (128, 256)"
    assert line(sections, "z2 = a1 @ W2 + b2").shapes == "a1 (128, 256) @ W2 (256, 10) + b2 (10,) -> (128, 10)"
    assert line(sections, "dz2 = (p - q) / B").shapes == "dz2 (128, 10)"
    assert line(sections, "dW2 = a1.T @ dz2 + l2 * W2").shapes == "a1.T (256, 128) @ dz2 (128, 10) -> (256, 10)"
    assert line(sections, "db2 = batch sum of dz2").shapes == "(10,)"
    assert line(sections, "da1 = dz2 @ W2.T").shapes == "dz2 (128, 10) @ W2.T (10, 256) -> (128, 256)"
    assert line(sections, "dz0 = da1 * (z0 > 0)").shapes == "dz0 (128, 256)"
    assert line(sections, "dW0 = x.T @ dz0 + l2 * W0").shapes == "x.T (784, 128) @ dz0 (128, 256) -> (784, 256)"
    line(sections, "(dx is not computed: no layer below needs it)")
    assert [x.math for x in lines_of(sections) if x.label == "total"] == [f"{784 * 256 + 256 + 256 * 10 + 10:,} parameters"]
    assert line(sections, "q = onehot(y)").shapes == "q (128, 10)"


def test_l2_appears_only_when_set_and_biases_only_when_asked():
    without = render(explain(cfg_of(MLP.replace("L2", "0.0")), 784))
    assert "l2" not in without and "penalty" not in without
    with_l2 = explain(cfg_of(MLP.replace("L2", "0.001")), 784)
    assert line(with_l2, "L = L + (l2 / 2) * sum(W^2)").shapes == "summed over W0, W2; l2 = 0.001"
    line(with_l2, "db0 = batch sum of dz0")
    biased = explain(cfg_of(MLP.replace("L2", "0.001").replace("l2: 0.001", "l2: 0.001, regularize_bias: true")), 784)
    line(biased, "db0 = batch sum of dz0 + l2 * b0")


DERIVATIVES = {
    "identity": "dz0 = da1", "sigmoid": "dz0 = da1 * a1 * (1 - a1)", "tanh": "dz0 = da1 * (1 - a1^2)",
    "relu": "dz0 = da1 * (z0 > 0)", "leaky_relu": "dz0 = da1 * where(z0 > 0, 1, slope)",
    "elu": "dz0 = da1 * where(z0 > 0, 1, a1 + alpha)", "softplus": "dz0 = da1 * sigmoid(z0)",
    "softmax": "dz0 = a1 * (da1 - rowsum(da1 * a1))",
    "gelu": "dz0 = da1 * (0.5 * (1 + t) + 0.5 * z0 * (1 - t^2) * sqrt(2/pi) * (1 + 3 * 0.044715 * z0^2))",
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_explain_names_each_activations_derivative(name):
    cfg = cfg_of(f"model: {{layers: [{{type: dense, units: 3, activation: {name}}}, {{type: dense, units: 2}}]}}\n"
                 "data: {dataset: xor, batch_size: 4}\nloss: {name: binary_cross_entropy}\n")
    sections = explain(cfg, 2)
    assert line(sections, DERIVATIVES[name]).shapes.startswith("dz0 (4, 3)")
    forward = [x for x in sections[1].lines if x.label == "layers.1"]
    assert forward[0].math.startswith("a1 = ") and "z0" in forward[0].math


def test_explain_loss_gradients_dropout_batchnorm_and_update():
    cfg = cfg_of("""
model:
  layers:
    - {type: dense, units: 4}
    - {type: batchnorm}
    - {type: tanh}
    - {type: dropout, rate: 0.5}
    - {type: dense, units: 1}
loss: {name: huber, delta: 0.5}
optimizer: {name: sgd, lr: 0.1, momentum: 0.9, nesterov: true}
training: {clip_grad_norm: 1.0}
data: {dataset: sine, batch_size: 32}
""")
    sections = explain(cfg, 1)
    assert line(sections, "dz4 = clip(z4 - y, -delta, delta) / N").shapes == "dz4 (32, 1)"
    assert "N = B * k = 32 * 1 = 32, delta = 0.5" in render(sections)
    assert line(sections, "h3 = a2 * m3 / (1 - rate)").shapes.endswith("rate = 0.5")
    line(sections, "da2 = dh3 * m3 / (1 - rate)")
    line(sections, "dh1 = da2 * (1 - a2^2)")
    line(sections, "dz0 = (B * dxhat1 - sum(dxhat1) - xhat1 * sum(dxhat1 * xhat1)) / (B * sqrt(var1 + eps))")
    line(sections, "var1 = batch mean of (z0 - mu1)^2")
    update = [x.math for x in sections[3].lines]
    assert update[:1] == ["g = g * max_norm / (||g|| + 1e-6)   if ||g|| > max_norm"]
    assert "g = g + momentum * buf" in update and "g = buf" not in update and "p = p - lr * g" in update


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(ROOT / "configs").as_posix())
def test_explain_cli_fits_100_columns_when_piped(path):
    result = runner.invoke(app, ["explain", str(path)])
    assert result.exit_code == 0, result.output
    assert max(len(x) for x in result.output.splitlines()) <= 100 and "\x1b[" not in result.output
    assert "Backward" in result.output and "Update:" in result.output
