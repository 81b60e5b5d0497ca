"""Faults that arrive as input, injected for real: damaged or hand-edited checkpoints, pickles posing as
checkpoints, a checkpoint of another architecture, and output read by a terminal, a pipe or a program.
Each ends in a clean message and an exit code (or plain, pure output), never a traceback, a hang or
code run from a file."""

import copy
import fcntl
import json
import os
import pickle
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

from bpcli.training.checkpoint import load_checkpoint
from bpcli.config.loading import parse_config_text
from bpcli.config.sections import resolved_dict
from bpcli.errors import BpcliError, CheckpointError
from bpcli.tools.inference import evaluate_checkpoint, restore
from bpcli.training.run import train_run

TINY = """
model:
  layers:
    - {type: dense, units: UNITS, activation: relu}
    - {type: dense, units: 3}
loss: {name: cross_entropy}
optimizer: {name: adam, lr: 0.01}
data: {dataset: spirals, options: {n: 60}, batch_size: 16}
training: {epochs: EPOCHS, seed: 0}
output: {dir: RUNS, name: NAME}
"""


def tiny_text(runs: Path, name: str = "tiny", units: int = 32, epochs: int = 1) -> str:
    return (TINY.replace("UNITS", str(units)).replace("EPOCHS", str(epochs))
            .replace("RUNS", str(runs)).replace("NAME", name))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real run of a 2-32-3 network on 60 spiral points: one epoch, a few milliseconds."""
    runs = tmp_path_factory.mktemp("runs")
    train_run(resolved_dict(parse_config_text(tiny_text(runs), "tiny.yaml")), "tiny.yaml")
    return runs / "tiny"


@pytest.fixture(scope="module")
def last(run_dir) -> Path:
    return run_dir / "checkpoints" / "last.safetensors"


# -- the bytes of a checkpoint -------------------------------------------------------------------

def split_file(data: bytes) -> tuple[dict, bytes]:
    """(the safetensors JSON header, the tensor bytes after it)."""
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]), data[8 + n:]


def join_file(header: bytes, body: bytes) -> bytes:
    return len(header).to_bytes(8, "little") + header + body


def with_meta(data: bytes, meta) -> bytes:
    """The same tensors under other bpcli metadata, written as safetensors writes it."""
    return save_tensors(load_tensors(data), metadata={"bpcli": json.dumps(meta)})


class Hang(BaseException):
    """Raised by the alarm: a BaseException, so no `except Exception` in the code under test can hide it."""


@contextmanager
def time_limit(seconds: float):
    def expire(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(path: Path) -> str:
    """How far a file gets: refused by load (CheckpointError), refused later (a BpcliError), or used.

    Any other exception, or a hang, propagates and fails the test.
    """
    with time_limit(10):
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as error:
            assert str(path) in str(error)
            return "refused by load"
        try:
            restore(checkpoint)
            evaluate_checkpoint(path)
        except BpcliError:
            return "refused later"
    return "used"


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """The bytes with 1-4 of: a bit flipped, bytes overwritten (anywhere, inside the JSON header, or inside
    the tensors, where the file stays loadable), bytes inserted, the end cut off, junk appended."""
    blob = bytearray(data)
    header_end = 8 + int.from_bytes(data[:8], "little")
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "overwrite", "header", "tensors", "insert", "truncate", "append"]))
        if op == "truncate":
            del blob[draw(st.integers(0, len(blob))):]
        elif op == "append":
            blob += draw(st.binary(min_size=1, max_size=32))
        elif blob:
            low, high = {"header": (0, header_end), "tensors": (header_end, len(data))}.get(op, (0, len(blob)))
            at = draw(st.integers(min(low, len(blob) - 1), min(high, len(blob)) - 1))
            if op in ("flip", "tensors"):
                blob[at] ^= 1 << draw(st.integers(0, 7))
            elif op == "insert":
                blob[at:at] = draw(st.binary(min_size=1, max_size=8))
            else:
                new = draw(st.binary(min_size=1, max_size=8))
                blob[at:at + len(new)] = new
    return bytes(blob)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_checkpoint_bytes_load_or_raise_a_checkpoint_error(last, tmp_path_factory, data):
    """Whatever loads is then restored and evaluated, which may refuse it only with a BpcliError."""
    original = last.read_bytes()
    path = tmp_path_factory.getbasetemp() / "fuzzed.safetensors"
    path.write_bytes(data.draw(damaged(original), label="damaged bytes"))
    event(outcome(path))


def meta_paths(value, prefix=()):
    """Every key path in the metadata, except inside config.data.options: the dataset generator's options,
    which a config file can hold just the same, are the data loader's to check (data.py, not covered here:
    spirals with n: -1 is still a ValueError there)."""
    if prefix == ("config", "data", "options"):
        return
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield prefix + (key,)
        yield from meta_paths(child, prefix + (key,))


ODD_VALUES = [None, True, -1, 0, 2, 1.5, 10 ** 12, "", "x", [], [1, "a"], {}, {"a": 1}]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hand_edited_metadata_loads_or_raises_a_project_error(last, tmp_path_factory, data):
    """Valid JSON with one field deleted or given a value of another type or range."""
    original = last.read_bytes()
    meta = load_checkpoint(last).meta
    where = data.draw(st.sampled_from(sorted(meta_paths(meta), key=str)), label="key path")
    edited = copy.deepcopy(meta)
    parent = edited
    for key in where[:-1]:
        parent = parent[key]
    value = data.draw(st.sampled_from(["delete", *ODD_VALUES]), label="new value")
    if value == "delete":
        del parent[where[-1]]
    else:
        parent[where[-1]] = value
    path = tmp_path_factory.getbasetemp() / "edited.safetensors"
    path.write_bytes(with_meta(original, edited))
    event(outcome(path))


def test_the_untouched_checkpoint_is_used(last):
    assert outcome(last) == "used"


DELETE = object()


def set_key(meta: dict, dotted: str, value) -> dict:
    """A copy of `meta` with the value at `dotted` (list items by index) replaced, or deleted with DELETE."""
    meta = copy.deepcopy(meta)
    *parents, key = dotted.split(".")
    node = meta
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return meta


@pytest.mark.parametrize("key, value, message", [
    ("kind", DELETE, "kind is missing"),
    ("config", [], "config must be a mapping, not []"),
    ("config.optimizer", DELETE, "config.optimizer must be a mapping, not null"),
    ("task", "ranking", "task must be one of multiclass, binary, regression"),
    ("input_dim", 0, "input_dim must be an integer >= 1"),
    ("input_dim", True, "input_dim must be an integer >= 1, not true"),
    ("class_names", [0, 1, 2], "class_names must be a list of strings or null"),
    ("val_hash", None, "val_hash must be a string, not null"),
    ("state", "x", "state must be a mapping"),
    ("state.epoch", -1, "state.epoch must be an integer >= 0"),
    ("state.step", "4", "state.step must be an integer >= 0"),
    ("state.batch", DELETE, "state.batch is missing"),
    ("state.partial", {"loss_sum": "x"}, "state.partial must be a mapping of numbers"),
    ("state.seconds", "1 s", "state.seconds must be a number"),
    ("state.last_row", [], "state.last_row must be a mapping or null"),
    ("state.best_row", DELETE, "state.best_row is missing"),
    ("schedule", None, "schedule must be a mapping"),
    ("callbacks", {"EarlyStopping": 1}, "callbacks must be a mapping of mappings"),
    ("dropout_rng", [], "dropout_rng must be a mapping"),
    ("dropout_rng.bit_generator", "os.system", "dropout_rng.bit_generator must be one of PCG64"),
    ("dropout_rng.state", DELETE, "dropout_rng is not a valid PCG64 state"),
    ("scalars", "optimizer.step", "scalars must be a list of tensor names"),
])
def test_damaged_metadata_is_one_checkpoint_error_naming_file_and_field(last, tmp_path, key, value, message):
    path = tmp_path / "edited.safetensors"
    path.write_bytes(with_meta(last.read_bytes(), set_key(load_checkpoint(last).meta, key, value)))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(error.value).startswith(f"{path}: damaged checkpoint metadata: ")
    assert message in str(error.value)


def test_a_checkpoint_of_a_newer_format_is_refused_by_version(last, tmp_path):
    path = tmp_path / "future.safetensors"
    path.write_bytes(with_meta(last.read_bytes(), set_key(load_checkpoint(last).meta, "version", 3)))
    with pytest.raises(CheckpointError, match=r"has checkpoint format version 3; this bpcli reads versions 1, 2"):
        load_checkpoint(path)


@pytest.mark.parametrize("key, value, message", [
    ("config.model.layers", "x", "its stored config cannot be rebuilt: config.model.layers"),
    ("config.loss.name", "nope", "its stored config cannot be rebuilt: config.loss"),
    ("config.data.preprocess", 3, "its stored config cannot be rebuilt: config.data.preprocess"),
    ("task", "binary", "its task is binary, but its loss is for multiclass"),
    ("class_names", ["a", "b"], "it names 2 classes, but the model has 3 outputs"),
    ("input_dim", 3, "tensor layers.0.weight has shape (2, 32) (float32), but the model needs shape (3, 32); "
                     "the model is the architecture in its own config"),
])
def test_a_stored_config_that_does_not_fit_is_a_checkpoint_error_from_restore(last, tmp_path, key, value,
                                                                                message):
    path = tmp_path / "edited.safetensors"
    path.write_bytes(with_meta(last.read_bytes(), set_key(load_checkpoint(last).meta, key, value)))
    checkpoint = load_checkpoint(path)
    with pytest.raises(CheckpointError) as error:
        restore(checkpoint)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)
    with pytest.raises(CheckpointError):
        evaluate_checkpoint(path)


def test_a_missing_weight_is_named_with_the_shape_its_own_config_needs(last, tmp_path):
    tensors = load_tensors(last.read_bytes())
    del tensors["layers.2.bias"]
    path = tmp_path / "edited.safetensors"
    path.write_bytes(save_tensors(tensors, metadata={"bpcli": json.dumps(load_checkpoint(last).meta)}))
    with pytest.raises(CheckpointError) as error:
        restore(load_checkpoint(path))
    assert str(error.value) == (f"{path}: tensor layers.2.bias is missing; the model needs it with shape (3,); "
                                "the model is the architecture in its own config")


def test_a_multiclass_checkpoint_without_class_names_is_scored_per_output(last, tmp_path):
    path = tmp_path / "edited.safetensors"
    path.write_bytes(with_meta(last.read_bytes(), set_key(load_checkpoint(last).meta, "class_names", None)))
    result = evaluate_checkpoint(path)
    assert [row["class"] for row in result["per_class"]] == ["0", "1", "2"] and result["n"] == 15


def test_a_config_far_larger_than_the_file_is_refused_before_anything_is_allocated(last, tmp_path, monkeypatch):
    def build_model(*args, **kwargs):
        raise AssertionError("restore tried to build a model of 10**7 units")

    monkeypatch.setattr("bpcli.tools.inference.build_model", build_model)
    path = tmp_path / "edited.safetensors"
    path.write_bytes(with_meta(last.read_bytes(), set_key(load_checkpoint(last).meta, "config.model.layers.0.units",
                                                          10 ** 7)))
    with pytest.raises(CheckpointError, match=r"its config needs at least 60000003 parameters, but the file holds "
                                              r"195 layer values"):
        restore(load_checkpoint(path))


def test_a_config_larger_than_this_machine_is_refused_by_the_schema_before_anything_is_allocated(last, tmp_path,
                                                                                                 monkeypatch):
    """10**9 units: 6 * 10**9 parameters, 120 GB with Adam's state; the stored config is refused as a config."""
    monkeypatch.setattr("bpcli.tools.inference.build_model", lambda *a, **k: pytest.fail("a model was built"))
    path = tmp_path / "edited.safetensors"
    path.write_bytes(with_meta(last.read_bytes(), set_key(load_checkpoint(last).meta, "config.model.layers.0.units",
                                                          10 ** 9)))
    with pytest.raises(CheckpointError) as error:
        restore(load_checkpoint(path))
    assert str(error.value).startswith(f"{path}: its stored config cannot be rebuilt: config.model.layers.0.units: "
                                       "small enough for this machine's memory: training this network needs at least "
                                       "120.0 GB for 6000000003 parameters in float32")


