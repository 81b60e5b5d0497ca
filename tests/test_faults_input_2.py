"""Bad input, round 2: values an outside fault campaign found ending in "internal error" (exit 1).

Each fault is injected for real (files with NaN, a declared 10**6 x 10**6 array, a 2 GiB sparse file,
/dev/zero, NUL bytes in a config, a FIFO, a real SIGINT) and must end in one clear paragraph naming the
file and the key, line, column or tensor, with the documented exit code: 2 usage or config, 4 data,
5 checkpoint or I/O. Each test also checks that nothing was lost: no run directory for a refused run,
no output file for a refused prediction, the checkpoint untouched.

Sizes a machine cannot hold, and endless files, run in a fresh interpreter under a 3 GiB address-space limit
(RLIMIT_AS), so a regression fails with a MemoryError here instead of calling the OOM killer onto the machine.
Special files are made in tmp_path (a symlink to /dev/stdout, a FIFO, a null device) so that a regression run
as root replaces only those, never /dev/null itself.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors
from typer.testing import CliRunner

from bpcli.cli.app import app
from bpcli.config.loading import parse_config_text
from bpcli.config.sections import resolved_dict
from bpcli.data.catalog import load_dataset
from bpcli.data.dataset import Dataset
from bpcli.data.preprocessing import prepare
from bpcli.data.tables import MAX_LINE
from bpcli.errors import CheckpointError, DataError
from bpcli.training.checkpoint import load_checkpoint
from bpcli.training.run import train_run

runner = CliRunner()

CONFIG = """\
model:
  layers:
    - {type: dense, units: 8, activation: relu}
    - {type: dense, units: OUTPUTS}
