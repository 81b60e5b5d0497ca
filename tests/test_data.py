"""Datasets: the shipped mnist-mini, synthetic sets, the user's CSV/NPZ, IDX checks, preprocessing, splits."""

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from bpcli.data.catalog import DATASETS, load_dataset, load_decoded, load_idx_dataset, shipped_dir
from bpcli.errors import DataError
from bpcli.data.idx import read_idx
from bpcli.data.preprocessing import Preprocessor, class_labels, indices_hash, prepare, split_validation
from tests.idx_files import encode_idx, write_idx_gz

MNIST_TEST_IMAGES_SHA256 = "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"


# -- mnist-mini ------------------------------------------------------------------

def test_mnist_mini_ships_in_the_repository_with_the_official_test_set():
    folder = Path(__file__).resolve().parent.parent / "bpcli" / "datasets" / "mnist-mini"
    assert shipped_dir() / "mnist-mini" == folder
    digest = hashlib.sha256((folder / "t10k-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    assert digest == MNIST_TEST_IMAGES_SHA256


def test_mnist_mini_shapes_and_label_counts():
    data = load_dataset("mnist-mini")
    assert data.x_train.shape == (5000, 28, 28) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (10000, 28, 28) and data.y_test.shape == (10000,)
    assert np.bincount(data.y_train).tolist() == [500] * 10
    assert np.bincount(data.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert data.class_names == tuple("0123456789") and data.kind == "multiclass"


def test_a_corrupted_shipped_file_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "mnist-mini"
    folder.mkdir()
    for f in (shipped_dir() / "mnist-mini").glob("*.gz"):
        (folder / f.name).write_bytes(f.read_bytes())
    raw = bytearray((folder / "train-labels-idx1-ubyte.gz").read_bytes())
    raw[-9] ^= 0xFF
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(bytes(raw))
    monkeypatch.setattr("bpcli.data.catalog.shipped_dir", lambda: tmp_path)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz.*reinstall"):
        load_dataset("mnist-mini")


# -- named datasets from the cache -------------------------------------------------

def _fake_cached_dataset(folder: Path, n=20, label_max=9):
    """Writes the four IDX files of a tiny MNIST-like set and returns the RemoteFiles that verify them."""
    from bpcli.data.checksums import RemoteFile
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, label_max + 1, n, dtype=np.uint8)] * 2
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, array in zip(("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"), arrays):
        write_idx_gz(folder / name, array)
        files.append(RemoteFile(name, content_sha256=hashlib.sha256(encode_idx(array)).hexdigest()))
    return arrays, tuple(files)


def test_cached_dataset_loads_without_network_and_keeps_a_decoded_copy(tmp_path, monkeypatch):
    import dataclasses
    arrays, files = _fake_cached_dataset(tmp_path / "mnist")
    entry = dataclasses.replace(DATASETS["mnist"], files=files, mirrors=("http://127.0.0.1:9/",))
    monkeypatch.setitem(DATASETS, "mnist", entry)
    data = load_dataset("mnist", data_dir=str(tmp_path))
    assert np.array_equal(data.x_train, arrays[0]) and np.array_equal(data.y_test, arrays[3])
    decoded = tmp_path / "mnist" / "train-images-idx3-ubyte.npy"
    assert decoded.is_file() and np.array_equal(load_decoded(tmp_path / "mnist" / "train-images-idx3-ubyte.gz"),
                                                arrays[0])
    # a decoded copy corrupted later is not used: it is rebuilt from the verified .gz
    raw = bytearray(decoded.read_bytes())
    raw[-1] ^= 0xFF
    decoded.write_bytes(bytes(raw))
    assert load_decoded(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") is None
    assert np.array_equal(load_dataset("mnist", data_dir=str(tmp_path)).x_train, arrays[0])


def test_a_decoded_copy_that_cannot_be_written_is_skipped(tmp_path, monkeypatch):
    """The .npy is only a speed-up: a failed write (here a folder in its place) still loads the verified .gz."""
    import dataclasses
    arrays, files = _fake_cached_dataset(tmp_path / "mnist")
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], files=files))
    (tmp_path / "mnist" / "train-images-idx3-ubyte.npy").mkdir()
    data = load_idx_dataset("mnist", data_dir=str(tmp_path))
    assert np.array_equal(data.x_train, arrays[0])
    assert not (tmp_path / "mnist" / "train-images-idx3-ubyte.npy.crc32").exists()
    assert (tmp_path / "mnist" / "train-labels-idx1-ubyte.npy.crc32").is_file()
    assert not list((tmp_path / "mnist").glob("*.tmp"))