def test_a_damaged_preprocess_tensor_is_a_checkpoint_error(last, tmp_path):
    tensors = load_tensors(last.read_bytes())
    tensors["preprocess.offset"] = tensors["preprocess.offset"].reshape(2, 1)  # same bytes, another shape
    path = tmp_path / "edited.safetensors"
    path.write_bytes(save_tensors(tensors, metadata=json_meta(last)))
    with pytest.raises(CheckpointError, match=r"tensor preprocess.offset has shape \(2, 1\) \(float64\); the model "
                                              r"takes 2 features, so it needs shape \(2,\)"):
        evaluate_checkpoint(path)


def json_meta(path: Path) -> dict:
    """The safetensors metadata (with the bpcli JSON in it) of a file, as written."""
    return split_file(path.read_bytes())[0]["__metadata__"]


def edit_header(data: bytes, change) -> bytes:
    header, body = split_file(data)
    return join_file(change(header), body)


def bad_bpcli(text: str):
    def change(header):
        header["__metadata__"]["bpcli"] = text
        return json.dumps(header).encode()
    return change


def bad_metadata(value):
    def change(header):
        header["__metadata__"] = value
        return json.dumps(header).encode()
    return change


def bad_tensor_entry(key: str, value):
    def change(header):
        header["layers.0.weight"][key] = value
        return json.dumps(header).encode()
    return change


