"""The real CLI against its bare GEMMs, a plain NumPy loop and PyTorch, each in a process of its own, interleaved.

    python benchmarks/cli_bench.py                       # W1 W2 W3, 4 rounds of 4 epochs, full Fashion-MNIST
    python benchmarks/cli_bench.py --workloads W1 --rounds 2 --epochs 3 --json out.json

Each round runs, for each workload, four processes one after the other (their
order rotates from round to round): `bpcli train W.yaml --quiet` exactly as a
user runs it (logs, checkpoints, layer diagnostics on, by default), one epoch
after another of the bare matrix multiplies the same network needs
(tools.timing.BareGemms), a plain NumPy training loop (float32 arrays, whole
-array updates: what one writes by hand) and, when torch is installed, a
plain PyTorch loop (benchmarks/bench.py's TorchLoop, 2 threads). The data is
full Fashion-MNIST (60k training images, no validation split, as issue 16
measured it).

bpcli's epochs are clocked from outside: this script watches the run's
metrics.jsonl and notes when each row appears, so an epoch's time includes
everything the CLI does between two rows (the batches, the callbacks, the
checkpoint and log writes). The peers clock their own epochs. Peak RSS is each
process's own (os.wait4). Reported per workload: the fastest epoch of each
(epochs 2.., over all rounds) and the median of the per-round medians, each
over the bare GEMMs' of the same run.
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

HERE = Path(__file__).resolve().parent
WORKLOADS = {
    "W1": {"hidden": [256, 128], "batch": 128, "optimizer": "{name: sgd, lr: 0.01, momentum: 0.9}"},
    "W2": {"hidden": [256, 128], "batch": 128, "optimizer": "{name: adam, lr: 0.001}"},
    "W3": {"hidden": [1024, 1024], "batch": 256, "optimizer": "{name: sgd, lr: 0.01, momentum: 0.9}"},
}
DATASET = "fashion-mnist"   # --dataset: another named image set (the tests use mnist-mini)
PEERS = ("gemm", "numpy", "torch")


def config_text(name: str, epochs: int, out: Path, run_name: str, dataset: str) -> str:
    spec = WORKLOADS[name]
    layers = "".join(f"    - {{type: dense, units: {u}, activation: relu}}\n" for u in spec["hidden"])
    return (f"model:\n  layers:\n{layers}    - {{type: dense, units: 10}}\n"
            f"optimizer: {spec['optimizer']}\n"
            f"data: {{dataset: {dataset}, batch_size: {spec['batch']}, val_fraction: 0.0}}\n"
            f"training: {{epochs: {epochs}, seed: 0, monitor: train_loss}}\n"
            f"output: {{dir: {out}, name: {run_name}}}\n")


def wait_rusage(proc: subprocess.Popen) -> tuple[int, float]:
    """(exit code, peak RSS in MB) of a child, from wait4: each process's own peak."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def run_cli(name: str, epochs: int, out: Path, env: dict, run_name: str, dataset: str = DATASET) -> dict:
    """`bpcli train` as a user runs it (with this interpreter, so no venv on PATH is needed); epoch times are
    the gaps between metrics.jsonl rows appearing."""
    config = out / f"{run_name}.yaml"
    config.write_text(config_text(name, epochs, out, run_name, dataset))
    log = out / run_name / "metrics.jsonl"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "bpcli", "train", str(config), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen, rows = 0, []
    while True:
        n = _lines(log)
        if n > seen:
            rows += [time.perf_counter()] * (n - seen)
            seen = n
        if seen >= epochs or _exited(proc):
            break
        time.sleep(0.002)
    code, rss = wait_rusage(proc)
    wall = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"bpcli train {config} exited {code}: {proc.stderr.read().decode()[-2000:]}")
    logged = [json.loads(line)["seconds"] for line in log.read_text().splitlines()]
    return {"epochs_s": [b - a for a, b in zip(rows, rows[1:])], "first_row_s": rows[0] - started if rows else None,
            "logged_s": logged, "wall_s": wall, "rss_mb": rss}


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _exited(proc: subprocess.Popen) -> bool:
    """Whether the child has ended, without reaping it (so wait4 still gets its rusage)."""
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def run_peer(kind: str, name: str, epochs: int, env: dict, dataset: str = DATASET) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--peer", kind, "--workloads", name, "--epochs", str(epochs),
                             "--dataset", dataset],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout = proc.stdout.read()
    code, rss = wait_rusage(proc)
    if code != 0:
        raise RuntimeError(f"peer {kind} {name} exited {code}: {proc.stderr.read().decode()[-2000:]}")
    return {**json.loads(stdout), "rss_mb": rss}


