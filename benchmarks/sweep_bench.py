"""What a sweep costs beyond its training, and what parallel workers buy: the real CLI, timed from outside.

    python benchmarks/sweep_bench.py SWEEP.yaml [--out results/sweep-DATE.json]

For one sweep file (use one without a pruner, so every trial trains the same epochs however it runs):

1. `bpcli sweep SWEEP.yaml --workers 2`, then `--workers 1` (each worker: one BLAS thread), timed;
2. the same trials one after another, as a user's shell loop would run them: `bpcli train
   trials/<n>/config.yaml` for each trial of the first sweep, once with the default BLAS threads
   (all cores) and once with one BLAS thread.

Printed and written as JSON: wall times; the engine's overhead per trial, (sweep wall time - the sum
of the trials' training seconds) / trials, for each sweep; and the ratios of the 2-worker sweep to
the shell loops. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def timed(command: list[str], cwd: Path, env: dict | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return time.perf_counter() - started, result.stdout


def sweep(sweep_file: Path, workers: int, cwd: Path) -> dict:
    seconds, out = timed([sys.executable, "-m", "bpcli", "sweep", str(sweep_file), "--workers", str(workers),
                          "--json", "-q"], cwd)
    summary = json.loads(out)
    trials = summary["trials"]["requested"]
    return {"workers": workers, "wall_seconds": round(seconds, 2), "trials": trials,
            "training_seconds": summary["training_seconds"], "sweep_dir": summary["sweep_dir"],
            "overhead_per_trial": round((seconds - summary["training_seconds"]) / trials, 3)}


def shell_loop(sweep_dir: Path, cwd: Path, env: dict | None) -> float:
    """Every trial's config trained by `bpcli train`, one after another; the total wall time."""
    total = 0.0
    for trial in sorted((sweep_dir / "trials").iterdir(), key=lambda p: int(p.name)):
        seconds, _ = timed([sys.executable, "-m", "bpcli", "train", str(trial / "config.yaml"), "-q",
                            "--set", f"output.dir={cwd / 'loop'}"], cwd, env)
        total += seconds
    return round(total, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_file", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    sweep_file = args.sweep_file.resolve()
    two = sweep(sweep_file, 2, folder)
    one = sweep(sweep_file, 1, folder)
    trials_dir = folder / two["sweep_dir"]
    loop_all_cores = shell_loop(trials_dir, folder, None)
    loop_one_thread = shell_loop(trials_dir, folder, ONE_THREAD)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()} cores", "sweep": str(args.sweep_file),
        "sweep_2_workers": two, "sweep_1_worker": one,
        "shell_loop_seconds": {"default_blas_threads": loop_all_cores, "one_blas_thread": loop_one_thread},
        "ratio_2_workers_over_loop": round(two["wall_seconds"] / loop_all_cores, 3),
        "ratio_2_workers_over_loop_one_thread": round(two["wall_seconds"] / loop_one_thread, 3),
        "ratio_2_workers_over_1_worker": round(two["wall_seconds"] / one["wall_seconds"], 3),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
