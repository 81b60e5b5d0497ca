"""Pictures of training runs: what `bpcli plot` draws (evaluation.py draws `bpcli eval --plot`).

    read_run(run_dir) -> Run                     the per-epoch metrics, summary and per-layer rows of a run
    training_figure(runs) -> Figure              loss, accuracy, learning rate, per-layer gradient norms
    run_labels(runs) -> [str]                    several runs named by the config keys that differ between them

The run directory's files are found through RunDir, which owns their names. The
functions return the Figure (figures.save_figure writes it) so that a test can
compare what is drawn with the logs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from bpcli.errors import CheckpointError
from bpcli.plots.figures import require_matplotlib, style
from bpcli.training.rundir import RunDir
from bpcli.training.run import config_value, differing_keys, read_run_config

LABEL_BOX = {"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75}
RUN_HINT = "give a run directory made by bpcli train (runs/<config>-<time>/, holding {metrics})"
LABEL_KEYS = 3   # differing config keys named in a run's label; more are cut to "..."
STEP = 3         # an lr change this many times larger than its neighbours' is a step (lr_changes)


# -- a run directory -------------------------------------------------------------

@dataclass
class Run:
    """One run's logs as read from its directory (`files` knows the names of what it holds)."""

    name: str
    files: RunDir
    metrics: list[dict]
    summary: dict | None = None
    layers: list[dict] | None = None
    config: dict | None = None

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(epochs, values) of one metric, skipping epochs where it is absent or null."""
        rows = [r for r in self.metrics if r.get(key) is not None]
        return [r["epoch"] for r in rows], [r[key] for r in rows]

    @property
    def best_epoch(self) -> int | None:
        return (self.summary or {}).get("best_epoch")

    def lr_changes(self) -> list[tuple[int, float]]:
        """(epoch, new lr) wherever the learning rate stepped: a step schedule's or reduce-on-plateau's drops.

        A smooth schedule (cosine, warmup, exponential) changes the lr every epoch by about as
        much as it did the epoch before, so a change counts as a step only when it is more than
        STEP times the largest change of the epochs on either side; a constant lr never changes.
        """
        rates = [row["lr"] for row in self.metrics]
        deltas = [0.0] + [abs(b - a) for a, b in zip(rates, rates[1:])] + [0.0]
        return [(self.metrics[i]["epoch"], rates[i]) for i in range(1, len(rates))
                if deltas[i] > STEP * max(deltas[i - 1], deltas[i + 1])]


def read_run(run_dir: str | Path) -> Run:
    """A run's logs; no summary (still running, or killed) and no per-layer rows (older bpcli) are fine."""
    files = RunDir(run_dir)
    path, metrics_file = files.path, files.metrics_jsonl
    hint = RUN_HINT.format(metrics=metrics_file.name)
    if not path.is_dir():
        raise CheckpointError(f"{path} {'is not a directory' if path.exists() else 'does not exist'}: {hint}")
    if not metrics_file.is_file():
        raise CheckpointError(f"{path} has no {metrics_file.name}, so it is not a run directory: {hint}")
    metrics = read_jsonl(metrics_file, ("epoch", "train_loss", "lr"))
    if not metrics:
        raise CheckpointError(f"{metrics_file} has no epochs yet (the run stopped before its first "
                              "epoch ended): nothing to plot")
    layers = read_jsonl(files.layers_jsonl, ("epoch", "layer")) if files.layers_jsonl.is_file() else None
    return Run(path.resolve().name, files, metrics, _read_summary(files.summary), layers, read_run_config(files))


def read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    """One JSON object per line, each with the `required` keys; errors name the line.

    A last line without its newline that does not parse is being written by a running
    training (each row is appended in one write): it is left out, not reported as damage.
    """
    rows, lines = [], _read_text(path).split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                break
            raise CheckpointError(f"{path}:{number}: damaged line, not JSON ({error.msg}); "
                                  "fix or delete that line") from None
        missing = [k for k in required if not isinstance(row, dict) or row.get(k) is None]
        if missing:
            raise CheckpointError(f"{path}:{number}: expected a JSON object with {', '.join(required)}; "
                                  f"{missing[0]} is missing")
        rows.append(row)
    return rows


def _read_summary(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        summary = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}:{error.lineno}: damaged, not JSON ({error.msg}); delete it to plot "
                              "the run without its best-epoch mark") from None
    return summary if isinstance(summary, dict) else None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None


# -- training curves -------------------------------------------------------------

