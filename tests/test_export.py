"""bpcli export --format onnx: onnxruntime, fed raw features, gives what `bpcli predict` gives (to 1e-5).

Each model is trained in this process for one epoch on a small synthetic set, so its weights,
preprocessing and batch-norm running statistics are all non-trivial, then exported with the
command itself and run by onnxruntime on points beyond the training range.
"""

import csv
import io
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from bpcli.cli.app import app
from bpcli.nn.activations import ACTIVATIONS
from bpcli.nn.layers import LAYERS
from bpcli.tools import export
from bpcli.training.rundir import RunDir
from bpcli.training.run import train_run

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

runner = CliRunner()

SPIRALS = {"dataset": "spirals", "options": {"n": 150}, "batch_size": 16}
MOONS = {"dataset": "moons", "options": {"n": 150}, "batch_size": 16}
SINE = {"dataset": "sine", "options": {"n": 150}, "batch_size": 16, "preprocess": "standardize"}


def train(tmp_path, layers, data=SPIRALS, loss="cross_entropy", **model) -> RunDir:
    config = {"model": {"layers": layers, **model}, "loss": {"name": loss}, "optimizer": {"name": "adam", "lr": 0.05},
              "data": data, "training": {"epochs": 1, "seed": 3}, "diagnostics": {"enabled": False},
              "output": {"dir": str(tmp_path / "runs"), "name": "run"}}
    return RunDir(train_run(config, "tiny.yaml")["run_dir"])


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def exported(run: RunDir, tmp_path) -> ort.InferenceSession:
    result = cli("export", run.path, "--format", "onnx", "-o", tmp_path / "model.onnx")
    assert result.exit_code == 0, result.output
    return ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])


def predicted(run: RunDir, x: np.ndarray, tmp_path) -> list[list[str]]:
    """`bpcli predict RUN points.npz`, as rows of text (header first)."""
    np.savez(tmp_path / "points.npz", X=x)
    result = cli("predict", run.path, tmp_path / "points.npz")
    assert result.exit_code == 0, result.output
    return list(csv.reader(io.StringIO(result.stdout)))


def points(n: int = 64) -> np.ndarray:
    """Raw features, partly beyond the training range, so the preprocessing folded into the graph matters."""
    return np.random.default_rng(0).normal(scale=1.5, size=(n, 2)).astype(np.float32)


def hidden(activation) -> list[dict]:
    return [{"type": "dense", "units": 12, "activation": activation}, {"type": "batchnorm"},
            {"type": "dropout", "rate": 0.25}]


OPTIONS = {"leaky_relu": {"name": "leaky_relu", "slope": 0.2}, "elu": {"name": "elu", "alpha": 0.7}}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_exports_and_matches_predict_multiclass(tmp_path, name):
    run = train(tmp_path, [*hidden(OPTIONS.get(name, name)), {"type": "dense", "units": 3}])
    x = points()
    logits, probabilities = exported(run, tmp_path).run(["logits", "probabilities"], {"input": x})
    rows = predicted(run, x, tmp_path)
    assert rows[0] == ["prediction", "p_0", "p_1", "p_2"]
    assert np.allclose(probabilities, np.array([r[1:] for r in rows[1:]], dtype=float), atol=1e-5, rtol=0)
    assert logits.argmax(axis=1).tolist() == [int(r[0]) for r in rows[1:]]
    from bpcli.api import load

    assert np.allclose(logits, load(run.path).logits(x), atol=1e-5, rtol=1e-5)


def test_a_standalone_activation_and_a_binary_task_export_with_sigmoid_probabilities(tmp_path):
    layers = [{"type": "dense", "units": 10}, {"type": "batchnorm"}, {"type": "leaky_relu", "slope": 0.1},
              {"type": "dropout", "rate": 0.5}, {"type": "dense", "units": 1}]
    run = train(tmp_path, layers, MOONS, "binary_cross_entropy")
    x = points()
    logits, probabilities = exported(run, tmp_path).run(["logits", "probabilities"], {"input": x})
    rows = predicted(run, x, tmp_path)
    assert rows[0] == ["prediction0", "p0"] and probabilities.shape == (64, 1)
    assert np.allclose(probabilities[:, 0], [float(r[1]) for r in rows[1:]], atol=1e-5, rtol=0)
    assert (logits[:, 0] > 0).astype(int).tolist() == [int(r[0]) for r in rows[1:]]


