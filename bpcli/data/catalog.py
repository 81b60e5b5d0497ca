"""The named datasets, and the one way to load any dataset by name or path.

    load_dataset(name_or_path) -> Dataset      raw arrays as published (uint8 images, labels)

(preprocessing.py then turns a Dataset into the float arrays a model trains on.)

Named datasets are in DATASETS: MNIST and Fashion-MNIST (downloaded once from
mirrors, verified by SHA-256 and cached), mnist-mini (ships with bpcli: 5000 real
training images and the full 10k test set) and the synthetic sets of
synthetic.py. Anything else is a path to the user's own CSV or NPZ file (tables.py).
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bpcli.data import synthetic
from bpcli.data.checksums import RemoteFile, verify
from bpcli.data.dataset import Dataset
from bpcli.data.download import fetch, resolve_cache_root, resolve_mirrors
from bpcli.data.folder_import import import_files
from bpcli.data.idx import read_idx
from bpcli.data.tables import attach_test, load_csv, load_npz
from bpcli.errors import CheckpointError, DataError, did_you_mean
from bpcli.fileio import write_file

DIGITS = tuple(str(d) for d in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@dataclass(frozen=True)
class IdxSource:
    """Four IDX files (train images, train labels, test images, test labels)."""

    description: str
    files: tuple[RemoteFile, ...]
    class_names: tuple[str, ...]
    mirrors: tuple[str, ...] = ()
    shipped: bool = False
    kind: str = "multiclass"
    image_shape: tuple[int, int] = (28, 28)


@dataclass(frozen=True)
class SyntheticSource:
    description: str
    kind: str


def _files(checksums: list[tuple[str | None, str | None]], sizes=(None,) * 4) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(name, gz, content, size) for name, (gz, content), size in zip(IDX_NAMES, checksums, sizes))


MNIST_TEST_CHECKSUMS = [
    ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
     "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
     "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
]

DATASETS: dict[str, IdxSource | SyntheticSource] = {
    "mnist": IdxSource(
        "MNIST digits, 60k train / 10k test",
        _files([("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", None),
                ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                 "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
                *MNIST_TEST_CHECKSUMS], sizes=(9912422, 28881, 1648877, 4542)),
        DIGITS,
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/",
                 "http://yann.lecun.com/exdb/mnist/"),
    ),
    "fashion-mnist": IdxSource(
        "Fashion-MNIST clothes, 60k / 10k",
        _files([(None, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
                (None, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
                (None, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
                (None, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34")],
               sizes=(26421880, 29515, 4422102, 5148)),
        FASHION_CLASSES,
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
    "mnist-mini": IdxSource(
        "5k real MNIST train, full 10k test",
        _files([("c6b100a5a2c03680cfe2ea9a6cb50df61c85444712901c9827140677184ff468",
                 "a4a9358b9ba319305e7cd69b2c7410e463401e152d7e9e60189b94a3f159d012"),
                ("86843f81a1849db34cf2a8117f2c27d94bdb2638b0633e53343f198187730267",
                 "704256e87519240fd1d7ecdf681fe209864691e252c6642aeadc21f3c4d44b41"),
                *MNIST_TEST_CHECKSUMS]),
        DIGITS,
        shipped=True,
    ),
    "xor": SyntheticSource("XOR truth table, 2 inputs", "binary"),
    "spirals": SyntheticSource("k interleaved spirals, 2 inputs", "multiclass"),
    "moons": SyntheticSource("two half circles, 2 inputs", "binary"),
    "circles": SyntheticSource("circle in a circle, 2 inputs", "binary"),
    "sine": SyntheticSource("y = sin(x) + noise, 1 input", "regression"),
}


# -- loading -----------------------------------------------------------------

def shipped_dir() -> Path:
    """bpcli/datasets/, the same folder in a source checkout and in an installed wheel."""
    return Path(__file__).resolve().parent.parent / "datasets"


def dataset_dir(name: str, data_dir: str | None = None) -> Path:
    source = DATASETS[name]
    if isinstance(source, IdxSource) and source.shipped:
        return shipped_dir() / name
    return resolve_cache_root(data_dir) / name


def load_dataset(source: str, *, data_dir: str | None = None, mirrors=None, options: dict | None = None,
                 seed: int = 0, on_progress=None, test: str | None = None, hint: str = "data.options.target"
                 ) -> Dataset:
    """A named dataset, or the user's own .csv / .npz file (with `test`, a file of test rows: data.test)."""
    options = dict(options or {})
    if source in DATASETS:
        entry = DATASETS[source]
        if isinstance(entry, SyntheticSource):
            return load_synthetic(source, seed, options)
        return load_idx_dataset(source, data_dir=data_dir, mirrors=mirrors, on_progress=on_progress)
    dataset = load_file(source, options, hint)
    return attach_test(dataset, load_file(test, options, hint), test) if test else dataset


def load_file(source: str, options: dict, hint: str = "data.options.target") -> Dataset:
    """The user's .csv (with its data.options) or .npz file."""
    suffix = Path(source).suffix.lower()
    if suffix == ".csv":
        return load_csv(source, **options, hint=hint)
    if suffix == ".npz":
        return load_npz(source)
    raise DataError(f"unknown dataset {source!r}: use one of {', '.join(DATASETS)}, or a path to a .csv or "
                    f".npz file.{did_you_mean(source, DATASETS)}")