@pytest.mark.parametrize("change, message", [
    (bad_bpcli("{not json"), "not a bpcli checkpoint (no bpcli metadata)"),
    (bad_bpcli("[1, 2]"), "not a bpcli checkpoint (its bpcli metadata is not a mapping)"),
    (bad_bpcli("null"), "not a bpcli checkpoint (its bpcli metadata is not a mapping)"),
    (bad_bpcli('{"format": "bpcli-checkpoint"'), "not a bpcli checkpoint (no bpcli metadata)"),
    (bad_bpcli("[" * 100_000), "not a bpcli checkpoint (no bpcli metadata)"),
    (bad_metadata("text"), "not a valid checkpoint"),
    (bad_metadata({"bpcli": 5}), "not a valid checkpoint"),
    (lambda h: json.dumps(h).encode().replace(b'"__metadata__": {', b'"__metadata__": {bpcli', 1),
     "not a valid checkpoint"),
    (bad_tensor_entry("data_offsets", [0, 10 ** 9]), "not a valid checkpoint"),
    (bad_tensor_entry("dtype", "Q99"), "not a valid checkpoint"),
    (bad_tensor_entry("shape", [3, 3]), "not a valid checkpoint"),
    (lambda h: json.dumps(h).encode() + b"garbage", "not a valid checkpoint"),
    (lambda h: b"[]", "not a valid checkpoint"),
], ids=["bpcli-not-json", "bpcli-a-list", "bpcli-null", "bpcli-cut-short", "bpcli-nested-too-deep",
        "metadata-a-string", "metadata-value-a-number", "metadata-not-json", "offsets-beyond-the-file",
        "unknown-dtype", "shape-of-other-size", "junk-after-the-header", "header-a-list"])
