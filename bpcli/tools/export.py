"""Export a trained model for deployment elsewhere: an ONNX graph, run by onnxruntime and the like.

    onnx_model(restored, source) -> onnx.ModelProto      the graph, checked by onnx.checker
    export(restored, output, format, source)              written atomically to `output`

The graph computes what `bpcli predict` computes, in float32:

    input (N, features)  raw features, as in the training data (images flattened row by row)
    x' = (input - offset) * scale                         the checkpoint's preprocessing, folded in
    each layer in order                                   dense: Gemm; dropout: nothing (evaluation);
                                                          batchnorm: BatchNormalization with the running
                                                          statistics; activations: their ONNX operator
    logits, probabilities (N, outputs)                    softmax (multiclass) or sigmoid (binary)
    values (N, outputs)                                   regression: the outputs as they are

Each layer type of nn.layers.LAYERS and each activation of
nn.activations.ACTIVATIONS has its entry in LAYER_NODES / ACTIVATION_NODES
(tests/test_export.py checks both registries are covered); a model with a
component that has none is refused, naming the layer, before anything is written.
GELU is written out from its tanh form (ONNX's own Gelu needs opset 20), so the
graph runs on any runtime of opset 17, which covers every other operator here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bpcli.version import __version__
from bpcli.errors import MissingExtraError, UsageError
from bpcli.fileio import write_file
from bpcli.nn.layers import LAYERS, ActivationLayer
from bpcli.tools.inference import Restored

OPSET = 17        # onnxruntime >= 1.13, and most other runtimes
IR_VERSION = 8    # the IR version that came with opset 17: readable by runtimes of that age
INSTALL = 'pip install onnx (in a checkout of bpcli: pip install -e ".[onnx]")'


def require_onnx():
    """The onnx package, or a MissingExtraError saying what to install."""
    try:
        import onnx
        from onnx import helper, numpy_helper  # noqa: F401 (submodules used below)
    except ImportError:
        raise MissingExtraError(f"exporting to ONNX needs the onnx package, which is not installed: {INSTALL}, "
                                "then run the command again") from None
    return onnx


class GraphBuilder:
    """Nodes and float32 initializers, appended in order; every value gets a unique name."""

    def __init__(self, onnx):
        self.onnx, self.nodes, self.initializers = onnx, [], []

    def constant(self, name: str, value) -> str:
        array = np.asarray(value, dtype=np.float32)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes) -> str:
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], name=output, **attributes))
        return output


# -- layers: (builder, layer, input name, "layers.N") -> output name ------------------------------------

def _dense(g: GraphBuilder, layer, x: str, name: str) -> str:
    """z = x @ weight + bias, weight (fan_in, fan_out) as bpcli stores it (Gemm with transB = 0)."""
    weight, bias = (g.constant(f"{name}.{p}", layer.params[p]) for p in ("weight", "bias"))
    return g.node("Gemm", [x, weight, bias], name)


def _dropout(g: GraphBuilder, layer, x: str, name: str) -> str:
    """Inverted dropout is the identity at evaluation: no node."""
    return x


def _batchnorm(g: GraphBuilder, layer, x: str, name: str) -> str:
    """Evaluation mode: y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta."""
    inputs = [g.constant(f"{name}.{p}", layer.params[p]) for p in ("gamma", "beta")]
    inputs += [g.constant(f"{name}.{b}", layer.buffers[b]) for b in ("running_mean", "running_var")]
    return g.node("BatchNormalization", [x, *inputs], name, epsilon=float(layer.eps))


def _activation(g: GraphBuilder, layer, x: str, name: str) -> str:
    build = ACTIVATION_NODES.get(layer.activation_name)
    if build is None:
        raise UsageError(f"{name} is a {layer.activation_name} activation, which bpcli cannot export to ONNX yet; "
                         f"it exports these activations: {', '.join(ACTIVATION_NODES)}")
    return build(g, layer.activation, x, name)


LAYER_NODES = {
    "dense": _dense,
    "dropout": _dropout,
    "batchnorm": _batchnorm,
}


# -- activations: (builder, activation, input name, "layers.N") -> output name --------------------------

def _operator(op: str, options: dict[str, str] | None = None, **fixed):
    """An activation that is one ONNX operator: `options` maps an ONNX attribute to the activation's option
    of that meaning (LeakyRelu's alpha is leaky_relu's slope); `fixed` attributes are the same for all."""
    def build(g: GraphBuilder, activation, x: str, name: str) -> str:
        values = {attr: float(getattr(activation, option)) for attr, option in (options or {}).items()}
        return g.node(op, [x], name, **values, **fixed)
    return build


def _gelu(g: GraphBuilder, activation, x: str, name: str) -> str:
    """a = 0.5 * z * (1 + tanh(c * (z + k * z^3))), as nn.activations.GELU computes it."""
    cube = g.node("Pow", [x, g.constant(f"{name}.three", 3.0)], f"{name}.cube")
    inner = g.node("Mul", [cube, g.constant(f"{name}.k", activation.k)], f"{name}.kcube")
    inner = g.node("Add", [x, inner], f"{name}.inner")
    inner = g.node("Mul", [inner, g.constant(f"{name}.c", activation.c)], f"{name}.scaled")
    t = g.node("Tanh", [inner], f"{name}.tanh")
    t = g.node("Add", [t, g.constant(f"{name}.one", 1.0)], f"{name}.one_plus_t")
    half = g.node("Mul", [x, g.constant(f"{name}.half", 0.5)], f"{name}.half_z")
    return g.node("Mul", [half, t], name)


ACTIVATION_NODES = {
    "identity": _operator("Identity"),
    "sigmoid": _operator("Sigmoid"),
    "tanh": _operator("Tanh"),
    "relu": _operator("Relu"),
    "leaky_relu": _operator("LeakyRelu", {"alpha": "slope"}),
    "elu": _operator("Elu", {"alpha": "alpha"}),
    "gelu": _gelu,
    "softplus": _operator("Softplus"),
    "softmax": _operator("Softmax", axis=1),   # over each row, as bpcli
}


# -- the model ------------------------------------------------------------------------------------------

def layer_type(layer) -> str:
    """The registry name a layer was built from: an activation's own name, or its LAYERS key."""
    if isinstance(layer, ActivationLayer):
        return layer.activation_name
    return next((name for name, cls in LAYERS.items() if type(layer) is cls), type(layer).__name__)