def load_idx_dataset(name: str, *, data_dir=None, mirrors=None, on_progress=None) -> Dataset:
    entry: IdxSource = DATASETS[name]
    folder = dataset_dir(name, data_dir)
    if entry.shipped:
        paths = [_verified_shipped(folder / f.name, f) for f in entry.files]
        arrays = [read_idx(p) for p in paths]
    else:
        paths = [folder / f.name for f in entry.files]
        arrays = [load_decoded(p) for p in paths]
        if any(a is None for a in arrays):
            urls = resolve_mirrors(name, list(entry.mirrors), mirrors)
            paths = fetch(name, list(entry.files), urls, folder, on_progress=on_progress)
            arrays = [save_decoded(p, read_idx(p)) for p in paths]
    x_train, y_train, x_test, y_test = arrays
    for images, labels, image_path, label_path in ((x_train, y_train, *paths[:2]), (x_test, y_test, *paths[2:])):
        _check_idx_pair(images, labels, image_path, label_path, len(entry.class_names))
    return Dataset(name, x_train, y_train, x_test, y_test, entry.kind, entry.class_names, str(folder))


def load_decoded(gz_path: Path) -> np.ndarray | None:
    """The decoded copy of a verified IDX file, if present and its CRC-32 still matches.

    Decoding and hashing a 10 MB .gz takes most of a second; the decoded .npy
    loads in about 0.1 s. It is written only from a file that passed its SHA-256
    check, and its CRC-32 (in a sidecar) catches later corruption before use.
    """
    npy, crc_file = gz_path.with_suffix(".npy"), gz_path.with_suffix(".npy.crc32")
    try:
        data, expected = npy.read_bytes(), crc_file.read_text().strip()
    except OSError:
        return None
    if f"{zlib.crc32(data):08x}" != expected:
        return None
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError:
        return None


def save_decoded(gz_path: Path, array: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    data = buffer.getvalue()
    try:
        write_file(gz_path.with_suffix(".npy"), data, "decoded copy")
        write_file(gz_path.with_suffix(".npy.crc32"), f"{zlib.crc32(data):08x}\n", "decoded copy's CRC-32")
    except CheckpointError:  # a full disk too (DiskFullError is one)
        pass  # only a speed-up: the verified .gz stays the source of truth
    return array


def _verified_shipped(path: Path, remote: RemoteFile) -> Path:
    problem = "missing" if not path.is_file() else verify(path, remote)
    if problem:
        raise DataError(f"{path}: the shipped dataset file is {problem}; reinstall bpcli")
    return path


def _check_idx_pair(images, labels, image_path, label_path, n_classes: int) -> None:
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{image_path}: expected images (n, rows, cols) and labels (n,), "
                        f"got {images.shape} and {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{label_path}: {len(labels)} labels for {len(images)} images in {image_path}")
    if labels.size and labels.max() >= n_classes:
        raise DataError(f"{label_path}: label {int(labels.max())} out of range (0 to {n_classes - 1})")


def load_synthetic(name: str, seed: int, options: dict) -> Dataset:
    """Training and test sets from independent streams of the seed."""
    make = synthetic.GENERATORS[name]
    n_test = options.pop("n_test", None)
    try:
        x_train, y_train = make(np.random.default_rng([seed, 10]), **options)
        n = n_test or (len(x_train) if name == "xor" else max(len(x_train) // 4, 1))
        x_test, y_test = make(np.random.default_rng([seed, 11]), **{**options, "n": n})
    except (TypeError, ValueError) as error:
        raise DataError(f"dataset {name}: bad option in data.options ({error}); allowed: "
                        f"{', '.join(synthetic.options_of(name))}") from None
    return Dataset(name, x_train, y_train, x_test, y_test, synthetic.KINDS[name], None, f"generated (seed {seed})")


# -- for the `bpcli data` commands ------------------------------------------------

def import_dataset(name: str, source_dir: str, data_dir: str | None = None) -> list[Path]:
    """Check the four IDX files in source_dir (e.g. Debian's /usr/share/datasets/fashion-mnist) and cache them."""
    entry = DATASETS.get(name)
    if not isinstance(entry, IdxSource) or entry.shipped:
        importable = [n for n, e in DATASETS.items() if isinstance(e, IdxSource) and not e.shipped]
        raise DataError(f"cannot import {name!r}: only {', '.join(importable)} are imported into the cache."
                        f"{did_you_mean(name, importable)}")
    paths = import_files(name, list(entry.files), Path(source_dir), dataset_dir(name, data_dir))
    load_idx_dataset(name, data_dir=data_dir)  # checks shapes and labels, and writes the decoded copies
    return paths


def is_cached(name: str, data_dir: str | None = None) -> bool | None:
    """Whether a downloadable dataset's files are all in the cache (None: nothing to cache)."""
    entry = DATASETS[name]
    if not isinstance(entry, IdxSource) or entry.shipped:
        return None
    folder = dataset_dir(name, data_dir)
    return all((folder / f.name).is_file() for f in entry.files)