loss: {name: LOSS}
optimizer: {name: adam, lr: 0.01}
data: {dataset: DATASET, batch_size: 16}
training: {epochs: 1, seed: 0}
diagnostics: {enabled: false}
output: {dir: RUNS, name: run}
"""


def write_config(folder: Path, dataset, *, loss: str = "cross_entropy", outputs: int = 3, extra: str = "") -> Path:
    """A tiny config training on `dataset` (a name or a path) into folder/runs/run."""
    path = folder / "config.yaml"
    path.write_text(CONFIG.replace("DATASET", json.dumps(str(dataset))).replace("LOSS", loss)
                    .replace("OUTPUTS", str(outputs)).replace("RUNS", str(folder / "runs")) + extra)
    return path


def cli(*args):
    """bpcli in this process (Typer's runner): exit code, stdout and stderr apart."""
    return runner.invoke(app, [str(a) for a in args])


def subprocess_cli(*args, stdout=subprocess.PIPE):
    """bpcli as a user runs it, in a process of its own."""
    return subprocess.run([sys.executable, "-m", "bpcli", *map(str, args)], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=120)


# Runs bpcli commands in one fresh interpreter (Typer's runner) under an address-space limit, and reports each
# result and the interpreter's peak resident memory: one start-up for several commands that must not allocate.
ISOLATED = textwrap.dedent("""
    import json, resource, sys
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from typer.testing import CliRunner
    from bpcli.cli.app import app
    def peak_kb():   # this interpreter's own: ru_maxrss would keep the forking pytest's from before exec
        return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
    def bytes_read():   # every read() of this process so far, files and all
        return int(open("/proc/self/io").read().split("rchar: ")[1].split()[0])
    before = bytes_read()
    results = [CliRunner().invoke(app, args) for args in json.loads(sys.argv[2])]
    print(json.dumps({"results": [[r.exit_code, r.stdout, r.stderr] for r in results],
                      "usage": {"read_bytes": bytes_read() - before,
                                "peak_kb": peak_kb()}}))
""")


class Result:
    def __init__(self, exit_code: int, stdout: str, stderr: str):
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr


def isolated(*commands: list, memory: int = 3 << 30) -> tuple[list[Result], dict]:
    """([result of each command], usage) from one interpreter limited to `memory` bytes.

    usage: read_bytes, what the commands read (files, imports and all), and peak_kb, the
    interpreter's peak resident set (VmHWM: getrusage's ru_maxrss survives exec, so it would
    report the pytest process that forked this one, 400 MB late in the suite).
    """
    out = subprocess.run([sys.executable, "-c", ISOLATED, str(memory), json.dumps([[str(a) for a in c]
                                                                                   for c in commands])],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    return [Result(*r) for r in data["results"]], data["usage"]


def first_line(stderr: str) -> str:
    return stderr.splitlines()[0] if stderr else ""


def refused(result, code: int, line: str) -> None:
    """Exit `code`, `line` as the first line of stderr, no traceback, nothing on stdout."""
    stderr = result.stderr
    exit_code = getattr(result, "exit_code", getattr(result, "returncode", None))
    assert (exit_code, first_line(stderr)) == (code, line), stderr
    assert "Traceback" not in stderr and "internal error" not in stderr and result.stdout == ""


def csv_file(path: Path, header: str, rows: list[str], bom: bool = False) -> Path:
    path.write_text(("\ufeff" if bom else "") + header + "\n" + "".join(row + "\n" for row in rows))
    return path


GOOD_ROWS = [f"{(i % 7) / 7:.3f},{(i % 5) / 5:.3f},{i % 3}" for i in range(30)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A 2-8-3 network trained one epoch on 60 spiral points: its best and last checkpoints."""
    folder = tmp_path_factory.mktemp("trained")
    text = write_config(folder, "spirals").read_text().replace("batch_size: 16}", "batch_size: 16, options: {n: 60}}")
    train_run(resolved_dict(parse_config_text(text, "tiny.yaml")), "tiny.yaml")
    checkpoints = folder / "runs" / "run" / "checkpoints"
    return {"best": checkpoints / "best.safetensors", "last": checkpoints / "last.safetensors"}


# -- 8. non-finite values ------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["nan", "inf", "-inf", "NaN", " Infinity"])
def test_a_non_finite_csv_feature_is_refused_before_training_with_line_and_column(tmp_path, cell):
    rows = list(GOOD_ROWS)
    rows[2] = f"0.5,{cell},1"
    data = csv_file(tmp_path / "d.csv", "a,b,label", rows)
    result = cli("train", write_config(tmp_path, data), "-q")
    refused(result, 4, f"error: {data}:4: column 'b' holds {cell.strip()!r}, not a finite number; NaN and infinity "
                       "cannot be trained on or predicted from: fill in or drop that row")
    assert not (tmp_path / "runs").exists()


def test_a_non_finite_csv_target_is_refused_with_its_line(tmp_path):
    rows = [f"{i / 30:.3f},{i / 15:.3f}" for i in range(30)]
    rows[5] = "0.1,inf"
    data = csv_file(tmp_path / "d.csv", "x,y", rows)
    config = write_config(tmp_path, data, loss="mse", outputs=1)
    config.write_text(config.read_text().replace("batch_size: 16}", "batch_size: 16, options: {target: y}}"))
    result = cli("train", config, "-q")
    refused(result, 4, f"error: {data}:7: target column 'y' holds 'inf', not a finite number; fill in or drop "
                       "that row")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("array, bad, index", [("X", np.nan, "3, 1"), ("X", -np.inf, "0, 0"), ("y", np.inf, "7"),
                                               ("X_test", np.nan, "2, 0"), ("y_test", np.nan, "1")])
def test_a_non_finite_npz_value_is_refused_naming_the_array_and_index(tmp_path, array, bad, index):
    rng = np.random.default_rng(0)
    arrays = {"X": rng.normal(size=(40, 2)), "y": rng.normal(size=40), "X_test": rng.normal(size=(10, 2)),
              "y_test": rng.normal(size=10)}
    arrays[array][tuple(int(i) for i in index.split(", "))] = bad
    data = tmp_path / "d.npz"
    np.savez(data, **arrays)
    result = cli("train", write_config(tmp_path, data, loss="mse", outputs=1), "-q")
    refused(result, 4, f"error: {data}: {array}[{index}] is {bad}; NaN and infinity cannot be trained on or "
                       f"predicted from: fix or drop that example (1 non-finite value in {array})")
    assert not (tmp_path / "runs").exists()


def test_inf_in_a_checkpoints_optimizer_state_is_refused_naming_the_tensor(trained, tmp_path):
    original = trained["last"].read_bytes()
    tensors = load_tensors(original)
    tensors["optimizer.exp_avg_sq"] = tensors["optimizer.exp_avg_sq"].copy()
    tensors["optimizer.exp_avg_sq"][5] = np.inf
    path = tmp_path / "edited.safetensors"
    header = json.loads(original[8:8 + int.from_bytes(original[:8], "little")])
    path.write_bytes(save_tensors(tensors, metadata=header["__metadata__"]))
    message = (f"{path}: non-finite values in optimizer.exp_avg_sq: the optimizer state is damaged (a resumed run "
               "would turn every weight it touches into NaN)")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(error.value) == message
    refused(cli("eval", path), 5, f"error: {message}")


# -- 9. sizes a machine cannot hold ---------------------------------------------------------------

def test_units_1e9_is_a_float_in_yaml_1_2_and_the_schema_wants_an_integer(tmp_path):
    config = write_config(tmp_path, "spirals")
    config.write_text(config.read_text().replace("units: 8,", "units: 1e9,"))
    result = cli("train", config, "-q")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[1] == f"  {config}:3:21 model.layers.0.units: must be an integer >= 1 (got " \
                                            "1000000000.0)"


def test_units_1000000000_is_refused_before_a_weight_is_allocated(tmp_path):
    config = write_config(tmp_path, "spirals")
    config.write_text(config.read_text().replace("units: 8,", "units: 1000000000,"))
    [result], _ = isolated(["train", config, "-q"])
    lines = result.stderr.splitlines()
    assert (result.exit_code, lines[0]) == (2, f"error: {config}: 1 problem in the config:"), result.stderr
    assert lines[1].startswith(f"  {config}:3:21 model.layers.0.units: must be small enough for this machine's "
                               "memory: training this network needs at least 120.0 GB for 6000000003 parameters in "
                               "float32 (weights, gradients, adam's 2 state arrays and a scratch copy), and this "
                               "machine has ")
    assert lines[1].endswith("(got 1000000000)") and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("options, key, must_be", [
    ("{classes: 1e9}", "classes", "must be an integer >= 2 (got 1000000000.0)"),
    ("{classes: 1000000000}", "classes", "must be at most n (300): each class needs examples (got 1000000000)"),
    ("{n: 1000000000000}", "n", "must be at most "),
    ("{classes: 0}", "classes", "must be an integer >= 2 (got 0)"),
    ("{n: 0}", "n", "must be an integer >= 2 (got 0)"),
    ("{n: 4, classes: 3}", "n", "must be at least 4 x classes (12): the test set is a quarter of n (or set n_test) "
                                "(got 4)"),
    ("{clases: 3}", "clases", "must be one of the options of spirals (n, classes, noise, n_test); did you mean "
                              "'classes'? (got 3)"),
])
def test_synthetic_options_that_cannot_work_are_config_errors_at_their_line(tmp_path, options, key, must_be):
    config = write_config(tmp_path, "spirals")
    config.write_text(config.read_text().replace("batch_size: 16}", f"batch_size: 16,\n  options: {options}}}"))
    result = cli("train", config, "-q")   # n: 10**12 unchecked is an allocation refused at once, not a slow one
    lines = result.stderr.splitlines()
    assert (result.exit_code, lines[0]) == (2, f"error: {config}: 1 problem in the config:"), result.stderr
    assert lines[1].startswith(f"  {config}:8:") and f" data.options.{key}: {must_be}" in lines[1]
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("dataset, options, key, must_be", [
    ("d.csv", "{n: 5}", "n", "must be one of the options of a .csv file (target, features, categorical, missing) (got 5)"),
    ("d.csv", "{features: a}", "features", "must be a non-empty list of column names, or null for every column but "
                                           "the target (got 'a')"),
    ("d.npz", "{target: y}", "target", "must be absent: an .npz takes no options (its arrays are X, y, X_test, "
                                       "y_test) (got 'y')"),
    ("mnist-mini", "{n: 5}", "n", "must be absent: mnist-mini takes no options (got 5)"),
])
def test_options_a_dataset_does_not_take_are_config_errors(tmp_path, dataset, options, key, must_be):
    """A .csv given `n: 5` was a TypeError from load_csv (exit 1)."""
    config = write_config(tmp_path, tmp_path / dataset if "." in dataset else dataset)
    config.write_text(config.read_text().replace("batch_size: 16}", f"batch_size: 16,\n  options: {options}}}"))
    result = cli("train", config, "-q")
    assert (result.exit_code, first_line(result.stderr)) == (2, f"error: {config}: 1 problem in the config:")
    assert result.stderr.splitlines()[1].endswith(f" data.options.{key}: {must_be}"), result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_csv_label_of_1e12_is_refused_as_a_class_count(tmp_path):
    rows = list(GOOD_ROWS)
    rows[1] = "0.5,0.5,1e12"
    data = csv_file(tmp_path / "d.csv", "a,b,label", rows)
    [result], _ = isolated(["train", write_config(tmp_path, data), "-q"])
    refused(result, 4, f"error: {data}:3: class label 1e+12 is too large: labels are class indices 0 to C-1, and "
                       "bpcli takes at most 10000 classes (is this column a regression target?)")
    assert not (tmp_path / "runs").exists()


def npz_declaring(path: Path, shape: tuple, payload: int = 64) -> Path:
    """An .npz whose X.npy header declares `shape` (float64) but which holds `payload` bytes of it."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": shape})
    labels = io.BytesIO()
    np.save(labels, np.zeros(3, dtype=np.int64))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("X.npy", header.getvalue() + b"\0" * payload)
        archive.writestr("y.npy", labels.getvalue())
    return path


def test_an_npz_declaring_a_10e6_by_10e6_array_is_refused_unallocated(tmp_path):
    data = npz_declaring(tmp_path / "d.npz", (10 ** 6, 10 ** 6))
    [result], _ = isolated(["train", write_config(tmp_path, data), "-q"])
    refused(result, 4, f"error: {data}: array 'X' declares shape (1000000, 1000000) of float64 (8000.0 GB), but the "
                       "file holds 64 bytes for it: the file is damaged")
    assert not (tmp_path / "runs").exists()


def test_npz_arrays_larger_than_the_machine_are_refused_before_reading(tmp_path, monkeypatch):
    """A well-formed file on a machine with 1 MB of memory: the declared sizes are compared, nothing is read."""
    data = tmp_path / "d.npz"
    np.savez(data, X=np.zeros((1000, 100)), y=np.zeros(1000))
    monkeypatch.setattr("bpcli.data.tables.physical_memory", lambda: 10 ** 6)
    monkeypatch.setattr("numpy.lib.format.read_array", lambda *a, **k: pytest.fail("an array was read"))
    with pytest.raises(DataError) as error:
        load_dataset(str(data))
    assert str(error.value) == (f"{data}: its arrays (X (1000, 100) float64, y (1000,) float64) need 808.0 kB, more "
                                "than half of this machine's memory (1.0 MB); use a smaller dataset")


def sparse_file(path: Path, size: int = 2 << 30, start: bytes = b"") -> Path:
    with open(path, "wb") as f:
        f.write(start)
        f.truncate(size)
    return path


def test_2_gib_sparse_files_are_refused_after_bounded_reads(tmp_path, trained):
    """A CSV of NUL bytes (as data, and as inputs after a header) and a checkpoint of NUL bytes."""
    data, inputs = sparse_file(tmp_path / "d.csv"), sparse_file(tmp_path / "p.csv", start=b"a,b\n")
    checkpoint = sparse_file(tmp_path / "model.safetensors")
    (train, predict, evaluate), usage = isolated(["train", write_config(tmp_path, data), "-q"],
                                                   ["predict", trained["best"], inputs], ["eval", checkpoint])
    too_long = "a line longer than 16 MiB; this is not a CSV table (a binary or sparse file?)"
    refused(train, 4, f"error: {data}:1: {too_long}")
    refused(predict, 4, f"error: {inputs}:2: {too_long}")
    assert evaluate.exit_code == 5 and first_line(evaluate.stderr).startswith(
        f"error: {checkpoint} is not a valid checkpoint (truncated or corrupt safetensors: "), evaluate.stderr
    # 6 GiB of files: each CSV is read as far as one 16 MiB line, the checkpoint as far as its header
    assert usage["read_bytes"] < 3 * MAX_LINE + (32 << 20), usage
    assert usage["peak_kb"] < 400_000 and not (tmp_path / "runs").exists(), usage   # none was held whole


def test_dev_zero_as_a_checkpoint_or_a_csv_is_refused_unread(tmp_path, trained):
    zero_checkpoint, zero_csv = tmp_path / "zero.safetensors", tmp_path / "zero.csv"
    zero_checkpoint.symlink_to("/dev/zero")
    zero_csv.symlink_to("/dev/zero")
    config, points = write_config(tmp_path, "spirals"), csv_file(tmp_path / "p.csv", "a,b", ["1,2"])
    results, _ = isolated(["eval", zero_checkpoint], ["eval", "/dev/zero"], ["predict", zero_checkpoint, points],
                          ["train", config, "--resume", zero_checkpoint],
                          ["train", write_config(tmp_path, zero_csv), "-q"], ["predict", trained["best"], zero_csv],
                          ["data", "info", zero_csv])
    for result, path in zip(results[:4], [zero_checkpoint, "/dev/zero", zero_checkpoint, zero_checkpoint]):
        assert result.exit_code == 5 and "Traceback" not in result.stderr, result.stderr
        assert first_line(result.stderr).endswith(f"{path}: a character device, not a regular file: it cannot be a "
                                                  "checkpoint")
    for result in results[4:]:
        refused(result, 4, f"error: {zero_csv}: cannot read as CSV (a character device, not a regular file: it "
                           "cannot be a CSV file)")
    assert not (tmp_path / "runs").exists()


# -- 10. plain bad values ---------------------------------------------------------------------------

@pytest.mark.parametrize("key, line, message", [
    ("output.name", 'output: {dir: RUNS, name: "a\\0b"}', "must be a folder name without / or \\ or NUL bytes "
                                                         "(got 'a\\x00b')"),
    ("output.dir", 'output: {dir: "RUNS\\0x", name: run}', "must be a folder path without NUL bytes"),
    ("data.data_dir", 'data: {dataset: spirals, data_dir: "c\\0ache"}', "must be a folder path without NUL bytes "
                                                                       "(got 'c\\x00ache')"),
    ("data.dataset", 'data: {dataset: "d\\0.csv"}', "a path cannot hold a NUL byte (got 'd\\x00.csv')"),
])
def test_nul_bytes_in_paths_and_names_are_config_errors(tmp_path, key, line, message):
    config = write_config(tmp_path, "spirals")
    section = key.split(".")[0]
    text = "\n".join(line.replace("RUNS", str(tmp_path / "runs")) if row.startswith(section + ":") else row
                     for row in config.read_text().splitlines())
    config.write_text(text + "\n")
    result = cli("train", config, "-q")
    assert (result.exit_code, first_line(result.stderr)) == (2, f"error: {config}: 1 problem in the config:"), \
        result.stderr
    assert f" {key}: {message}" in result.stderr.splitlines()[1] and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("runs*"))