def _layer_nodes(g: GraphBuilder, layer, x: str, name: str) -> str:
    if isinstance(layer, ActivationLayer):
        return _activation(g, layer, x, name)
    build = LAYER_NODES.get(layer_type(layer))
    if build is None:
        raise UsageError(f"{name} is a {layer_type(layer)} layer, which bpcli cannot export to ONNX yet; it "
                         f"exports these layer types: {', '.join(LAYER_NODES)} and the activations")
    return build(g, layer, x, name)


def outputs_of(task: str) -> tuple[str, ...]:
    """The graph's output names: logits and probabilities for classes, values for regression."""
    return ("values",) if task == "regression" else ("logits", "probabilities")


def onnx_model(r: Restored, source: str = ""):
    """The ONNX model of a restored checkpoint: preprocessing, every layer, the outputs of its task."""
    onnx = require_onnx()
    g = GraphBuilder(onnx)
    x = g.node("Sub", ["input", g.constant("preprocess.offset", r.preprocessor.offset)], "preprocess.centered")
    x = g.node("Mul", [x, g.constant("preprocess.scale", r.preprocessor.scale)], "preprocess.scaled")
    for i, layer in enumerate(r.model.layers):
        x = _layer_nodes(g, layer, x, f"layers.{i}")
    pre = r.preprocessor
    if r.task == "regression" and pre.target_offset is not None:   # standardized targets: back to their units
        x = g.node("Div", [x, g.constant("preprocess.target_scale", pre.target_scale)], "values.unscaled")
        x = g.node("Add", [x, g.constant("preprocess.target_offset", pre.target_offset)], "values.shifted")
    names = outputs_of(r.task)
    g.node("Identity", [x], names[0])
    if r.task == "multiclass":
        g.node("Softmax", [x], names[1], axis=1)
    elif r.task == "binary":
        g.node("Sigmoid", [x], names[1])
    return _assemble(onnx, g, r, names, source)


def _assemble(onnx, g: GraphBuilder, r: Restored, names: tuple[str, ...], source: str):
    """Graph, model and metadata (task, class names, where it came from), checked by onnx.checker."""
    helper, float32 = onnx.helper, onnx.TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("input", float32, ["N", r.model.input_dim])]
    outputs = [helper.make_tensor_value_info(name, float32, ["N", r.model.output_dim]) for name in names]
    graph = helper.make_graph(g.nodes, "bpcli", inputs, outputs, g.initializers,
                              doc_string=f"bpcli {r.task} model{' from ' + source if source else ''}")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="bpcli", producer_version=__version__)
    helper.set_model_props(model, {"task": r.task, "class_names": ",".join(r.class_names or ()),
                                   "source": source})
    onnx.checker.check_model(model)
    return model


def export_onnx(r: Restored, output: str | Path, source: str = "") -> None:
    model = onnx_model(r, source)
    write_file(output, model.SerializeToString(), "ONNX model", when_full="free some space and export again")


FORMATS = {"onnx": export_onnx}


def check_format(name: str) -> None:
    """Refuse an unknown --format before any checkpoint is read."""
    if name not in FORMATS:
        raise UsageError(f"--format {name}: unknown export format; allowed: {', '.join(FORMATS)}")
    if name == "onnx":
        require_onnx()


def export(r: Restored, output: str | Path, format: str = "onnx", source: str = "") -> None:
    """Write the model in `format` (one of FORMATS) to `output`."""
    check_format(format)
    FORMATS[format](r, output, source)
