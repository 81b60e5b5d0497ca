"""bpcli time and the benchmark script keep working (no timing assertions: figures live in README)."""

import importlib.util
import re
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from bpcli.nn.model import build_model
from bpcli.tools.timing import BareGemms, gemm_sizes

ROOT = Path(__file__).resolve().parent.parent


def test_bare_gemms_cover_every_batch_and_layer():
    bare = BareGemms([6, 5, 3], batch=4, n_train=10)
    assert bare.batches == [4, 4, 2] and [w.shape for w in bare.weights] == [(6, 5), (5, 3)]
    assert bare.epoch() > 0
    acts, deltas, dws = bare.buffers[2]
    assert np.allclose(dws[0], acts[0].T @ deltas[1]) and np.allclose(acts[1], acts[0] @ bare.weights[0])


def test_the_gemms_are_those_of_the_weight_matrices():
    model = build_model([{"type": "dropout"}, {"type": "dense", "units": 8, "activation": "relu"}, {"type": "batchnorm"},
                         {"type": "dense", "units": 4}, {"type": "tanh"}, {"type": "dense", "units": 2}], 5)
    assert gemm_sizes(model) == [5, 8, 4, 2]


def test_bpcli_time_reports_every_layer_and_the_gemm_ratio():
    result = subprocess.run([sys.executable, "-m", "bpcli", "time", str(ROOT / "configs" / "quickstart.yaml"),
                             "--synthetic", "--repeats", "3", "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [row["type"] for row in report["layers"]] == ["dropout", "dense", "relu", "dropout", "dense", "relu",
                                                        "dropout", "dense"]
    assert report["layers"][1]["output"] == [64, 512] and report["batches_per_epoch"] == 71
    assert report["ratio"] > 0 and report["samples_per_second"] > 0


def test_benchmark_script_runs_a_tiny_workload(tmp_path):
    out = tmp_path / "bench.json"
    with_torch = importlib.util.find_spec("torch") is not None  # the PyTorch peer is optional
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--random", "--samples", "2000",
                             "--rounds", "1", "--workloads", "W1", "W2", "--json", str(out), "--out", str(tmp_path),
                             "--diagnostics-ab", "1", *(["--torch"] if with_torch else [])],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert [r["workload"] for r in report["results"]] == ["W1", "W2"]
    assert all(r["bpcli_s"] > 0 and r["gemm_s"] > 0 and r["ratio"] > 0 for r in report["results"])
    assert report["peak_memory_mb"] > 0 and "W1: bpcli" in result.stdout
    assert all(0 < r["diagnostics_share"] < 1 and r["diagnostics_ab_ratio"] > 0 for r in report["results"])
    if with_torch:  # one PyTorch epoch per round, interleaved with bpcli's
        assert all(len(r["torch_all_s"]) == len(r["bpcli_all_s"]) == 2 and r["bpcli_over_torch"] > 0
                   for r in report["results"])


def test_bpcli_time_shows_the_spread_of_the_repeats():
    """min, median and max of the repeats, so a busy machine shows (issue 14)."""
    from typer.testing import CliRunner

    from bpcli.cli.app import app

    report = json.loads(CliRunner().invoke(app, ["time", "xor", "--repeats", "5", "--json"]).stdout)
    spread = report["batch_spread_ms"]
    assert spread["min"] <= spread["median"] == report["batch_ms"] <= spread["max"] and report["repeats"] == 5
    layer = report["layers"][0]
    assert layer["forward_spread_ms"]["min"] <= layer["forward_ms"] <= layer["forward_spread_ms"]["max"]
    text = CliRunner().invoke(app, ["time", "xor", "--repeats", "5"]).stdout
    assert "(median, min-max of 5 repeats)" in text
    assert re.search(r"whole batch \(forward, loss, backward, update\): [\d.]+ \([\d.]+-[\d.]+\) ms", text)
