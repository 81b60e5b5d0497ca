"""Pictures of an evaluation: what `bpcli eval CHECKPOINT --plot FILE` draws.

    evaluation_figure(evaluation) -> Figure      confusion heat map (+ most confidently wrong images), or a scatter

`evaluation` is inference.evaluate_with_outputs's result: the report, the raw
inputs (before preprocessing), targets, logits, class names and image shape.
"""

from __future__ import annotations

import numpy as np

from bpcli.nn.metrics import confusion_matrix, predict_classes, probabilities
from bpcli.plots.figures import require_matplotlib, style


def most_confident_mistakes(y: np.ndarray, p: np.ndarray, k: int = 24) -> np.ndarray:
    """Indices of up to k misclassified examples, the most confident first (p of the predicted class)."""
    pred = p.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    order = np.argsort(-p[wrong, pred[wrong]], kind="stable")
    return wrong[order[:k]]


def evaluation_figure(evaluation, rows: int = 4, cols: int = 6):
    """Regression: predicted against true. Classes: the confusion matrix as a heat map, and for images the
    rows x cols most confidently wrong examples, as published (before preprocessing)."""
    _, Figure = require_matplotlib()
    e = evaluation
    with style():
        if e.task == "regression":
            figure = Figure(figsize=(8, 7), dpi=100, layout="constrained")
            _scatter(figure.subplots(), e)
            return figure
        images = e.task == "multiclass" and e.image_shape is not None
        figure = Figure(figsize=(17, 8) if images else (8, 7), dpi=100, layout="constrained")
        left, right = figure.subfigures(1, 2, width_ratios=[1, 1.15]) if images else (figure, None)
        _heat_map(left, e)
        if images:
            _mistakes_grid(right, e, rows, cols)
    return figure


def _where(e) -> str:
    return f"{e.result['dataset']}, {e.result['split']} split ({e.result['n']} examples)"


def _confusion(e) -> tuple[np.ndarray, list[str]]:
    """Multiclass: the matrix evaluate_checkpoint reports. Binary: 0/1 decisions over every output."""
    if e.task == "multiclass":
        return np.array(e.result["confusion_matrix"]), list(e.class_names)
    pred = predict_classes(e.logits, "binary").ravel()
    return confusion_matrix(np.asarray(e.y).ravel().astype(np.int64), pred, 2), ["0", "1"]


def _heat_map(figure, e) -> None:
    """Counts in the cells; colour on a square-root scale, so a handful of mistakes still shows against the diagonal."""
    from matplotlib.colors import PowerNorm

    cm, names = _confusion(e)
    ax = figure.subplots()
    norm = PowerNorm(0.5, vmin=0, vmax=max(int(cm.max()), 1))
    image = ax.imshow(cm, cmap="Blues", norm=norm)
    figure.colorbar(image, ax=ax, label="examples", shrink=0.85)
    ticks = range(len(names))
    ax.set_xticks(ticks, names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right"
                  if max(map(len, names)) > 2 else "center")
    ax.set_yticks(ticks, names)
    ax.grid(False)
    if len(names) <= 20:
        for (t, p), count in np.ndenumerate(cm):
            ax.text(p, t, str(count), ha="center", va="center", fontsize=12 if len(names) <= 5 else 9,
                    color="white" if norm(count) > 0.6 else "black")
    ax.set(xlabel="predicted class", ylabel="true class",
           title=f"Confusion matrix: accuracy {e.result['accuracy']:.2%}\n{_where(e)}")


def _mistakes_grid(figure, e, rows: int, cols: int) -> None:
    """Pixels as published, on a fixed 0..255 scale for uint8 (so a faint digit looks faint), never transposed."""
    p = probabilities(e.logits, "multiclass")
    chosen = most_confident_mistakes(e.y, p, rows * cols)
    total = int(np.count_nonzero(p.argmax(axis=1) != e.y))
    figure.suptitle(f"The {len(chosen)} most confidently wrong of {total} mistakes", fontsize=12)
    axes = figure.subplots(rows, cols).ravel()
    low, high = (0, 255) if e.x.dtype == np.uint8 else (float(e.x.min()), float(e.x.max()))
    short = max(map(len, e.class_names)) <= 3  # "true 8 / pred 4" fits a cell; "T-shirt/top" needs its own line
    for ax in axes:
        ax.set_axis_off()
    for ax, i in zip(axes, chosen):
        true, pred = e.class_names[int(e.y[i])], e.class_names[int(p[i].argmax())]
        ax.imshow(e.x[i].reshape(e.image_shape), cmap="gray_r", vmin=low, vmax=high, interpolation="nearest")
        ax.set_title(f"true {true}{' / ' if short else chr(10)}pred {pred}\np={p[i].max():.3f}", fontsize=9)
    if total == 0:
        axes[0].text(0, 0.5, "no misclassified examples", fontsize=11)


def _scatter(ax, e) -> None:
    y = np.asarray(e.y, dtype=np.float64).reshape(e.logits.shape)
    for j in range(y.shape[1]):
        ax.scatter(y[:, j], e.logits[:, j], s=10, alpha=0.6, color=f"C{j % 10}",
                   label=f"output {j}" if y.shape[1] > 1 else None)
    low, high = float(min(y.min(), e.logits.min())), float(max(y.max(), e.logits.max()))
    ax.plot([low, high], [low, high], "--", color="0.4", lw=1, label="predicted = true")
    ax.set_aspect("equal")
    ax.legend(loc="upper left")
    ax.set(xlabel="true value", ylabel="predicted value",
           title=f"Predicted against true: R² {e.result['r2']:.4f}, MSE {e.result['mse']:.4g}\n{_where(e)}")