# -- the peers, each run in a process of its own (--peer) --------------------------------

def images_float32(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """The training set as a plain script would hold it: float32 in [0, 1], int64 labels."""
    from bpcli.data.catalog import load_dataset

    d = load_dataset(dataset)
    return d.x_train.reshape(len(d.x_train), -1).astype(np.float32) / np.float32(255), d.y_train.astype(np.int64)


def peer_gemm(name: str, epochs: int, dataset: str) -> list[float]:
    from bpcli.data.catalog import load_dataset
    from bpcli.tools.timing import BareGemms

    spec = WORKLOADS[name]
    bare = BareGemms([784, *spec["hidden"], 10], spec["batch"], len(load_dataset(dataset).y_train))
    return [bare.epoch() for _ in range(epochs)]


def peer_numpy(name: str, epochs: int, dataset: str) -> list[float]:
    """A plain NumPy MLP loop: He init, ReLU, softmax cross-entropy, whole-array SGD-momentum or Adam."""
    x, y = images_float32(dataset)
    spec, f = WORKLOADS[name], np.float32
    sizes, batch, rng = [784, *spec["hidden"], 10], spec["batch"], np.random.default_rng(0)
    params = []
    for a, b in zip(sizes, sizes[1:]):
        params += [(rng.standard_normal((a, b)) * np.sqrt(2 / a)).astype(f), np.zeros(b, f)]
    state = [[np.zeros_like(p) for p in params] for _ in range(2)]
    adam, t, times = name == "W2", 0, []
    for _ in range(epochs):
        started = time.perf_counter()
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            grads = _numpy_grads(params, x[idx], y[idx])
            t += 1
            for p, g, m, v in zip(params, grads, *state):
                if adam:
                    m *= f(0.9); m += f(0.1) * g; v *= f(0.999); v += f(0.001) * g * g
                    p -= f(0.001 / (1 - 0.9 ** t)) * m / (np.sqrt(v / f(1 - 0.999 ** t)) + f(1e-8))
                else:
                    m *= f(0.9); m += g; p -= f(0.01) * m
        times.append(time.perf_counter() - started)
    return times


def _numpy_grads(params, x, y):
    acts, n = [x], len(x)
    for i in range(0, len(params), 2):
        z = acts[-1] @ params[i] + params[i + 1]
        acts.append(np.maximum(z, 0) if i + 2 < len(params) else z)
    z = acts[-1]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(n), y] -= 1
    dz, grads = p / np.float32(n), []
    for i in range(len(params) - 2, -1, -2):
        grads[:0] = [acts[i // 2].T @ dz, dz.sum(axis=0)]
        if i:
            dz = (dz @ params[i].T) * (acts[i // 2] > 0)
    return grads


def peer_torch(name: str, epochs: int, dataset: str) -> list[float]:
    sys.path.insert(0, str(HERE))
    from bench import TorchLoop

    loop = TorchLoop.__new__(TorchLoop)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2)))
    torch.manual_seed(0)
    x, y = images_float32(dataset)
    loop.torch, loop.batch = torch, WORKLOADS[name]["batch"]
    loop.x, loop.y = torch.from_numpy(x), torch.from_numpy(y)
    loop.x_val, loop.y_val = loop.x[:0], loop.y[:0]
    sizes = [784, *WORKLOADS[name]["hidden"], 10]
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    loop.model = torch.nn.Sequential(*layers[:-1])
    loop.opt = (torch.optim.Adam(loop.model.parameters(), lr=1e-3) if name == "W2"
                else torch.optim.SGD(loop.model.parameters(), lr=0.01, momentum=0.9))
    loop.loss_fn = torch.nn.CrossEntropyLoss()
    return [loop.epoch() for _ in range(epochs)]


PEER_RUNS = {"gemm": peer_gemm, "numpy": peer_numpy, "torch": peer_torch}


# -- the table ----------------------------------------------------------------------------

def summarize(name: str, rounds: list[dict]) -> dict:
    """Fastest epoch (epochs 2..) of each over all rounds, and the median of per-round medians, over the GEMMs'."""
    kinds = [k for k in ("bpcli", *PEERS) if all(k in r for r in rounds)]
    fastest, medians, rss = {}, {}, {}
    for k in kinds:
        epochs = [r[k]["epochs_s"][1:] if k != "bpcli" else r[k]["epochs_s"] for r in rounds]
        fastest[k] = min(min(e) for e in epochs)
        medians[k] = statistics.median(statistics.median(e) for e in epochs)
        rss[k] = max(r[k]["rss_mb"] for r in rounds)
    return {"workload": name, "fastest_s": fastest, "median_s": medians, "peak_rss_mb": rss,
            "fastest_ratio": {k: fastest[k] / fastest["gemm"] for k in kinds},
            "median_ratio": {k: medians[k] / medians["gemm"] for k in kinds}}


def table(summaries: list[dict]) -> str:
    has_torch = all("torch" in s["fastest_s"] for s in summaries)
    head = ("| workload | bare GEMMs (fastest) | bpcli / GEMMs | plain NumPy / GEMMs |"
            + (" PyTorch / GEMMs | bpcli / PyTorch |" if has_torch else "")
            + " peak RSS bpcli / NumPy" + (" / PyTorch" if has_torch else "") + " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in summaries:
        for stat, label in (("fastest", ""), ("median", " (medians)")):
            r, t = s[f"{stat}_ratio"], s[f"{stat}_s"]
            cells = [f"{s['workload']}{label}", f"{t['gemm']:.3f} s", f"{r['bpcli']:.2f}x", f"{r['numpy']:.2f}x"]
            if has_torch:
                cells += [f"{r['torch']:.2f}x", f"{t['bpcli'] / t['torch']:.2f}"]
            mem = s["peak_rss_mb"]
            cells.append(" / ".join(f"{mem[k]:.0f}" for k in ("bpcli", "numpy", "torch") if k in mem) + " MB"
                         if not label else "")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is not counted")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--dataset", default=DATASET, help="a named image dataset of 28x28 images, 10 classes")
    parser.add_argument("--threads", type=int, help="BLAS (and PyTorch) threads of every process; default: "
                        "theirs (2 here). On a shared machine 2 spinning BLAS threads can run 20x slower")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="set in the environment of bpcli's runs (e.g. BPCLI_FUSED=0)")
    parser.add_argument("--json", help="also write every epoch and the summaries to this JSON file")
    parser.add_argument("--peer", choices=PEERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer:
        print(json.dumps({"epochs_s": PEER_RUNS[args.peer](args.workloads[0], args.epochs, args.dataset)}))
        return 0
    peers = [p for p in PEERS if p != "torch" or (not args.no_torch and _has_torch())]
    env = os.environ.copy()
    if args.threads:
        env.update({k: str(args.threads) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    bpcli_env = {**env, **dict(kv.split("=", 1) for kv in args.env)}
    out = Path(tempfile.mkdtemp(prefix="bpcli-cli-bench-"))
    results = {name: [] for name in args.workloads}
    for r in range(args.rounds):
        for name in args.workloads:
            kinds = ["bpcli", *peers]
            kinds = kinds[r % len(kinds):] + kinds[:r % len(kinds)]   # the order rotates round by round
            runs = {k: run_cli(name, args.epochs, out, bpcli_env, f"{name}-{r + 1}", args.dataset) if k == "bpcli"
                    else run_peer(k, name, args.epochs, env, args.dataset) for k in kinds}
            results[name].append(runs)
            print(f"round {r + 1} {name}: " + ", ".join(
                f"{k} {min(v['epochs_s'][1:] if k != 'bpcli' else v['epochs_s']):.3f} s" for k, v in runs.items()),
                file=sys.stderr, flush=True)
    summaries = [summarize(name, rounds) for name, rounds in results.items()]
    print(table(summaries))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "dataset": args.dataset, "env": args.env,
                                               "threads": args.threads,
                                               "load_average": os.getloadavg(), "summaries": summaries,
                                               "runs": results}, indent=1) + "\n")
    return 0


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def machine() -> dict:
    import platform

    sys.path.insert(0, str(HERE))
    from bench import machine as bench_machine

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {**bench_machine(), "cpu": cpu, "date": time.strftime("%Y-%m-%d %H:%M %Z")}


if __name__ == "__main__":
    sys.exit(main())
