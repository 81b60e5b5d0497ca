"""Epoch time of bpcli against the bare matrix multiplies of the same epoch, in one process.

    python benchmarks/bench.py                 # W1, W2, W3 on Fashion-MNIST (or random data of its shape)
    python benchmarks/bench.py --torch         # also a plain PyTorch loop, interleaved too, when torch is installed
    python benchmarks/bench.py --rounds 3 --workloads W1 --json out.json

Each workload trains through bpcli's own code (train_run: progress bar, metric
logs, checkpoints and per-epoch validation on, as by default). After every
bpcli epoch the script times one epoch of bare GEMMs with the same shapes and
batch count (forward x @ W, backward a.T @ dz and dz @ W.T, into preallocated
outputs, no first-layer dx since no trainer needs it), so both are measured in
interleaved rounds under the same conditions; with --torch, one epoch of a
plain PyTorch loop joins each round. The first round is a warm-up.
Reported: median seconds per epoch of each, their ratios (and the medians of
the ratios of each interleaved pair, steadier on a noisy machine), the share of
the epoch spent in the layer diagnostics' hooks, and peak memory.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bpcli.cli.progress import RichProgress
from bpcli.training.callbacks import Callback
from bpcli.training.diagnostics import LayerDiagnostics
from bpcli.config.loading import parse_config_text
from bpcli.config.sections import resolved_dict
from bpcli.data.catalog import load_dataset
from bpcli.tools.timing import BareGemms

WORKLOADS = {
    "W1": {"hidden": [256, 128], "batch": 128, "optimizer": "{name: sgd, lr: 0.01, momentum: 0.9}"},
    "W2": {"hidden": [256, 128], "batch": 128, "optimizer": "{name: adam, lr: 0.001}"},
    "W3": {"hidden": [1024, 1024], "batch": 256, "optimizer": "{name: sgd, lr: 0.01, momentum: 0.9}"},
}
FASHION_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)


def workload_config(name: str, dataset: str, epochs: int, out: Path, extra: str = "") -> dict:
    spec = WORKLOADS[name]
    layers = "".join(f"    - {{type: dense, units: {u}, activation: relu}}\n" for u in spec["hidden"])
    text = (f"model:\n  layers:\n{layers}    - {{type: dense, units: 10}}\n"
            f"optimizer: {spec['optimizer']}\n"
            f"data: {{dataset: {dataset}, batch_size: {spec['batch']}, val_fraction: 0.1}}\n"
            f"training: {{epochs: {epochs}, seed: 0}}\n{extra}")
    return resolved_dict(parse_config_text(text, f"{name}.yaml", [f"output.dir={out}"]))


def fashion_available() -> str | None:
    """fashion-mnist if it is in the bpcli cache or importable from Debian's package."""
    from bpcli.data.catalog import import_dataset, is_cached

    if is_cached("fashion-mnist"):
        return "fashion-mnist"
    for folder in FASHION_DIRS:
        if folder.is_dir():
            import_dataset("fashion-mnist", str(folder))
            return "fashion-mnist"
    return None


