"""Checkpoints: round trip, refusal of foreign or damaged files (no code ever runs), no non-finite weights."""

import os
import pickle

import numpy as np
import pytest

from bpcli.training.checkpoint import load_checkpoint, save_checkpoint
from bpcli.errors import CheckpointError


def meta(**extra):
    """The smallest metadata load_checkpoint accepts (every field bpcli relies on), plus `extra`."""
    sections = ("model", "loss", "optimizer", "schedule", "data", "training", "checkpoint", "output")
    return {"kind": "last", "config": {s: {} for s in sections}, "task": "multiclass", "input_dim": 2,
            "class_names": None, "val_hash": "", "schedule": {}, "callbacks": {},
            "state": {"epoch": 0, "step": 0, "batch": 0, "partial": {}, "seconds": 0.0, "last_row": None,
                      "best_row": None},
            "dropout_rng": np.random.default_rng(0).bit_generator.state, **extra}


def tensors():
    return {"layers.0.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "optimizer.step": np.array(7)}


def test_round_trip_keeps_values_shapes_and_metadata(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, tensors(), meta(note={"a": [1, 2]}, big=2 ** 100))
    ck = load_checkpoint(path)
    assert np.array_equal(ck.tensors["layers.0.weight"], tensors()["layers.0.weight"])
    assert ck.tensors["optimizer.step"].shape == () and int(ck.tensors["optimizer.step"]) == 7
    assert ck.meta["note"] == {"a": [1, 2]} and ck.meta["big"] == 2 ** 100
    assert ck.group("optimizer") == {"step": ck.tensors["optimizer.step"]}
    assert not list(tmp_path.glob("*.tmp"))


def test_non_finite_weights_are_never_written(tmp_path):
    bad = tensors()
    bad["layers.0.weight"][0, 0] = np.nan
    with pytest.raises(CheckpointError, match="non-finite"):
        save_checkpoint(tmp_path / "c.safetensors", bad, {})
    assert not list(tmp_path.iterdir())


class Canary:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("make", ["pickle", "npy_object", "torch_like_zip"])
def test_pickles_and_foreign_formats_are_refused_without_running_code(tmp_path, make):
    canary = tmp_path / "canary"
    path = tmp_path / "evil.safetensors"
    if make == "pickle":
        path.write_bytes(pickle.dumps(Canary(str(canary))))
    elif make == "npy_object":
        with open(path, "wb") as f:
            np.save(f, np.array([Canary(str(canary))], dtype=object), allow_pickle=True)
    else:
        import zipfile
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", pickle.dumps(Canary(str(canary))))
    with pytest.raises(CheckpointError, match="not a bpcli checkpoint"):
        load_checkpoint(path)
    assert not canary.exists()


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "not_bpcli"])
def test_damaged_files_get_a_checkpoint_error(tmp_path, damage):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, tensors(), meta())
    data = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(300))
    else:
        from safetensors.numpy import save
        path.write_bytes(save({"w": np.ones(2)}))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_a_header_length_starting_with_0x80_is_not_mistaken_for_a_pickle(tmp_path):
    path = tmp_path / "c.safetensors"
    for pad in range(300):  # vary the header length until its low byte is 0x80
        save_checkpoint(path, tensors(), meta(pad="x" * pad))
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert load_checkpoint(path).meta["pad"] == "x" * pad
