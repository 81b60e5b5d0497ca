"""benchmarks/cli_bench.py: the real CLI against its peers, on a tiny workload (issue 16's acceptance)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_benchmark_prints_the_table_from_real_runs(tmp_path):
    out = tmp_path / "cli.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cli_bench.py"), "--dataset", "mnist-mini",
                             "--workloads", "W1", "--rounds", "1", "--epochs", "3", "--no-torch", "--threads", "1",
                             "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("| workload | bare GEMMs (fastest) | bpcli / GEMMs | plain NumPy / GEMMs |")
    assert "| W1 |" in result.stdout and "| W1 (medians) |" in result.stdout
    report = json.loads(out.read_text())
    (summary,) = report["summaries"]
    assert set(summary["fastest_s"]) == {"bpcli", "gemm", "numpy"} and summary["fastest_ratio"]["gemm"] == 1.0
    (round_1,) = report["runs"]["W1"]
    bpcli = round_1["bpcli"]
    assert len(bpcli["epochs_s"]) == 2 and all(s > 0 for s in bpcli["epochs_s"])   # epochs 2 and 3, from outside
    assert len(bpcli["logged_s"]) == 3 and bpcli["rss_mb"] > 30 and bpcli["wall_s"] > sum(bpcli["epochs_s"])
    assert len(round_1["gemm"]["epochs_s"]) == len(round_1["numpy"]["epochs_s"]) == 3
    assert report["threads"] == 1 and report["dataset"] == "mnist-mini"