def test_labels_out_of_range_are_reported_by_file(tmp_path, monkeypatch):
    import dataclasses
    _, files = _fake_cached_dataset(tmp_path / "mnist", label_max=12)
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], files=files))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: label 1[0-2] out of range \(0 to 9\)"):
        load_idx_dataset("mnist", data_dir=str(tmp_path))


def test_unknown_dataset_suggests_a_name():
    with pytest.raises(DataError, match="Did you mean 'mnist-mini'"):
        load_dataset("mnist-mni")


# -- IDX ------------------------------------------------------------------------

@pytest.mark.parametrize("mutate, message", [
    (lambda b: b"\x00\x00\x07\x03" + b[4:], "bad magic number"),
    (lambda b: b[:-10], "truncated"),
    (lambda b: b + b"\x00", "longer than its header says"),
    (lambda b: b"", "bad magic number"),
])
def test_malformed_idx_is_reported_by_name(tmp_path, mutate, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(mutate(encode_idx(np.zeros((3, 4, 4), dtype=np.uint8))))
    with pytest.raises(DataError, match=f"bad-idx3-ubyte: .*{message}"):
        read_idx(path)


def test_bad_gzip_crc_is_reported_by_name(tmp_path):
    data = bytearray(gzip.compress(encode_idx(np.arange(50, dtype=np.uint8)), mtime=0))
    data[-8] ^= 0xFF  # the CRC-32 field of the gzip trailer
    path = tmp_path / "labels.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="labels.gz: corrupt gzip data"):
        read_idx(path)


def test_idx_round_trip_raw_and_gz(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    (tmp_path / "raw").write_bytes(encode_idx(array))
    write_idx_gz(tmp_path / "a.gz", array)
    assert np.array_equal(read_idx(tmp_path / "raw"), array) and np.array_equal(read_idx(tmp_path / "a.gz"), array)
    assert (tmp_path / "a.gz").read_bytes() == (write_idx_gz(tmp_path / "b.gz", array) or (tmp_path / "b.gz").read_bytes())


# -- synthetic ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["xor", "spirals", "moons", "circles", "sine"])
def test_synthetic_sets_are_reproducible_from_the_seed(name):
    a, b, c = load_dataset(name, seed=1), load_dataset(name, seed=1), load_dataset(name, seed=2)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert name == "xor" or not np.array_equal(a.x_train, c.x_train)
    assert a.x_test is not None and len(a.x_test) > 0 and a.kind == DATASETS[name].kind


def test_xor_is_the_truth_table():
    data = load_dataset("xor")
    assert data.x_train.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]] and data.y_train.ravel().tolist() == [0, 1, 1, 0]


def test_spirals_have_k_balanced_classes():
    data = load_dataset("spirals", options={"n": 400, "classes": 4})
    assert np.bincount(data.y_train).tolist() == [100] * 4 and data.x_train.shape == (400, 2)


def test_bad_synthetic_option_is_a_data_error():
    with pytest.raises(DataError, match="spirals: bad option in data.options .*allowed: n, classes, noise, n_test"):
        load_dataset("spirals", options={"arms": 3})


# -- the user's CSV and NPZ ------------------------------------------------------------

def test_csv_with_named_target_and_text_classes(tmp_path):
    path = tmp_path / "iris.csv"
    path.write_text("a,b,species\n1,2,cat\n3,4,dog\n5,6,cat\n")
    data = load_dataset(str(path), options={"target": "species"})
    assert data.x_train.tolist() == [[1, 2], [3, 4], [5, 6]]
    labels, names = class_labels(data.y_train, "iris.csv")
    assert labels.tolist() == [0, 1, 0] and names == ("cat", "dog")


def test_csv_feature_list(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,c,y\n1,2,3,0.5\n4,5,6,1.5\n")
    data = load_dataset(str(path), options={"target": "y", "features": ["c", "a"]})
    assert data.x_train.tolist() == [[3, 1], [6, 4]] and data.y_train.tolist() == [0.5, 1.5]


@pytest.mark.parametrize("text, options, message", [
    ("a,b\n1,2\n", {"target": "label"}, "no target column 'label'"),
    ("a,label\n1,2\n3\n", {}, r"d.csv:3: 1 values, but the header has 2"),
    ("a,label\n1,2\nx,3\n", {}, r"d.csv:3: column 'a' holds 'x'"),
    ("", {}, "header row"),
    ("a,label\n1,2\n", {"features": ["z"]}, "feature columns not found: z"),
])
def test_malformed_csv_is_reported_by_file_and_line(tmp_path, text, options, message):
    path = tmp_path / "d.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load_dataset(str(path), options=options)


def test_npz_with_test_arrays(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.ones((4, 3)), y=np.arange(4), X_test=np.zeros((2, 3)), y_test=np.arange(2))
    data = load_dataset(str(path))
    assert data.x_train.shape == (4, 3) and data.y_test.tolist() == [0, 1]


def test_npz_with_an_object_array_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, X=np.array([{"a": 1}], dtype=object), y=np.arange(1))
    with pytest.raises(DataError, match="without pickle"):
        load_dataset(str(path))


