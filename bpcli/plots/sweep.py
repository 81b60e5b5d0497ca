"""The picture of a sweep (`bpcli plot SWEEP_DIR`): how the search went, what each parameter did, how the best trials learned.

    sweep_figure(search) -> Figure

`search` is plain data (the command reads it from the sweep directory):
    title, metric, direction ("minimize" or "maximize"),
    trials:  [{number, state, value, params}]  every recorded trial
    curves:  {number: [(epoch, value), ...]}   the metric per epoch of the best trials

Panels, left to right and down:
    history      each trial's value by trial number (complete filled, pruned hollow), and the best so far
    one a param  the value against the parameter: a log axis for a positive range that spans decades
                 (a learning rate), categories side by side for choices
    curves       the metric per epoch of the best trials, so a pruned or late-improving trial shows why
"""

from __future__ import annotations

import math

from bpcli.plots.figures import require_matplotlib, style

COLUMNS = 3


def sweep_figure(search: dict):
    _, Figure = require_matplotlib()
    params = list(dict.fromkeys(key for trial in search["trials"] for key in trial["params"]))
    panels = ["history", *params, "curves"]
    rows = math.ceil(len(panels) / COLUMNS)
    with style():
        figure = Figure(figsize=(4.2 * COLUMNS, 3.4 * rows), dpi=100, layout="constrained")
        axes = figure.subplots(rows, COLUMNS, squeeze=False).ravel()
        _history_panel(axes[0], search)
        for ax, key in zip(axes[1:], params):
            _param_panel(ax, search, key)
        _curves_panel(axes[len(panels) - 1], search)
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        figure.suptitle(search["title"])
    return figure


def scored(trials: list[dict]) -> list[dict]:
    """Trials with a value to draw: complete and pruned ones (failed trials have none)."""
    return [t for t in trials if t["state"] in ("complete", "pruned") and t["value"] is not None]


def best_so_far(trials: list[dict], direction: str) -> list[tuple[int, float]]:
    """(trial number, best complete value up to it), in trial order: the line a search should push down (or up)."""
    better = min if direction == "minimize" else max
    line, best = [], None
    for trial in sorted(trials, key=lambda t: t["number"]):
        if trial["state"] == "complete" and trial["value"] is not None:
            best = trial["value"] if best is None else better(best, trial["value"])
        if best is not None:
            line.append((trial["number"], best))
    return line


def _history_panel(ax, search: dict) -> None:
    trials = scored(search["trials"])
    for state, fill in (("complete", "C0"), ("pruned", "none")):
        points = [(t["number"], t["value"]) for t in trials if t["state"] == state]
        if points:
            ax.scatter(*zip(*points), s=28, facecolors=fill, edgecolors="C0", label=state, zorder=3)
    line = best_so_far(search["trials"], search["direction"])
    if line:
        ax.step(*zip(*line), where="post", color="C3", label="best so far")
    failed = sum(t["state"] == "fail" for t in search["trials"])
    ax.set_title("search history" + (f" ({failed} failed, not drawn)" if failed else ""))
    ax.set_xlabel("trial")
    ax.set_ylabel(search["metric"])
    if trials or line:
        ax.legend(loc="best")


def _param_panel(ax, search: dict, key: str) -> None:
    trials = [t for t in scored(search["trials"]) if key in t["params"]]
    values = [t["params"][key] for t in trials]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        xs = values
        if values and min(values) > 0 and max(values) / min(values) >= 100:
            ax.set_xscale("log")
    else:   # a choice of names (or booleans): one column each, in first-seen order
        categories = list(dict.fromkeys(str(v) for v in values))
        xs = [categories.index(str(v)) for v in values]
        ax.set_xticks(range(len(categories)), categories)
    for state, fill in (("complete", "C0"), ("pruned", "none")):
        points = [(x, t["value"]) for x, t in zip(xs, trials) if t["state"] == state]
        if points:
            ax.scatter(*zip(*points), s=28, facecolors=fill, edgecolors="C0", zorder=3)
    ax.set_title(key)
    ax.set_xlabel(key)
    ax.set_ylabel(search["metric"])


def _curves_panel(ax, search: dict) -> None:
    """Complete trials solid, pruned ones dashed (they stop where the pruner judged them)."""
    pruned = {t["number"] for t in search["trials"] if t["state"] == "pruned"}
    for i, (number, curve) in enumerate(search["curves"].items()):
        if curve:
            ax.plot(*zip(*curve), color=f"C{i % 10}", linestyle="--" if number in pruned else "-",
                    label=f"trial {number}" + (" (pruned)" if number in pruned else ""))
    ax.set_title(f"best {len(search['curves'])} trials, per epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel(search["metric"])
    if search["curves"]:
        ax.legend(loc="best")
