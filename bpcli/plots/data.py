"""What data.augment does to images (`bpcli data show DATASET --augment CONFIG`): originals and distorted copies.

    augment_figure(originals, versions, title) -> Figure

originals: (k, rows, cols) pixels in [0, 1]; versions: a list of arrays of the same
shape, each the originals distorted once more. The first row of the grid holds the
originals, each row below one set of distortions, so a column follows one image.
"""

from __future__ import annotations

import numpy as np

from bpcli.plots.figures import require_matplotlib, style


def augment_figure(originals: np.ndarray, versions: list[np.ndarray], title: str):
    _, Figure = require_matplotlib()
    rows, cols = 1 + len(versions), len(originals)
    with style():
        figure = Figure(figsize=(1.1 * cols, 1.15 * rows + 0.4), dpi=100, layout="constrained")
        axes = figure.subplots(rows, cols, squeeze=False)
        for r, images in enumerate([originals, *versions]):
            for c, image in enumerate(images):
                ax = axes[r][c]
                ax.imshow(image, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
            axes[r][0].set_ylabel("original" if r == 0 else f"draw {r}", fontsize=9)
        figure.suptitle(title)
    return figure