def test_npz_missing_arrays(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, features=np.ones((2, 2)))
    with pytest.raises(DataError, match="needs arrays 'X' and 'y'.*features"):
        load_dataset(str(path))


# -- preprocessing and the validation split --------------------------------------------

def test_split_is_stratified_reproducible_and_disjoint():
    y = np.repeat(np.arange(10), 50)
    train, val = split_validation(y, len(y), 0.2, seed=3)
    assert len(val) == 100 and np.bincount(y[val]).tolist() == [10] * 10
    assert not set(train) & set(val) and len(train) + len(val) == 500
    again, _ = split_validation(y, len(y), 0.2, seed=3)
    other = split_validation(y, len(y), 0.2, seed=4)[1]
    assert np.array_equal(train, again) and indices_hash(val) != indices_hash(other)


def test_prepare_mnist_mini_scales_to_unit_range_and_records_the_split():
    prepared = prepare(load_dataset("mnist-mini"), "multiclass", val_fraction=0.1, seed=0)
    assert prepared.x_train.shape == (4500, 784) and prepared.x_val.shape == (500, 784)
    x_train = np.asarray(prepared.x_train)   # images are kept as bytes and scaled as they are read (ScaledRows)
    assert x_train.dtype == np.float32 and x_train.max() == 1.0 and x_train.min() == 0.0
    assert prepared.x_test.shape == (10000, 784) and prepared.y_test.dtype == np.int64
    assert len(prepared.val_hash) == 16 and prepared.info == {"n_train": 4500, "n_val": 500, "n_test": 10000}


def test_standardize_uses_training_statistics_only():
    x = np.array([[0.0], [2.0], [4.0], [100.0]])
    pre = Preprocessor("standardize").fit(x[:3])
    np.testing.assert_allclose(pre.transform(x[:3], "float64").ravel(), [-1.2247449, 0, 1.2247449], rtol=1e-6)
    assert pre.transform(x[3:], "float64")[0, 0] == pytest.approx((100 - 2) / np.std([0, 2, 4]))


def test_min_max_scaling_and_constant_features():
    pre = Preprocessor("scale").fit(np.array([[1.0, 5.0], [3.0, 5.0]]))
    np.testing.assert_allclose(pre.transform(np.array([[2.0, 5.0]]), "float64"), [[0.5, 0.0]])


def test_prepare_binary_and_regression_targets():
    binary = prepare(load_dataset("moons"), "binary", val_fraction=0.2)
    assert binary.y_train.shape[1] == 1 and set(np.unique(binary.y_train)) == {0.0, 1.0}
    regression = prepare(load_dataset("sine"), "regression", val_fraction=0.0)
    assert regression.x_val is None and regression.y_train.dtype == np.float32


def test_wrong_targets_for_the_loss_are_data_errors():
    with pytest.raises(DataError, match="binary_cross_entropy needs targets 0 or 1"):
        prepare(load_dataset("sine"), "binary")
    with pytest.raises(DataError, match="integer class labels"):
        prepare(load_dataset("sine"), "multiclass")


def test_a_negative_synthetic_size_is_a_data_error():
    with pytest.raises(DataError, match="spirals: bad option in data.options"):
        load_dataset("spirals", options={"n": -5})


@pytest.mark.parametrize("name, options, message", [
    ("spirals", {"classes": 0}, "classes must be an integer >= 2 (got 0)"),
    ("spirals", {"n": 0}, "n must be an integer >= 2 (got 0)"),
    ("spirals", {"n": 2, "classes": 3}, "classes must be at most n (2): each class needs examples (got 3)"),
    ("circles", {"factor": 1.5}, "factor must be a number in (0, 1), the inner circle's radius (got 1.5)"),
    ("moons", {"noise": float("nan")}, "noise must be a finite number (got nan)"),
])
def test_a_generator_checks_its_own_options(name, options, message):
    """Without the config's check (a program calling load_dataset), a bad size is still a DataError, not a crash."""
    with pytest.raises(DataError) as error:
        load_dataset(name, options=options)
    assert str(error.value).startswith(f"dataset {name}: bad option in data.options ({message}); allowed: ")