@pytest.mark.parametrize("init, message", [
    ("{name: uniform, low: 1, high: 0}", "model.layers.0.init.low: must be at most high (0) (got 1.0)"),
    ("{name: uniform, low: -1.0e+308, high: 1.0e+308}",
     "model.layers.0.init.high: must be within 1.8e+308 of low (-1e+308) (got 1e+308)"),
])
def test_uniform_init_with_an_empty_or_overflowing_range_is_a_config_error(tmp_path, init, message):
    config = write_config(tmp_path, "spirals")
    config.write_text(config.read_text().replace("units: 8,", f"units: 8, init: {init},"))
    result = cli("train", config, "-q")
    assert result.exit_code == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[1].endswith(message) and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("rows, line", [
    (["0.1,0.2,0", "0.3,0.4,5", "0.5,0.6,1"], "error: DATA:3: class label 5 is not one of the 3 classes (0 to 2)"),
    (["0.1,0.2,0", "0.3,0.4,1", "0.5,0.6,2.5"], "error: DATA:4: cross_entropy needs integer class labels; found 2.5"),
])
def test_eval_on_labels_beyond_the_models_outputs_names_the_line(trained, tmp_path, rows, line):
    data = csv_file(tmp_path / "other.csv", "x0,x1,label", rows)
    before = trained["best"].read_bytes()
    result = cli("eval", trained["best"], "--dataset", data, "--split", "train")
    refused(result, 4, line.replace("DATA", str(data)))
    assert trained["best"].read_bytes() == before


