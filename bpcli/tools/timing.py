"""Where a batch's time goes: per-layer forward and backward, the loss, the update, and the bare GEMMs.

    time_config(config, x, y, n_train) -> report    what `bpcli time CONFIG` prints (as `caffe time` does)
    BareGemms(sizes, batch, n).epoch()    seconds for just the matrix multiplies of one epoch

An MLP epoch is mostly matrix multiplies; everything else (bias adds,
activations, the loss, the optimizer update, Python) is overhead. The ratio of
an epoch to the bare GEMMs of the same shapes says how much of that overhead is
left: 1.0 would be the speed of BLAS alone.
"""

from __future__ import annotations

import time

import numpy as np

from bpcli.config.sections import Config
from bpcli.nn.model import Model


class BareGemms:
    """One epoch of exactly the matrix multiplies an MLP needs, into preallocated outputs.

    Forward x @ W per layer; backward a.T @ dz per layer and dz @ W.T for every
    layer but the first (no trainer needs dLoss/dinput). Every operand is
    initialized: uninitialized memory could hold denormals, which slow BLAS down.
    """

    def __init__(self, sizes: list[int], batch: int, n_train: int, dtype=np.float32):
        rng = np.random.default_rng(1)
        self.batches = [batch] * (n_train // batch) + ([n_train % batch] if n_train % batch else [])
        self.weights = [rng.standard_normal((a, b)).astype(dtype) for a, b in zip(sizes, sizes[1:])]
        self.buffers = {}
        for rows in set(self.batches):
            acts = [rng.standard_normal((rows, s)).astype(dtype) for s in sizes]
            deltas = [rng.standard_normal((rows, s)).astype(dtype) for s in sizes]
            self.buffers[rows] = (acts, deltas, [np.zeros_like(w) for w in self.weights])

    def epoch(self) -> float:
        started = time.perf_counter()
        for rows in self.batches:
            acts, deltas, dws = self.buffers[rows]
            for i, w in enumerate(self.weights):
                np.matmul(acts[i], w, out=acts[i + 1])
            for i in reversed(range(len(self.weights))):
                np.matmul(acts[i].T, deltas[i + 1], out=dws[i])
                if i > 0:
                    np.matmul(deltas[i + 1], self.weights[i].T, out=deltas[i])
        return time.perf_counter() - started


def gemm_sizes(model: Model) -> list[int]:
    """[input, fan_out of each weight matrix]: the shapes the GEMMs run on.

    A layer multiplies by a matrix where it has a 2-D parameter, shaped (fan_in, fan_out) as dense's weight.
    """
    fan_outs = [shape[1] for layer in model.layers for shape in layer.param_shapes().values() if len(shape) == 2]
    return [model.input_dim, *fan_outs]


def _spread_ms(fn, repeats: int) -> dict:
    """{"min", "median", "max"} milliseconds of `repeats` calls: the median is the figure, and a max far above
    the min shows a busy machine (other processes, frequency changes) rather than the code."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return {"min": 1e3 * min(times), "median": 1e3 * float(np.median(times)), "max": 1e3 * max(times)}


def time_layers(model: Model, x: np.ndarray, repeats: int) -> list[dict]:
    """Median forward and backward milliseconds of each layer on one batch."""
    inputs = [x]
    for layer in model.layers:
        inputs.append(np.array(layer.forward(inputs[-1], True), copy=True))
    rows = []
    for i, layer in enumerate(model.layers):
        x_in, dy = inputs[i], np.ones_like(inputs[i + 1])
        # a fresh copy of the input each time: layers that work in place overwrite it
        forward = _spread_ms(lambda: layer.forward(np.array(x_in, copy=True), True), repeats)  # noqa: B023
        backward = _spread_ms(lambda: layer.backward(np.array(dy, copy=True)), repeats)  # noqa: B023
        rows.append({"layer": i, "type": layer.activation_name or type(layer).__name__.lower(),
                     "output": list(inputs[i + 1].shape), "forward_ms": forward["median"],
                     "backward_ms": backward["median"], "forward_spread_ms": forward, "backward_spread_ms": backward})
    return rows


def time_config(config: Config, x_train: np.ndarray, y_train: np.ndarray, n_train: int, repeats: int = 20,
                augment=None) -> dict:
    """Per-layer times, and a whole batch (forward, loss, backward, update) against its bare GEMMs.

    The parts are built as a run of the config builds them. x_train needs only
    one batch of rows; n_train is the size of the training set an epoch covers.
    `augment` (data.augment's Augmenter, or None) is timed on the same batch: a
    cost of its own, on top of the batch's.
    """
    from bpcli.training.step import build_parts, train_step

    batch, batches = config.data.batch_size_for(n_train), config.data.steps_per_epoch(n_train)
    parts = build_parts(config, x_train.shape[1], batches)
    x, y = x_train[:batch], y_train[:batch]
    layers = time_layers(parts.model, x, repeats)
    spread = _spread_ms(lambda: train_step(parts, x, y, 1e-9), repeats)
    gemm_batch = _spread_ms(BareGemms(gemm_sizes(parts.model), batch, batch).epoch, repeats)["median"]  # its GEMMs
    step = spread["median"]
    report = {"batch_size": batch, "layers": layers, "batch_ms": step, "batch_spread_ms": spread, "repeats": repeats,
              "samples_per_second": batch / step * 1e3,
              "epoch_s": step * batches / 1e3, "bare_gemm_epoch_s": gemm_batch * batches / 1e3,
              "ratio": step / gemm_batch, "batches_per_epoch": batches, "n_train": n_train}
    if augment is not None:
        cost = _spread_ms(lambda: augment(x, 0, 0), repeats)
        report.update(augment_ms=cost["median"], augment_spread_ms=cost, augment_epoch_s=cost["median"] * batches / 1e3)
    return report