def test_a_damaged_header_is_a_checkpoint_error(last, tmp_path, change, message):
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(edit_header(last.read_bytes(), change))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(error.value).startswith(str(path)) and message in str(error.value)


def test_a_header_length_beyond_the_file_is_a_checkpoint_error(last, tmp_path):
    path = tmp_path / "damaged.safetensors"
    path.write_bytes((2 ** 63).to_bytes(8, "little") + last.read_bytes()[8:])
    with pytest.raises(CheckpointError, match="not a valid checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("where", ["layers.0.weight", "best.layers.2.bias", "preprocess.scale"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_written_by_another_program_are_refused(last, tmp_path, where, bad):
    tensors = load_tensors(last.read_bytes())
    tensors[where] = tensors[where].copy()
    tensors[where].flat[0] = bad
    path = tmp_path / "nan.safetensors"
    path.write_bytes(save_tensors(tensors, metadata=json_meta(last)))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(error.value) == (f"{path}: non-finite values in {where}: the weights are damaged "
                                "(bpcli never writes non-finite weights)")


# -- as a user runs it ---------------------------------------------------------------------------

COLOUR_VARIABLES = ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES")


def environment(**extra) -> dict:
    """This process's environment without anything that forces or forbids colour, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in COLOUR_VARIABLES}
    return {**env, "TERM": "xterm-256color", **extra}


def bpcli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bpcli", *map(str, args)], capture_output=True, text=True,
                          env=env or environment(), timeout=120)


class Canary:
    """Unpickling this creates a file: proof that code from the file ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def npy_object_array(path: Path, canary: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, np.array([Canary(canary)], dtype=object), allow_pickle=True)


def torch_like_zip(path: Path, canary: Path) -> None:
    """The layout of torch.save: a zip whose data.pkl torch.load would unpickle."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(Canary(canary)))
        z.writestr("archive/version", "3\n")


@pytest.mark.parametrize("make, name", [(npy_object_array, "model.npy"), (torch_like_zip, "model.pt")])
def test_code_carrying_files_are_refused_by_eval_predict_and_resume(tmp_path, make, name):
    canary = tmp_path / "canary"
    evil = tmp_path / name
    make(evil, canary)
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_text(tmp_path / "runs"))
    for args in (["eval", evil], ["predict", evil, config], ["train", config, "--resume", evil]):
        result = bpcli(*args)
        assert result.returncode == 5, result.stderr
        assert result.stderr.startswith(f"error: {evil} looks like a") and "not a bpcli checkpoint" in result.stderr
        assert "Traceback" not in result.stderr and not canary.exists()
    assert not (tmp_path / "runs").exists()


# -- predict --output ---------------------------------------------------------------------------------

@pytest.fixture
def points(tmp_path) -> Path:
    """200 spiral-like inputs (columns x0, x1): about 8 kB of predictions."""
    path = tmp_path / "points.csv"
    rows = np.random.default_rng(0).normal(size=(200, 2))
    path.write_text("x0,x1\n" + "".join(f"{a:.4f},{b:.4f}\n" for a, b in rows))
    return path


@pytest.mark.parametrize("target, reason", [("folder", "Is a directory"), ("file/preds.csv", "Not a directory")])
def test_predict_to_an_unwritable_output_names_the_path_and_the_reason(run_dir, points, tmp_path, target, reason):
    """A folder at the target, or a regular file as its parent: unwritable even for root."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("a file, not a folder")
    output = tmp_path / target
    result = bpcli("predict", run_dir / "checkpoints" / "best.safetensors", points, "--output", output)
    assert (result.returncode, result.stdout) == (5, "")
    assert result.stderr == f"error: cannot write predictions {output}: {reason}\n"
    assert (tmp_path / "folder").is_dir() and not list(tmp_path.rglob("*.tmp"))


def test_predict_to_a_full_disk_exits_6_and_leaves_no_partial_file(run_dir, points, tmp_path):
    import resource

    output = tmp_path / "preds.csv"
    result = subprocess.run([sys.executable, "-m", "bpcli", "predict", str(run_dir / "checkpoints" / "best.safetensors"),
                             str(points), "--output", str(output)], capture_output=True, text=True,
                            env=environment(), timeout=120,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000)))
    assert result.returncode == 6, result.stderr
    assert result.stderr == (f"error: disk full while writing predictions {output} (File too large); free some "
                             "space and run the command again\n")
    assert not output.exists() and not list(tmp_path.glob("*.tmp"))