def test_text_classes_the_model_was_not_trained_on_are_refused_by_eval(tmp_path):
    folder = tmp_path / "text"
    folder.mkdir()
    rows = [f"{i / 30:.3f},{(i * 7 % 30) / 30:.3f},{('cat', 'dog')[i % 2]}" for i in range(30)]
    data = csv_file(folder / "pets.csv", "a,b,label", rows)
    train_run(resolved_dict(parse_config_text(write_config(folder, data, outputs=2).read_text(), "c.yaml")), "c.yaml")
    other = csv_file(tmp_path / "other.csv", "a,b,label", ["0.1,0.2,dog", "0.3,0.4,bird"])
    result = cli("eval", folder / "runs" / "run" / "checkpoints" / "best.safetensors", "--dataset", other,
                 "--split", "train")
    refused(result, 4, f"error: {other}: class 'bird' is not one of cat, dog")


def test_the_targets_are_checked_against_the_models_outputs_before_training():
    """prepare(outputs=...) refuses a label, a text class or a target width the model has no output for."""
    x = np.zeros((6, 2))
    numeric = Dataset("d.csv", x, np.array([0, 1, 5, 0, 1, 2]), source="d.csv", lines=np.arange(2, 8))
    with pytest.raises(DataError) as error:
        prepare(numeric, "multiclass", val_fraction=0, outputs=3)
    assert str(error.value) == ("d.csv:4: class 5 is beyond the model's 3 outputs (classes 0 to 2); the data has 6 "
                                "classes (0, 1, 2, 3, 4, ...), so the last dense layer needs units: 6")
    text = Dataset("d.csv", x, np.array(["cat", "dog", "bird"] * 2), source="d.csv", lines=np.arange(2, 8))
    with pytest.raises(DataError, match=r"^d.csv:3: class 'dog' is beyond the model's 2 outputs \(classes 0 to 1\); "
                                        r"the data has 3 classes \(bird, cat, dog\)"):
        prepare(text, "multiclass", val_fraction=0, outputs=2)
    wide = Dataset("d.npz", x, np.zeros((6, 2)), source="d.npz")
    with pytest.raises(DataError, match=r"^d.npz: the target has 2 values per example, but the model has 1 output"):
        prepare(wide, "regression", val_fraction=0, outputs=1)
    fewer = prepare(Dataset("d.csv", x, np.array([0, 1] * 3), source="d.csv"), "multiclass", val_fraction=0, outputs=4)
    assert fewer.class_names == ("0", "1", "2", "3")   # so that its checkpoint names one class per output