def training_figure(runs: list[Run]):
    """Loss and accuracy (train solid, val dashed), learning rate, per-layer gradient norms; one colour a run.

    The best epoch (from the run's summary) is a dashed vertical line, and triangles on the
    bottom edge mark the epochs where the learning rate changed. Regression runs
    have no accuracy panel; a run without per-layer rows gets a note instead of lines.
    """
    _, Figure = require_matplotlib()
    title = _title(runs)
    runs = [replace(run, name=label) for run, label in zip(runs, run_labels(runs))]
    names = ["loss"] + (["accuracy"] if any(r.series("train_accuracy")[0] for r in runs) else []) + ["lr"]
    names += ["layers"] if any(r.layers for r in runs) else []
    with style():
        figure = Figure(figsize=(12, 8 if len(names) > 2 else 5), dpi=100, layout="constrained")
        axes = figure.subplot_mosaic(_grid(names))
        colours = [f"C{i % 10}" for i in range(len(runs))]
        for metric in ("loss", "accuracy"):
            if metric in axes:
                _metric_panel(axes[metric], runs, colours, metric)
        _lr_panel(axes["lr"], runs, colours)
        if "layers" in axes:
            _layers_panel(axes["layers"], runs, colours)
        figure.suptitle(title)
    return figure


def run_labels(runs: list[Run]) -> list[str]:
    """Names for the legends: with several runs, the config keys whose values differ ('optimizer.lr=0.003,
    training.seed=3'), which say more than two timestamps; the folder's name where that cannot tell runs
    apart (one run, a run without a readable config.yaml, configs that differ only in bookkeeping)."""
    names = [run.name for run in runs]
    if len(runs) < 2 or any(run.config is None for run in runs):
        return names
    keys = differing_keys([run.config for run in runs])
    if not keys:
        return names
    labels = [", ".join(f"{key}={_short(config_value(run.config, key))}" for key in keys[:LABEL_KEYS])
              + (", ..." if len(keys) > LABEL_KEYS else "") for run in runs]
    return [f"{label} ({name})" if labels.count(label) > 1 else label for label, name in zip(labels, names)]


