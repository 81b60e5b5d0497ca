"""What every picture shares: matplotlib (or how to install it), the house style, and saving.

    require_matplotlib() -> (matplotlib, Figure)     the modules, or a MissingExtraError naming the pip command
    style()                                          a with-block: fonts and grid of every bpcli picture
    save_figure(figure, path) -> Path                PNG (or .svg, .pdf), written atomically

matplotlib is an optional extra (the `plot` extra of bpcli, or plain matplotlib), imported only inside
these functions and the ones that draw. Figures are matplotlib.figure.Figure
objects, never pyplot's: no display, no global backend, and savefig renders the
PNG with Agg.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path

from bpcli.errors import ConfigError, MissingExtraError
from bpcli.fileio import write_file

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 12, "axes.grid": True,
         "grid.alpha": 0.3}


def require_matplotlib():
    """The matplotlib modules the pictures use, or a MissingExtraError saying how to install them."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("plotting needs matplotlib, which is not installed: pip install matplotlib (in a "
                                'checkout of bpcli: pip install -e ".[plot]"), then run the command again') from None
    return matplotlib, Figure


@contextmanager
def style():
    """Fonts of 9 pt and more, readable at 100% zoom; rc settings only inside the block (no global change)."""
    matplotlib, _ = require_matplotlib()
    with matplotlib.rc_context(STYLE):
        yield


def save_figure(figure, path: str | Path) -> Path:
    """Render to memory, then replace `path` atomically, so a reader never sees half a PNG."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"cannot write a picture to {path}: use a file name ending in .png, .svg or .pdf")
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=100)
    write_file(path, buffer.getvalue(), "plot")
    return path