@pytest.mark.parametrize("labels, line", [
    ([0, 1, 5], "error: DATA:4: class 5 is beyond the model's 3 outputs"),
    (["cat", "dog", "bird", "fish"], "error: DATA:5: class 'fish' is beyond the model's 3 outputs"),
])
def test_training_on_labels_beyond_the_models_outputs_is_refused_before_training(tmp_path, labels, line):
    rows = [f"{i / 30:.3f},{(i * 7 % 30) / 30:.3f},{labels[i % len(labels)]}" for i in range(30)]
    data = csv_file(tmp_path / "d.csv", "a,b,label", rows)
    result = cli("train", write_config(tmp_path, data), "-q")
    assert (result.exit_code, "Traceback" in result.stderr) == (4, False), result.stderr
    assert first_line(result.stderr).startswith(line.replace("DATA", str(data)))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("arrays, line", [
    ({"X": np.array([["a", "b"]] * 20), "y": np.arange(20) % 3}, "array 'X' has dtype <U1; it must hold numbers "
                                                                  "(integers, floats or booleans)"),
    ({"X": np.array(3.0), "y": np.arange(20) % 3}, "array 'X' is a single value (shape ()); it needs one row per "
                                                   "example"),
    ({"X": np.zeros((20, 2)), "y": np.arange(20) % 3, "X_test": np.zeros((5, 5)), "y_test": np.arange(5) % 3},
     "X_test has shape (5, 5), but X has shape (20, 2): the test set needs the same features per example as the "
     "training set"),
    ({"X": np.zeros((20, 2)), "y": np.arange(20) % 3, "X_test": np.zeros((5, 2)), "y_test": np.zeros((5, 2))},
     "y_test has shape (5, 2), but y has shape (20,): the test set needs the same target values per example as "
     "the training set"),
])
def test_an_npz_that_would_crash_after_training_is_refused_before(tmp_path, arrays, line):
    data = tmp_path / "d.npz"
    np.savez(data, **arrays)
    refused(cli("train", write_config(tmp_path, data), "-q"), 4, f"error: {data}: {line}")
    assert not (tmp_path / "runs").exists()


