"""Small runs, where start-up and per-epoch bookkeeping dominate: wall time as a user sees it.

    python benchmarks/small_runs.py [--repeats 5] [--json results/small-runs-DATE.json]

Times, each in a process of its own and interleaved round by round:
  help   `bpcli --help`
  xor    `bpcli train configs/xor.yaml --quiet` (500 epochs of 4 rows; issue 16's target: <= 0.8 s)
  csv    `bpcli train csv.yaml --quiet --json`: 200 epochs on a 500-row CSV (8 features, 32 hidden
         units, batch 32, Adam); its target: wall time within 0.6 s of the training time the summary
         reports (`seconds`).
Prints the fastest and the median of each; the CSV row also shows its training seconds and the
overhead (wall - training). The CSV is generated (seeded) into a temporary folder.

Start-up depends on whether bpcli's modules have cached bytecode (.pyc): `pip install .` writes it,
and so does the first run of a checkout, unless PYTHONDONTWRITEBYTECODE is set (as on our
development machines), when every run compiles bpcli's ~100 modules again (~0.3 s). The script
says which it measured; `python -m compileall bpcli` caches it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

CSV_CONFIG = """\
model:
  layers:
    - {type: dense, units: 32, activation: relu}
    - {type: dense, units: 2}
optimizer: {name: adam, lr: 0.001}
data:
  dataset: rows.csv
  options: {target: label}
  batch_size: 32
training: {epochs: 200, seed: 0}
output: {dir: runs}
"""


def write_csv(folder: Path) -> Path:
    """500 rows of 8 features and a binary label that depends on them (seeded)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8))
    label = (x @ rng.normal(size=8) + 0.3 * rng.normal(size=500) > 0).astype(int)
    lines = [",".join([f"f{i}" for i in range(8)] + ["label"])]
    lines += [",".join([f"{v:.6f}" for v in row] + [str(y)]) for row, y in zip(x, label)]
    (folder / "rows.csv").write_text("\n".join(lines) + "\n")
    (folder / "csv.yaml").write_text(CSV_CONFIG)
    return folder / "csv.yaml"


def cached_bytecode() -> str:
    """How many of the bpcli modules that the runs import have a .pyc that Python will use."""
    import importlib.util

    import bpcli

    sources = sorted(Path(bpcli.__file__).parent.rglob("*.py"))
    cached = sum(Path(importlib.util.cache_from_source(str(s))).exists() for s in sources)
    return f"{cached} of {len(sources)} bpcli modules have cached bytecode ({Path(bpcli.__file__).parent})"


def timed(args: list[str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bpcli", *args], cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bpcli {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return wall, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write every time to this JSON file")
    options = parser.parse_args()
    times: dict[str, list[float]] = {"help": [], "xor": [], "csv": [], "csv_training": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = write_csv(folder)
        for _ in range(options.repeats):
            times["help"].append(timed(["--help"], folder)[0])
            times["xor"].append(timed(["train", str(ROOT / "configs" / "xor.yaml"), "--quiet",
                                       "--set", f"output.dir={folder / 'runs'}"], folder)[0])
            wall, out = timed(["train", str(config), "--quiet", "--json"], folder)
            times["csv"].append(wall)
            times["csv_training"].append(json.loads(out)["seconds"])
    print(cached_bytecode())
    print(f"{'run':<28} {'fastest':>8} {'median':>8}")
    for name, label in [("help", "bpcli --help"), ("xor", "train xor.yaml (500 epochs)"),
                        ("csv", "train 500-row CSV (200 ep.)"), ("csv_training", "  its training seconds")]:
        print(f"{label:<28} {min(times[name]):7.2f}s {statistics.median(times[name]):7.2f}s")
    overhead = [w - t for w, t in zip(times["csv"], times["csv_training"])]
    print(f"{'  CSV wall - training':<28} {min(overhead):7.2f}s {statistics.median(overhead):7.2f}s")
    if options.json:
        options.json.write_text(json.dumps(times, indent=1) + "\n")


if __name__ == "__main__":
    main()