def test_a_regression_model_in_float64_exports_its_values_in_float32(tmp_path):
    layers = [{"type": "dense", "units": 16, "activation": "tanh"}, {"type": "batchnorm"},
              {"type": "dense", "units": 1}]
    run = train(tmp_path, layers, SINE, "mse", dtype="float64")
    x = np.linspace(-4, 4, 33, dtype=np.float32)[:, None]
    session = exported(run, tmp_path)
    assert [o.name for o in session.get_outputs()] == ["values"]
    (values,) = session.run(None, {"input": x})
    rows = predicted(run, x, tmp_path)
    assert rows[0] == ["y0"] and values.dtype == np.float32
    assert np.allclose(values[:, 0], [float(r[0]) for r in rows[1:]], atol=1e-5, rtol=1e-5)


def test_the_graph_is_opset_17_float32_with_the_task_and_class_names_recorded(tmp_path):
    run = train(tmp_path, [{"type": "dense", "units": 3}])
    exported(run, tmp_path)
    model = onnx.load(tmp_path / "model.onnx")
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert {p.key: p.value for p in model.metadata_props}["task"] == "multiclass"
    assert {p.key: p.value for p in model.metadata_props}["class_names"] == "0,1,2"
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.FLOAT]
    assert [n.op_type for n in model.graph.node] == ["Sub", "Mul", "Gemm", "Identity", "Softmax"]


# -- every registry entry has its mapping; one without is refused ---------------------------------------

def test_every_layer_type_and_activation_has_an_onnx_mapping():
    assert set(export.LAYER_NODES) == set(LAYERS)
    assert set(export.ACTIVATION_NODES) == set(ACTIVATIONS)


@pytest.fixture(scope="module")
def tanh_run(tmp_path_factory) -> RunDir:
    return train(tmp_path_factory.mktemp("tanh"), hidden("tanh") + [{"type": "dense", "units": 3}])


def test_an_activation_without_a_mapping_is_refused_naming_the_layer(tanh_run, tmp_path, monkeypatch):
    monkeypatch.delitem(export.ACTIVATION_NODES, "tanh")
    result = cli("export", tanh_run.path, "-o", tmp_path / "m.onnx")
    assert result.exit_code == 2 and not (tmp_path / "m.onnx").exists()
    assert result.stderr == ("error: layers.1 is a tanh activation, which bpcli cannot export to ONNX yet; it exports "
                             "these activations: identity, sigmoid, relu, leaky_relu, elu, gelu, softplus, softmax\n")


def test_a_layer_type_without_a_mapping_is_refused_naming_the_layer(tanh_run, tmp_path, monkeypatch):
    monkeypatch.delitem(export.LAYER_NODES, "batchnorm")
    result = cli("export", tanh_run.path, "-o", tmp_path / "m.onnx")
    assert result.exit_code == 2 and not (tmp_path / "m.onnx").exists()
    assert result.stderr == ("error: layers.2 is a batchnorm layer, which bpcli cannot export to ONNX yet; it exports "
                             "these layer types: dense, dropout and the activations\n")


# -- bad input ------------------------------------------------------------------------------------------

def test_a_file_that_is_no_checkpoint_is_refused_with_exit_5(tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    result = cli("export", tmp_path / "notes.txt", "-o", tmp_path / "m.onnx")
    assert result.exit_code == 5 and str(tmp_path / "notes.txt") in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "m.onnx").exists()


def test_an_output_folder_that_does_not_exist_is_refused_with_exit_5(tanh_run, tmp_path):
    result = cli("export", tanh_run.path, "-o", tmp_path / "missing" / "m.onnx")
    assert result.exit_code == 5 and not (tmp_path / "missing").exists()
    assert result.stderr == f"error: cannot write ONNX model {tmp_path / 'missing' / 'm.onnx'}: No such file or directory\n"


def test_an_unknown_format_is_refused_with_exit_2_before_the_checkpoint_is_read(tmp_path):
    result = cli("export", tmp_path / "nothing-here", "--format", "tflite", "-o", tmp_path / "m.tflite")
    assert result.exit_code == 2
    assert result.stderr == "error: --format tflite: unknown export format; allowed: onnx\n"


def test_without_onnx_installed_export_says_what_to_install_in_one_line(tanh_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)   # import onnx now raises ImportError
    result = cli("export", tanh_run.path, "-o", tmp_path / "m.onnx")
    assert result.exit_code == 2 and not (tmp_path / "m.onnx").exists()
    assert result.stderr == ('error: exporting to ONNX needs the onnx package, which is not installed: pip install onnx '
                             '(in a checkout of bpcli: pip install -e ".[onnx]"), then run the command again\n')
