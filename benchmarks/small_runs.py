"""Small runs, where start-up and per-epoch bookkeeping dominate: wall time as a user sees it.

    python benchmarks/small_runs.py [--repeats 5] [--json results/small-runs-DATE.json]
    python benchmarks/small_runs.py --trees ../before . # two checkouts, interleaved run by run

Times, each in a process of its own and interleaved round by round:
  help   `bpcli --help`
  xor    `bpcli train configs/xor.yaml --quiet` (500 epochs of 4 rows; issue 16's target: <= 0.8 s)
  csv    `bpcli train csv.yaml --quiet --json`: 200 epochs on a 500-row CSV (8 features, 32 hidden
         units, batch 32, Adam); its target: wall time within 0.6 s of the training time the summary
         reports (`seconds`).
Prints the fastest and the median of each; the CSV row also shows its training seconds and the
overhead (wall - training). The CSV is generated (seeded) into a temporary folder. With --trees,
each run is made with each checkout's bpcli in turn (PYTHONPATH), so a change is measured against
the code before it in the same minutes of this VM's changing speed.

Start-up depends on whether bpcli's modules have cached bytecode (.pyc): `pip install .` writes it,
and so does the first run of a checkout, unless PYTHONDONTWRITEBYTECODE is set (as on our
development machines), when every run compiles bpcli's ~100 modules again (~0.3 s). The script
says which it measured; `python -m compileall bpcli` caches it.
"""

from __future__ import annotations

import argparse
import json
import os
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


def cached_bytecode(tree: Path | None) -> str:
    """How many of the bpcli modules that the runs import have a .pyc that Python will use."""
    import importlib.util

    if tree is None:
        import bpcli

        package = Path(bpcli.__file__).parent
    else:
        package = tree / "bpcli"
    sources = sorted(package.rglob("*.py"))
    cached = sum(Path(importlib.util.cache_from_source(str(s))).exists() for s in sources)
    return f"{cached} of {len(sources)} bpcli modules have cached bytecode ({package})"


def timed(args: list[str], cwd: Path, tree: Path | None) -> tuple[float, str]:
    env = dict(os.environ, **({"PYTHONPATH": str(tree)} if tree else {}))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bpcli", *args], cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bpcli {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return wall, done.stdout


def one_round(times: dict, folder: Path, config: Path, tree: Path | None) -> None:
    times["help"].append(timed(["--help"], folder, tree)[0])
    times["xor"].append(timed(["train", str(ROOT / "configs" / "xor.yaml"), "--quiet",
                               "--set", f"output.dir={folder / 'runs'}"], folder, tree)[0])
    wall, out = timed(["train", str(config), "--quiet", "--json"], folder, tree)
    times["csv"].append(wall)
    times["csv_training"].append(json.loads(out)["seconds"])


def report(times: dict) -> None:
    print(f"{'run':<28} {'fastest':>8} {'median':>8}")
    for name, label in [("help", "bpcli --help"), ("xor", "train xor.yaml (500 epochs)"),
                        ("csv", "train 500-row CSV (200 ep.)"), ("csv_training", "  its training seconds")]:
        print(f"{label:<28} {min(times[name]):7.2f}s {statistics.median(times[name]):7.2f}s")
    overhead = [w - t for w, t in zip(times["csv"], times["csv_training"])]
    print(f"{'  CSV wall - training':<28} {min(overhead):7.2f}s {statistics.median(overhead):7.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trees", type=Path, nargs="+", help="checkouts to compare (default: the bpcli imported)")
    parser.add_argument("--json", type=Path, help="also write every time to this JSON file")
    options = parser.parse_args()
    trees = [t.resolve() for t in options.trees] if options.trees else [None]
    times = {str(t): {"help": [], "xor": [], "csv": [], "csv_training": []} for t in trees}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = write_csv(folder)
        for _ in range(options.repeats):
            for tree in trees:
                one_round(times[str(tree)], folder, config, tree)
    for tree in trees:
        print(cached_bytecode(tree))
        report(times[str(tree)])
    if options.json:
        options.json.write_text(json.dumps(times if options.trees else times["None"], indent=1) + "\n")


if __name__ == "__main__":
    main()