def random_npz(path: Path, n: int = 60000) -> str:
    """Random data of Fashion-MNIST's shape (n training images), as the user's own .npz."""
    rng = np.random.default_rng(0)
    n_test = max(n // 6, 10)
    np.savez(path, X=rng.integers(0, 256, (n, 784), dtype=np.uint8), y=rng.integers(0, 10, n),
             X_test=rng.integers(0, 256, (n_test, 784), dtype=np.uint8), y_test=rng.integers(0, 10, n_test))
    return str(path)


class Interleave(Callback):
    """After each bpcli epoch, time one bare-GEMM epoch (and one PyTorch epoch); bpcli's epoch time excludes them.

    It also clocks the time spent inside the layer diagnostics' hooks (their
    direct cost): `clocking(LayerDiagnostics)` wraps them while a run lasts.
    """

    def __init__(self, bare: BareGemms, peer: TorchLoop | None = None):
        self.bare, self.peer, self.ours, self.gemm, self.torch, self.diagnostics = bare, peer, [], [], [], []
        self.started, self.in_diagnostics = None, 0.0

    def on_train_begin(self, loop):
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def clocking(self, cls):
        """While inside, every batch and epoch hook of `cls` adds its time to in_diagnostics."""
        hooks = {name: getattr(cls, name) for name in ("on_batch_begin", "on_gradients", "on_batch_end",
                                                          "on_epoch_end")}

        def clocked(hook):
            def timed(*args):
                started = time.perf_counter()
                hook(*args)
                self.in_diagnostics += time.perf_counter() - started
            return timed

        for name, hook in hooks.items():
            setattr(cls, name, clocked(hook))
        try:
            yield
        finally:
            for name, hook in hooks.items():
                setattr(cls, name, hook)

    def on_epoch_end(self, loop, row):
        self.ours.append(time.perf_counter() - self.started)
        self.diagnostics.append(self.in_diagnostics)
        self.in_diagnostics = 0.0
        self.gemm.append(self.bare.epoch())
        if self.peer is not None:
            self.torch.append(self.peer.epoch())
        self.started = time.perf_counter()


def run_bpcli(name: str, dataset: str, rounds: int, out: Path, n_images: int, extra: str = "",
              peer: TorchLoop | None = None) -> dict:
    from bpcli.training.run import train_run

    cfg = workload_config(name, dataset, rounds + 1, out, extra)
    n_train = round(n_images * 0.9)
    sizes = [784, *WORKLOADS[name]["hidden"], 10]
    timer = Interleave(BareGemms(sizes, WORKLOADS[name]["batch"], n_train), peer)
    progress = RichProgress(_hidden_terminal())
    with timer.clocking(LayerDiagnostics):
        train_run(cfg, f"{name}.yaml", callbacks=[progress, timer])
    ours, gemm = statistics.median(timer.ours[1:]), statistics.median(timer.gemm[1:])
    paired = statistics.median(a / b for a, b in zip(timer.ours[1:], timer.gemm[1:]))  # each pair: same conditions
    share = statistics.median(d / t for d, t in zip(timer.diagnostics[1:], timer.ours[1:]))
    result = {"workload": name, "bpcli_s": ours, "gemm_s": gemm, "ratio": ours / gemm, "paired_ratio": paired,
              "diagnostics_share": share, "rounds": rounds, "bpcli_all_s": timer.ours, "gemm_all_s": timer.gemm,
              "diagnostics_all_s": timer.diagnostics}
    if timer.torch:
        torch_s = statistics.median(timer.torch[1:])
        result.update(torch_s=torch_s, torch_ratio=torch_s / gemm, torch_all_s=timer.torch,
                      torch_paired_ratio=statistics.median(a / b for a, b in zip(timer.torch[1:], timer.gemm[1:])),
                      bpcli_over_torch=statistics.median(a / b for a, b in zip(timer.ours[1:], timer.torch[1:])))
    return result


def diagnostics_ab(name: str, dataset: str, pairs: int, out: Path, n_images: int) -> dict:
    """Whole runs of 2 epochs with diagnostics on and off; the ratio of their second epochs, pair by pair.

    The order alternates (on/off, then off/on) so that whatever favours the first or the second run of a
    pair does not pass for the cost of the diagnostics.
    """
    ratios = []
    for i in range(pairs):
        order = (True, False) if i % 2 == 0 else (False, True)
        epoch = {on: run_bpcli(name, dataset, 1, out, n_images, "" if on else "diagnostics: {enabled: false}\n")
                 ["bpcli_all_s"][1] for on in order}
        ratios.append(epoch[True] / epoch[False])
    return {"diagnostics_ab_ratio": statistics.median(ratios), "diagnostics_ab_all": ratios}


def _hidden_terminal():
    """A terminal console that draws into memory: the progress bars' cost is paid, nothing is shown."""
    from rich.console import Console

    return Console(file=io.StringIO(), force_terminal=True, width=120)


class TorchLoop:
    """The same workload as a plain PyTorch CPU loop: shuffled mini-batches, then validation (torch 2 threads)."""

    def __init__(self, name: str, dataset: str):
        import torch

        torch.set_num_threads(2)
        torch.manual_seed(0)
        self.torch, self.batch = torch, WORKLOADS[name]["batch"]
        self.x, self.y, self.x_val, self.y_val = _torch_data(dataset)
        sizes = [784, *WORKLOADS[name]["hidden"], 10]
        layers = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        self.model = torch.nn.Sequential(*layers[:-1])
        self.opt = (torch.optim.Adam(self.model.parameters(), lr=1e-3) if name == "W2"
                    else torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9))
        self.loss_fn = torch.nn.CrossEntropyLoss()

    def epoch(self) -> float:
        started = time.perf_counter()
        order = self.torch.randperm(len(self.x))
        for i in range(0, len(self.x), self.batch):
            idx = order[i:i + self.batch]
            self.opt.zero_grad()
            loss = self.loss_fn(self.model(self.x[idx]), self.y[idx])
            loss.backward()
            self.opt.step()
        with self.torch.no_grad():
            self.loss_fn(self.model(self.x_val), self.y_val)
        return time.perf_counter() - started