def _short(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _grid(names: list[str]) -> list[list[str]]:
    """Two panels side by side; three with the last one across the bottom; four in a square."""
    if len(names) <= 2:
        return [names]
    return [names[:2], names[2:] if len(names) == 4 else names[2:] * 2]


def _title(runs: list[Run]) -> str:
    files = runs[0].files
    if len(runs) > 1:
        title = f"{len(runs)} runs: " + ", ".join(r.name for r in runs)
    else:
        title = f"{runs[0].name}: " + ((runs[0].summary or {}).get("stopped_because")
                                       or f"no {files.summary.name} yet (still running, or killed)")
    if not any(r.layers for r in runs):
        title += (f"\n(no {files.layers_jsonl.name}, so no per-layer gradient norms: it is written by newer "
                  "versions of bpcli)")
    return title


def _metric_panel(ax, runs: list[Run], colours: list[str], metric: str) -> None:
    from matplotlib.ticker import PercentFormatter

    for i, (run, colour) in enumerate(zip(runs, colours)):
        for split, style in (("train", "-"), ("val", "--")):
            epochs, values = run.series(f"{split}_{metric}")
            if epochs:
                ax.plot(epochs, values, style, color=colour, lw=1.8, label=f"{run.name} {split}")
        _mark_best(ax, run, colour, i)
        _mark_lr_changes(ax, run, colour, i)
    if metric == "accuracy":
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    elif _spans_decades([v for r in runs for s in ("train", "val") for v in r.series(f"{s}_loss")[1]]):
        _log_y(ax)
    _epoch_axis(ax, metric.capitalize() + " per epoch", metric)
    _curve_legend(ax, runs, colours)


def _epoch_axis(ax, title: str, ylabel: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(title=title, xlabel="epoch", ylabel=ylabel)


def _spans_decades(values: list[float]) -> bool:
    """A log scale when the loss falls by more than 20x, so its late epochs are not a flat line."""
    finite = [v for v in values if v > 0 and math.isfinite(v)]
    return bool(finite) and max(finite) > 20 * min(finite)


def _log_y(ax) -> None:
    """A log y-axis labelled 0.3, 0.02, 1e-05 rather than 3x10^-1 (matplotlib still picks which ticks get labels)."""
    from matplotlib.ticker import LogFormatterSciNotation

    class Plain(LogFormatterSciNotation):
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(Plain())
    ax.yaxis.set_minor_formatter(Plain(labelOnlyBase=False))


def _mark_best(ax, run: Run, colour: str, i: int) -> None:
    if run.best_epoch is None:
        return
    ax.axvline(run.best_epoch, color=colour, ls=(0, (5, 3)), lw=1.2, alpha=0.8, label=f"{run.name} best epoch")
    left = run.best_epoch > 0.8 * run.metrics[-1]["epoch"]  # near the right edge: label on the line's left
    ax.annotate(f"best {run.best_epoch}", (run.best_epoch, 0.97 - 0.07 * i), xycoords=ax.get_xaxis_transform(),
                xytext=(-3 if left else 3, 0), textcoords="offset points", ha="right" if left else "left", va="top",
                color=colour, fontsize=9, bbox=LABEL_BOX)


def _mark_lr_changes(ax, run: Run, colour: str, i: int) -> None:
    """Triangles on the bottom edge; a few sparse changes (a step schedule) are labelled with the new lr.

    A schedule that changes the lr every epoch (cosine, exponential) gets no labels: the
    learning-rate panel shows its values.
    """
    changes = run.lr_changes()
    if not changes:
        return
    epochs, y = [e for e, _ in changes], 0.03 + 0.05 * i
    many = len(changes) > 10
    ax.plot(epochs, [y] * len(epochs), "^", color=colour, ms=4 if many else 6, alpha=0.6 if many else 1,
            transform=ax.get_xaxis_transform(), clip_on=False, label=f"{run.name} lr change")
    if len(changes) <= 4 and 3 * len(changes) <= len(run.metrics):
        for epoch, lr in changes:
            ax.annotate(f"lr {lr:.3g}", (epoch, y), xycoords=ax.get_xaxis_transform(), xytext=(5, 0),
                        textcoords="offset points", va="center", color=colour, fontsize=9, bbox=LABEL_BOX)


def _curve_legend(ax, runs: list[Run], colours: list[str]) -> None:
    """One entry a run (its colour), then what the line styles and marks mean (grey when there are several runs)."""
    from matplotlib.lines import Line2D

    grey = colours[0] if len(runs) == 1 else "0.35"
    entries = [(r.name, {"color": c}) for r, c in zip(runs, colours)] if len(runs) > 1 else []
    entries += [("train", {"ls": "-"}), ("val", {"ls": "--"})]
    if any(r.best_epoch is not None for r in runs):
        entries.append(("best epoch", {"ls": "none", "marker": "|", "ms": 14, "mew": 1.5}))
    if any(r.lr_changes() for r in runs):
        entries.append(("lr changed", {"ls": "none", "marker": "^", "ms": 6}))
    ax.legend(handles=[Line2D([], [], label=label, **{"color": grey, "lw": 1.8, **kw}) for label, kw in entries],
              loc="best")


def _lr_panel(ax, runs: list[Run], colours: list[str]) -> None:
    """The lr per epoch: a log axis for steps over decades (0.1, 0.01, 0.001), a linear one for a smooth schedule,
    whose shape it shows and whose tiny last values (cosine to min_lr) would squash a log axis."""
    for run, colour in zip(runs, colours):
        ax.plot(*run.series("lr"), ".-", color=colour, lw=1.5, ms=4, label=run.name)
    rates = [v for r in runs for v in r.series("lr")[1]]
    if _spans_decades(rates) and any(r.lr_changes() for r in runs):
        _log_y(ax)
    elif rates and min(rates) == max(rates) > 0:  # a constant lr: from 0, not a +-4% window around it
        ax.set_ylim(0, 2 * rates[0])
    _epoch_axis(ax, "Learning rate (at each epoch's last batch)", "lr")
    if len(runs) > 1:
        ax.legend(loc="best")


def _layers_panel(ax, runs: list[Run], colours: list[str]) -> None:
    """One line a layer: for one run a colour a layer; for several, the run's colour and a marker a layer.

    With several runs the legend names the markers only (the loss panel names the colours),
    so it stays short enough not to cover the lines.
    """
    from matplotlib.lines import Line2D

    markers: dict[str, str] = {}
    for run, colour in ((r, c) for r, c in zip(runs, colours) if r.layers):
        for j, (layer, label) in enumerate(_layer_names(run.layers)):
            rows = [r for r in run.layers if r["layer"] == layer and r.get("grad_norm") is not None]
            marker = markers.setdefault(label, "os^Dvp*hX"[len(markers) % 9])
            style = {"color": f"C{j % 10}"} if len(runs) == 1 else {"color": colour, "marker": marker}
            ax.plot([r["epoch"] for r in rows], [r["grad_norm"] for r in rows], "-", lw=1.5, ms=5,
                    label=f"{run.name} {label}" if len(runs) > 1 else label, **style)
    _log_y(ax)
    _epoch_axis(ax, "Gradient norm per layer", "‖gradient‖ (log scale)")
    handles = [Line2D([], [], color="0.35", marker=m, label=label) for label, m in markers.items()]
    ax.legend(handles=handles if len(runs) > 1 else None, loc="best")
    missing = [r.name for r in runs if not r.layers]
    if missing:
        ax.text(0.01, 0.01, f"no {runs[0].files.layers_jsonl.name}: {', '.join(missing)}", transform=ax.transAxes,
                color="0.35")


def _layer_names(rows: list[dict]) -> list[tuple[str, str]]:
    """(layer, label) in order of first appearance: 'layers.0 dense relu 512'."""
    names = {}
    for r in rows:
        parts = [r["layer"], r.get("type"), r.get("activation"), r.get("units")]
        names.setdefault(r["layer"], " ".join(str(p) for p in parts if p is not None))
    return list(names.items())
