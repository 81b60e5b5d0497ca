"""uint8 images stay bytes in memory and are scaled batch by batch, bit for bit as before (issue 16, item 2)."""

import numpy as np
import pytest

from bpcli.data.batches import ScaledRows
from bpcli.data.catalog import load_dataset
from bpcli.data.preprocessing import Preprocessor, prepare


def eager(pre: Preprocessor, x: np.ndarray, dtype: str) -> np.ndarray:
    """What Preprocessor.transform computed before: the whole array cast, offset and scaled."""
    flat = x.reshape(len(x), -1).astype(dtype)
    flat -= pre.offset.astype(dtype)
    flat *= pre.scale.astype(dtype)
    return flat


@pytest.mark.parametrize("method", ["scale", "standardize", "none"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batches_equal_the_eager_transform_bit_for_bit(method, dtype):
    x = np.random.default_rng(0).integers(0, 256, (300, 28, 28), dtype=np.uint8)
    pre = Preprocessor(method).fit(x)
    rows, want = pre.transform(x, dtype), eager(pre, x, dtype)
    assert isinstance(rows, ScaledRows) and rows.shape == want.shape and rows.dtype == want.dtype
    idx = np.random.default_rng(1).permutation(300)[:128]
    for got, expected in ((rows[idx], want[idx]), (rows[10:200], want[10:200]), (np.asarray(rows), want),
                          (rows[5], want[5])):
        assert got.dtype == expected.dtype and np.array_equal(got, expected)
        assert np.array_equal(got.view(np.uint8), expected.view(np.uint8))   # the same bits, signed zeros too


def test_prepared_images_hold_bytes_not_floats():
    data = prepare(load_dataset("mnist-mini"), "multiclass", val_fraction=0.1, seed=0)
    for x in (data.x_train, data.x_val, data.x_test):
        assert isinstance(x, ScaledRows) and x.raw.dtype == np.uint8 and x.nbytes == x.shape[0] * 784
    assert data.input_dim == 784 and data.x_train[:3].dtype == np.float32


def test_a_training_run_gives_the_weights_of_float_inputs(tmp_path, monkeypatch):
    """The quickstart-like run trains to the same weights with lazily scaled bytes as with the eager floats."""
    import bpcli
    from bpcli.data import preprocessing

    overrides = {"training.epochs": 2, "output__dir": str(tmp_path)}
    lazy = bpcli.train("quickstart", output__name="lazy", **overrides)
    monkeypatch.setattr(preprocessing.Preprocessor, "transform", lambda self, x, dtype="float32": eager(self, x, dtype))
    floats = bpcli.train("quickstart", output__name="floats", **overrides)
    a, b = lazy.model.restored.model, floats.model.restored.model
    for name in a.state_dict():
        assert np.array_equal(a.state_dict()[name], b.state_dict()[name]), name
    assert lazy.summary["test"] == floats.summary["test"]