def torch_loop(name: str, dataset: str) -> TorchLoop | None:
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    return TorchLoop(name, dataset)


def _torch_data(dataset: str):
    import torch

    from bpcli.data.preprocessing import prepare

    prepared = prepare(load_dataset(dataset), "multiclass", val_fraction=0.1, seed=0)  # the same arrays as bpcli
    as_t = lambda a: torch.from_numpy(np.asarray(a))  # noqa: E731 (images come as ScaledRows: scaled here)
    return as_t(prepared.x_train), as_t(prepared.y_train), as_t(prepared.x_val), as_t(prepared.y_val)


def machine() -> dict:
    import os
    import platform

    try:
        from threadpoolctl import threadpool_info
        blas = [f"{i['internal_api']} {i['version']} ({i['num_threads']} threads)" for i in threadpool_info()]
    except ImportError:
        blas = []
    return {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
            "machine": platform.machine(), "blas": blas}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=8, help="measured epochs per workload (after a warm-up)")
    parser.add_argument("--torch", action="store_true", help="also time a plain PyTorch loop")
    parser.add_argument("--random", action="store_true", help="random data of Fashion-MNIST's shape")
    parser.add_argument("--samples", type=int, default=60000, help="with --random: training images (a tiny run: 2000)")
    parser.add_argument("--diagnostics-ab", type=int, default=0, metavar="PAIRS",
                        help="also time runs with layer diagnostics on and off, alternated, PAIRS times")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--out", default="/tmp/bpcli-bench", help="where the benchmark's run directories go")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = None if args.random else fashion_available()
    n_images = 60000 if dataset else args.samples
    dataset = dataset or random_npz(out / "random.npz", n_images)
    results = []
    for name in args.workloads:
        result = run_bpcli(name, dataset, args.rounds, out, n_images,
                           peer=torch_loop(name, dataset) if args.torch else None)
        if args.diagnostics_ab:
            result.update(diagnostics_ab(name, dataset, args.diagnostics_ab, out, n_images))
        results.append(result)
        print_row(result)
    report = {"dataset": dataset, "machine": machine(), "results": results,
              "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(f"peak memory {report['peak_memory_mb']:.0f} MB; data {dataset}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def print_row(r: dict) -> None:
    torch_part = (f"  torch {r['torch_s']:.3f} s ({r['torch_ratio']:.2f}x, paired {r['torch_paired_ratio']:.2f}x; "
                  f"bpcli/torch paired {r['bpcli_over_torch']:.2f})" if r.get("torch_s") else "")
    ab_part = f", on/off {r['diagnostics_ab_ratio']:.3f}x" if "diagnostics_ab_ratio" in r else ""
    print(f"{r['workload']}: bpcli {r['bpcli_s']:.3f} s/epoch, bare GEMMs {r['gemm_s']:.3f} s, "
          f"ratio {r['ratio']:.2f}x (median of paired epochs {r['paired_ratio']:.2f}x){torch_part}; "
          f"layer diagnostics {r['diagnostics_share']:.1%} of the epoch{ab_part}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