def test_predict_into_a_missing_folder_writes_nothing(trained, tmp_path):
    points = csv_file(tmp_path / "p.csv", "x0,x1", ["0.1,0.2", "0.3,0.4"])
    output = tmp_path / "missing" / "preds.csv"
    refused(cli("predict", trained["best"], points, "--output", output), 5,
            f"error: cannot write predictions {output}: No such file or directory")
    assert not (tmp_path / "missing").exists() and not list(tmp_path.rglob("*.tmp"))


def test_eval_with_an_unknown_split_is_a_usage_error(trained):
    refused(cli("eval", trained["best"], "--split", "nonsense"), 2,
            "error: --split nonsense: unknown split; allowed: test, val, train, all")


# -- 11. CSV details -------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["train", "predict"])
def test_duplicate_csv_column_names_are_refused_naming_them(trained, tmp_path, command):
    data = csv_file(tmp_path / "d.csv", "x0,x1,x0,label", [r + ",0.5" for r in GOOD_ROWS])
    args = ["train", write_config(tmp_path, data), "-q"] if command == "train" else ["predict", trained["best"], data]
    refused(cli(*args), 4, f"error: {data}:1: column 'x0' appears twice in the header (columns 1 and 3); each column "
                           "needs a name of its own")
    assert not (tmp_path / "runs").exists()


