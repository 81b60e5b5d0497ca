"""`bpcli data ...` as a user runs it: exit codes, messages, files in the cache."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bpcli.cli.app import app
from bpcli.data.catalog import DATASETS

FASHION = Path("/usr/share/datasets/fashion-mnist")
runner = CliRunner()


def bpcli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "bpcli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_data_list_names_every_dataset_and_cache_state(tmp_path):
    result = runner.invoke(app, ["data", "list", "--json", "--data-dir", str(tmp_path)])
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert result.exit_code == 0 and set(rows) == set(DATASETS)
    assert rows["mnist"]["cached"] == "no" and rows["mnist-mini"]["cached"] == "-"


def test_data_info_mnist_mini():
    result = runner.invoke(app, ["data", "info", "mnist-mini", "--json"])
    info = json.loads(result.stdout)
    assert info["train"]["x_shape"] == [5000, 28, 28] and info["train"]["x_max"] == 255.0
    assert info["train"]["class_counts"] == {str(d): 500 for d in range(10)}


def test_data_info_of_a_csv(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,y\n1,2,0\n3,4,1\n")
    result = runner.invoke(app, ["data", "info", str(path), "--target", "y"])
    assert result.exit_code == 0 and "x (2, 2)" in result.stdout


def test_download_offline_says_what_to_do_and_exits_4(tmp_path):
    result = bpcli("data", "download", "mnist", "--data-dir", str(tmp_path), "--mirror", "http://127.0.0.1:9/",
                   env={"no_proxy": "*"})
    assert result.returncode == 4
    assert "http://127.0.0.1:9/train-images-idx3-ubyte.gz" in result.stderr
    assert "mnist-mini" in result.stderr and "bpcli data import" in result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.rglob("*.part"))


def test_unknown_dataset_is_a_data_error():
    result = bpcli("data", "info", "fashion")
    assert result.returncode == 4 and "unknown dataset 'fashion'" in result.stderr


@pytest.mark.skipif(not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_import_debian_fashion_mnist_then_load_it_from_the_cache(tmp_path):
    result = bpcli("data", "import", "fashion-mnist", str(FASHION), "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    info = json.loads(bpcli("data", "info", "fashion-mnist", "--json", "--data-dir", str(tmp_path)).stdout)
    assert info["train"]["x_shape"] == [60000, 28, 28] and info["test"]["x_shape"] == [10000, 28, 28]
    assert info["train"]["class_counts"]["Ankle boot"] == 6000


def test_import_checks_files_it_is_given(tmp_path, monkeypatch):
    from tests.test_data import _fake_cached_dataset
    arrays, files = _fake_cached_dataset(tmp_path / "source")
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], files=files))
    cache = tmp_path / "cache"
    result = runner.invoke(app, ["data", "import", "mnist", str(tmp_path / "source"), "--data-dir", str(cache)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (cache / "mnist").glob("*.gz")) == sorted(f.name for f in files)
    (tmp_path / "source" / files[1].name).write_bytes(b"not idx")
    result = runner.invoke(app, ["data", "import", "mnist", str(tmp_path / "source"), "--data-dir", str(tmp_path / "c2")])
    assert result.exit_code == 4 and files[1].name in result.output and not (tmp_path / "c2" / "mnist" / files[0].name).exists()


def test_import_refuses_datasets_that_are_not_imported():
    result = runner.invoke(app, ["data", "import", "xor", "."])
    assert result.exit_code == 4 and "only mnist, fashion-mnist" in result.output