@pytest.fixture(scope="module")
def run_a(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A finished run of config A (units 32), and config B: the same but units 64."""
    folder = tmp_path_factory.mktemp("arch")
    a, b = folder / "a.yaml", folder / "b.yaml"
    a.write_text(tiny_text(folder / "runs", "r"))
    b.write_text(tiny_text(folder / "runs", "r", units=64))
    train_run(resolved_dict(parse_config_text(a.read_text(), "a.yaml")), "a.yaml")
    return folder / "runs" / "r", a, b


def test_eval_of_a_checkpoint_whose_config_names_another_architecture(run_a, tmp_path):
    run, _, _ = run_a
    best = run / "checkpoints" / "best.safetensors"
    edited = tmp_path / "edited.safetensors"
    edited.write_bytes(with_meta(best.read_bytes(), set_key(load_checkpoint(best).meta,
                                                            "config.model.layers.0.units", 64)))
    result = bpcli("eval", edited)
    assert result.returncode == 5 and "Traceback" not in result.stderr
    assert result.stderr == (f"error: {edited}: tensor layers.0.weight has shape (2, 32) (float32), but the "
                             "model needs shape (2, 64); the model is the architecture in its own config\n")


def test_resume_with_another_architecture_is_refused_even_with_force(run_a):
    run, _, b = run_a
    before = (run / "config.yaml").read_text()
    changed = bpcli("train", b, "--resume", run)
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    assert "model.layers.0.units: 32 in the checkpoint, 64 now" in changed.stderr and "--force" in changed.stderr
    forced = bpcli("train", b, "--resume", run, "--force")
    assert forced.returncode == 5 and "Traceback" not in forced.stderr
    assert forced.stderr.startswith(f"error: cannot resume from {run / 'checkpoints' / 'last.safetensors'}: ")
    assert "tensor layers.0.weight has shape (2, 32) (float32), but the model needs shape (2, 64)" in forced.stderr
    assert "--force accepts a changed config, but not one whose model or optimizer cannot take" in forced.stderr
    assert (run / "config.yaml").read_text() == before  # the refused resume changed nothing


# -- terminals, pipes and --json -----------------------------------------------------------------

def run_in_pty(*args, env: dict) -> tuple[int, str]:
    """bpcli with a pseudo-terminal (120x30) as stdout and stderr, as at a real terminal: (exit code, output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    try:
        process = subprocess.Popen([sys.executable, "-m", "bpcli", *map(str, args)], stdin=subprocess.DEVNULL,
                                   stdout=slave, stderr=slave, env=env)
    finally:
        os.close(slave)
    output, deadline = bytearray(), time.monotonic() + 120
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                process.kill()
                raise AssertionError(f"bpcli {args} did not finish")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer to the terminal has closed it
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(master)
    return process.wait(timeout=30), output.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def commands(run_dir, tmp_path_factory) -> dict[str, list]:
    """What a user types, each with a fast input: list, a full gradient check, 2 epochs, an evaluation."""
    folder = tmp_path_factory.mktemp("terminal")
    config = folder / "tiny.yaml"
    config.write_text(tiny_text(folder / "runs", "", epochs=2).replace("name: }", "name: null}"))
    return {"data list": ["data", "list"], "gradcheck": ["gradcheck"], "train": ["train", config],
            "eval": ["eval", run_dir / "checkpoints" / "best.safetensors"]}


EXPECTED = {"data list": "mnist-mini", "gradcheck": "checks passed", "train": "epoch 2/2", "eval": "accuracy"}


@pytest.mark.parametrize("command", list(EXPECTED))
def test_no_color_at_a_terminal_means_no_colour_or_style_codes(commands, command):
    """NO_COLOR takes the colour (and bold) away; live bars may still move the cursor (ESC [ ... A, K, ?25l)."""
    code, output = run_in_pty(*commands[command], env=environment(NO_COLOR="1"))
    assert code == 0 and EXPECTED[command] in output, output
    assert not re.search(r"\x1b\[[0-9;]*m", output)


def test_without_no_color_a_terminal_gets_colour(commands):
    """The control: the pseudo-terminal is seen as one, so the test above is not passing by accident."""
    code, output = run_in_pty(*commands["data list"], env=environment())
    assert code == 0 and "mnist-mini" in output
    assert "\x1b[" in output


@pytest.mark.parametrize("command", list(EXPECTED))
def test_through_pipes_output_is_plain(commands, command):
    result = bpcli(*commands[command])
    assert result.returncode == 0 and EXPECTED[command] in result.stdout + result.stderr, result.stderr
    assert "\x1b" not in result.stdout and "\x1b" not in result.stderr


def test_json_output_is_pure_json_on_stdout(run_dir, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_text(tmp_path / "runs"))
    best = run_dir / "checkpoints" / "best.safetensors"
    checks = {
        ("gradcheck", "--json"): lambda d: d["passed"] is True and d["checks"] == len(d["results"]),
        ("eval", best, "--json"): lambda d: d["split"] == "test" and d["n"] == 15 and 0 <= d["accuracy"] <= 1,
        ("data", "list", "--json"): lambda d: {"mnist-mini", "spirals"} <= {row["name"] for row in d},
        ("config", "show", config, "--json"): lambda d: d["model"]["layers"][0]["units"] == 32,
    }
    for args, check in checks.items():
        result = bpcli(*args)
        assert result.returncode == 0, result.stderr
        assert check(json.loads(result.stdout)), result.stdout
        assert "\x1b" not in result.stdout + result.stderr


def test_loading_a_dataset_draws_nothing_when_not_at_a_terminal():
    """`data info` wraps loading in the download progress; with nothing to download it must add no output."""
    piped = bpcli("data", "info", "xor")
    assert piped.returncode == 0 and piped.stderr == "" and piped.stdout.startswith("xor (binary)")
    code, output = run_in_pty("data", "info", "xor", env=environment(NO_COLOR="1"))
    assert code == 0 and output.startswith("xor (binary)")


def terminal_console(stderr: bool = False):
    """A console that believes it writes to a colour terminal, whatever the test's streams are."""
    from rich.console import Console

    return Console(stderr=stderr, force_terminal=True, color_system="truecolor")


@pytest.mark.parametrize("no_color, bars", [("1", True), ("", True), (None, True)])
def test_progress_bars_at_a_terminal_whatever_no_color_says(monkeypatch, no_color, bars):
    """NO_COLOR (no-color.org) is about colour: a terminal keeps its live bars (console() drops the colour)."""
    from bpcli.cli.progress import PlainProgress, RichProgress
    from bpcli.cli import data, train

    monkeypatch.delenv("NO_COLOR", raising=False)
    if no_color is not None:
        monkeypatch.setenv("NO_COLOR", no_color)
    monkeypatch.setattr(train, "console", terminal_console)
    monkeypatch.setattr(data, "console", terminal_console)
    [progress] = train.progress_callbacks(quiet=False)
    assert isinstance(progress, RichProgress if bars else PlainProgress)
    assert data.DownloadProgress.bars().disable is not bars
