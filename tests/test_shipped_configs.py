"""The shipped configs are package data: listed, copied out, and trained by name from any folder."""

import subprocess
import sys
from pathlib import Path

import pytest

from bpcli.config.shipped import SHIPPED_DIR, find_shipped, shipped_configs

ROOT = Path(__file__).resolve().parent.parent


def bpcli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "bpcli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_the_shipped_configs_are_the_checkouts_configs():
    assert SHIPPED_DIR == (ROOT / "configs").resolve() == (ROOT / "bpcli" / "configs").resolve()
    assert {"quickstart", "xor", "optimizers/adam"} <= set(shipped_configs())


@pytest.mark.parametrize("name", ["quickstart", "quickstart.yaml", "configs/quickstart.yaml", "./configs/quickstart.yaml"])
def test_a_shipped_config_is_found_by_name_or_by_its_checkout_path(name):
    assert find_shipped(name) == SHIPPED_DIR / "quickstart.yaml"


def test_list_names_every_shipped_config_with_its_header(tmp_path):
    result = bpcli("config", "list", cwd=tmp_path)
    assert result.returncode == 0
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert list(lines) == list(shipped_configs())
    assert lines["xor"].strip() == "XOR: the smallest problem a single layer cannot solve."


def test_new_copies_a_config_with_its_comments_and_never_replaces_a_file(tmp_path):
    assert bpcli("config", "new", "xor", cwd=tmp_path).returncode == 0
    assert (tmp_path / "xor.yaml").read_bytes() == (SHIPPED_DIR / "xor.yaml").read_bytes()
    (tmp_path / "mine.yaml").write_text("my own\n")
    refused = bpcli("config", "new", "xor", "-o", "mine.yaml", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr == "error: mine.yaml already exists; choose another name with --output (nothing was written)\n"
    assert (tmp_path / "mine.yaml").read_text() == "my own\n"
    unknown = bpcli("config", "new", "xorr", cwd=tmp_path)
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: no shipped config named 'xorr'; they are: ")


def test_a_shipped_config_trains_by_name_in_an_empty_folder(tmp_path):
    import json

    for name, run in (("xor", "by-name"), ("configs/xor.yaml", "by-path")):
        result = bpcli("train", name, "-q", "--set", "training.epochs=5", "--set", f"output.name={run}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert json.loads((tmp_path / "runs" / run / "summary.json").read_text())["epochs_run"] == 5
    assert not (tmp_path / "configs").exists()


def test_a_name_that_is_neither_a_file_nor_a_shipped_config(tmp_path):
    result = bpcli("train", "nope.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: nope.yaml: no such config file, and no shipped config of that name "
                                    "(bpcli config list shows them: classic, ")


def test_the_shipped_sweeps_are_in_configs_sweeps_but_not_training_configs():
    from bpcli.config.shipped import SWEEPS_DIR
    from bpcli.sweep.spec import examples

    assert examples()["quickstart-lr"] == SWEEPS_DIR / "quickstart-lr.yaml" == SHIPPED_DIR / "sweeps" / "quickstart-lr.yaml"
    assert not any(name.startswith("sweeps/") for name in shipped_configs())
    assert find_shipped("sweeps/quickstart-lr") is None