def test_a_utf8_byte_order_mark_before_the_header_is_accepted(trained, tmp_path):
    rows = [f"{i % 3},{(i % 7) / 7:.3f},{(i % 5) / 5:.3f}" for i in range(30)]
    data = csv_file(tmp_path / "bom.csv", "label,x0,x1", rows, bom=True)
    result = cli("train", write_config(tmp_path, data), "-q")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "runs" / "run" / "checkpoints" / "best.safetensors").is_file()
    plain = csv_file(tmp_path / "plain.csv", "x0,x1", ["0.1,0.2", "0.3,0.4"])
    marked = csv_file(tmp_path / "marked.csv", "x0,x1", ["0.1,0.2", "0.3,0.4"], bom=True)
    expected = cli("predict", trained["best"], plain)
    assert expected.exit_code == 0 and cli("predict", trained["best"], marked).stdout == expected.stdout


@pytest.mark.parametrize("cell", ["nan", "inf"])
def test_predict_refuses_non_finite_inputs_naming_row_and_column(trained, tmp_path, cell):
    points = csv_file(tmp_path / "p.csv", "x0,x1", ["0.1,0.2", "0.3,0.4", f"{cell},0.6"])
    refused(cli("predict", trained["best"], points), 4,
            f"error: {points}:4: column 'x0' holds {cell!r}, not a finite number; NaN and infinity cannot be trained "
            "on or predicted from: fill in or drop that row")
    inputs = tmp_path / "p.npz"
    np.savez(inputs, X=np.array([[0.1, 0.2], [0.3, float(cell)]]))
    refused(cli("predict", trained["best"], inputs), 4,
            f"error: {inputs}: X[1, 1] is {float(cell)}; NaN and infinity cannot be trained on or predicted from: "
            "fix or drop that example (1 non-finite value in X)")


# -- 12. predict --output onto special files ---------------------------------------------------------

@pytest.fixture
def points(tmp_path) -> Path:
    return csv_file(tmp_path / "points.csv", "x0,x1", ["0.1,0.2", "0.3,0.4", "-0.5,0.6"])


def expected_predictions(trained, points) -> str:
    result = cli("predict", trained["best"], points)
    assert result.exit_code == 0 and result.stdout.count("\n") == 4
    return result.stdout


def test_predict_output_through_a_symlink_to_dev_stdout_writes_to_stdout(trained, points, tmp_path):
    link = tmp_path / "out.csv"
    link.symlink_to("/dev/stdout")
    result = subprocess_cli("predict", trained["best"], points, "--output", link)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected_predictions(trained, points)
    assert link.is_symlink() and os.readlink(link) == "/dev/stdout"


def test_predict_output_to_this_processs_descriptor_keeps_the_shells_redirection(trained, points, tmp_path):
    """/proc/self/fd/1 with stdout appended to a file (`>> log`): the old content stays, the predictions follow."""
    log = tmp_path / "log.csv"
    log.write_text("kept\n")
    with open(log, "a") as out:
        result = subprocess_cli("predict", trained["best"], points, "--output", "/proc/self/fd/1", stdout=out)
    assert result.returncode == 0, result.stderr
    assert log.read_text() == "kept\n" + expected_predictions(trained, points)


def test_predict_output_to_a_fifo_writes_into_it(trained, points, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    result = cli("predict", trained["best"], points, "--output", fifo)
    reader.join(timeout=30)
    assert result.exit_code == 0, result.stderr
    assert received == [expected_predictions(trained, points)] and fifo.is_fifo()


def test_predict_output_to_a_device_leaves_it_a_device(trained, points, tmp_path):
    """A null device made in tmp_path, not /dev/null: a regression (run as root) replaces only this one."""
    import stat

    device = tmp_path / "null"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD")
    result = cli("predict", trained["best"], points, "--output", device)
    assert result.exit_code == 0 and result.stderr == f"wrote 3 predictions to {device}\n", result.stderr
    assert device.is_char_device() and not list(tmp_path.glob("*.tmp"))


def test_predict_output_through_a_symlink_to_a_file_replaces_the_file_and_keeps_the_link(trained, points, tmp_path):
    target = tmp_path / "real.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    result = cli("predict", trained["best"], points, "--output", link)
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and target.read_text() == expected_predictions(trained, points)
    assert not list(tmp_path.glob("*.tmp"))


# -- 13. Ctrl-C at start-up ----------------------------------------------------------------------------

# Runs bpcli with a real SIGINT sent to itself the moment a module is first imported: the middle of
# start-up, which takes most of the first 0.1 s (typer), or of a command's own imports (numpy).
SIGINT_ON_IMPORT = textwrap.dedent("""
    import importlib.abc, os, signal, sys
    MODULE, ENTRY = sys.argv[1], sys.argv[2]
    class Interrupt(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == MODULE:
                sys.meta_path.remove(self)
                os.kill(os.getpid(), signal.SIGINT)
            return None
    sys.meta_path.insert(0, Interrupt())
    sys.argv = ["bpcli", *sys.argv[3:]]
    if ENTRY == "console":          # what the console script `bpcli` runs
        from bpcli.cli.app import main
        sys.exit(main())
    import runpy                    # python -m bpcli
    runpy.run_module("bpcli", run_name="__main__", alter_sys=True)
""")


@pytest.mark.parametrize("module, entry, args", [
    ("typer", "console", ["--help"]), ("typer", "module", ["eval", "x.safetensors"]),
    ("numpy", "console", ["eval", "x.safetensors"]),
])
def test_ctrl_c_during_start_up_is_one_line_and_exit_130(module, entry, args):
    result = subprocess.run([sys.executable, "-c", SIGINT_ON_IMPORT, module, entry, *args], capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, result.stderr, result.stdout) == (130, "interrupted (Ctrl-C)\n", "")


def test_importing_the_app_installs_no_signal_handler():
    """A program (or this test run) that imports the CLI keeps its own Ctrl-C: only main() installs one."""
    script = ("import signal; from bpcli.cli.app import app; "
              "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
    # Started with SIGINT at its default (a run in the background, as CI may be, inherits it ignored, and
    # then Python installs no handler of its own to compare with).
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert result.stdout == "True\n", result.stderr


def test_inspect_of_a_config_whose_csv_is_a_device_does_not_hang(tmp_path):
    """inspect reads only the header of a CSV, and only of a regular file: /dev/zero is refused unread."""
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    config = tmp_path / "z.yaml"
    config.write_text(f"model: {{layers: [{{type: dense, units: 3}}]}}\ndata: {{dataset: {tmp_path / 'zero.csv'}}}\n")
    result = subprocess.run([sys.executable, "-m", "bpcli", "inspect", str(config)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 4
    assert result.stderr.startswith(f"error: {tmp_path / 'zero.csv'}: cannot read as CSV (a character device, not a "
                                    "regular file")
