"""`bpcli data list|info|show|download|import`: the datasets bpcli knows and the cache that holds them."""

from __future__ import annotations

from typing import List, Optional

import typer

from bpcli.cli.common import PlainHelp, console, print_json, user_errors

app = typer.Typer(help="List, inspect, download and import datasets.", no_args_is_help=True)

DATA_DIR = typer.Option(None, "--data-dir", help="Cache folder (default: $BPCLI_DATA_DIR or the per-user cache).")


class DownloadProgress:
    """A Rich progress bar per file (bytes, speed, time left) on stderr, fed by download.fetch.

    It draws only on a terminal (without colour under NO_COLOR): a bar redrawn into
    a log or a pipe is noise (and cursor codes), so there it stays silent. The bars
    are made at the first download: most runs load a cached or generated dataset and
    need not import rich.progress (a tenth of a second of start-up) at all.
    """

    def __init__(self):
        self.progress, self.tasks = None, {}

    def __call__(self, name: str, done: int, total: int | None) -> None:
        if self.progress is None:   # the first download: draw from here on
            self.progress = self.bars()
            self.progress.start()
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total)
        self.progress.update(self.tasks[name], completed=done, total=total)

    @staticmethod
    def bars():
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        err = console(stderr=True)
        return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        TimeRemainingColumn(), console=err, disable=not err.is_terminal)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()


@app.command("list", cls=PlainHelp)
@user_errors
def list_datasets(data_dir: Optional[str] = DATA_DIR,
                  as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the named datasets: kind, size, where they come from, and whether they are cached.

    Example: bpcli data list
    """
    from bpcli.data.catalog import DATASETS, IdxSource, is_cached

    rows = []
    for name, entry in DATASETS.items():
        cached = is_cached(name, data_dir)
        origin = ("shipped" if entry.shipped else "download") if isinstance(entry, IdxSource) else "generated"
        rows.append({"name": name, "kind": entry.kind, "description": entry.description, "origin": origin,
                     "cached": "-" if cached is None else ("yes" if cached else "no")})
    if as_json:
        return print_json(rows)
    from rich.table import Table

    table = Table(title="Datasets (or give a path to your own .csv / .npz)")
    for column in ("name", "kind", "description", "origin", "cached"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row.values())
    console().print(table)


@app.command(cls=PlainHelp)
@user_errors
def info(name: str = typer.Argument(..., help="A dataset name or a path to a .csv / .npz file."),
         target: Optional[str] = typer.Option(None, help="CSV: the column to predict."),
         data_dir: Optional[str] = DATA_DIR,
         as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Shapes, value range and class counts of a dataset.

    Example: bpcli data info mnist-mini
    """
    from bpcli.data.catalog import load_dataset
    from bpcli.data.dataset import describe_dataset

    options = {"target": target} if target else {}
    with DownloadProgress() as progress:
        dataset = load_dataset(name, data_dir=data_dir, options=options, on_progress=progress)
    summary = describe_dataset(dataset)
    if as_json:
        return print_json(summary)
    out = console()
    out.print(f"[bold]{summary['name']}[/] ({summary['kind']}) from {summary['source']}")
    for split in ("train", "test"):
        if split in summary:
            s = summary[split]
            out.print(f"  {split}: x {tuple(s['x_shape'])} {s['x_dtype']} in [{s['x_min']:g}, {s['x_max']:g}], "
                      f"y {tuple(s['y_shape'])}")
            if "class_counts" in s:
                out.print("    classes: " + ", ".join(f"{k}: {v}" for k, v in s["class_counts"].items()))


@app.command(cls=PlainHelp)
@user_errors
def show(name: str = typer.Argument(..., help="An image dataset's name (mnist-mini, mnist, fashion-mnist)."),
         augment: Optional[str] = typer.Option(None, "--augment", metavar="CONFIG",
                                               help="A config whose data.augment distorts the images."),
         images: int = typer.Option(10, "--images", min=1, max=40, help="How many images (one per class first)."),
         draws: int = typer.Option(4, "--draws", min=1, max=12, help="Distorted versions of each image."),
         output: str = typer.Option("data-show.png", "--output", "-o", metavar="FILE.png",
                                    help="Picture file (.png, .svg or .pdf)."),
         data_dir: Optional[str] = DATA_DIR) -> None:
    """A grid of a dataset's images and, with --augment, the same images distorted as training would see
    them, so the settings can be judged by eye. Needs matplotlib.

    Example: bpcli data show mnist-mini --augment configs/quickstart-augment.yaml
    """
    from bpcli.config.loading import load_config
    from bpcli.data.augment import sample_images, show_augmented
    from bpcli.data.catalog import load_dataset
    from bpcli.plots.data import augment_figure
    from bpcli.plots.figures import require_matplotlib, save_figure

    require_matplotlib()
    options = load_config(augment).data.augment if augment else None
    with DownloadProgress() as progress:
        dataset = load_dataset(name, data_dir=data_dir, on_progress=progress)
    originals = sample_images(dataset, images)
    versions = show_augmented(originals, options, draws) if options else []
    what = f"{name}: {images} images" + (f", {draws} draws of data.augment from {augment}" if options else "")
    typer.echo(f"wrote {save_figure(augment_figure(originals, versions, what), output)}", err=True)


@app.command(cls=PlainHelp)
@user_errors
def download(name: str = typer.Argument(..., help="mnist or fashion-mnist."),
             data_dir: Optional[str] = DATA_DIR,
             mirror: Optional[List[str]] = typer.Option(None, help="Base URL to download from instead "
                                                        "(repeatable; '{dataset}' is replaced by the name).")) -> None:
    """Download a dataset once into the cache, verifying every file by SHA-256.

    Example: bpcli data download fashion-mnist
    """
    from bpcli.data.catalog import DATASETS, IdxSource, dataset_dir, load_idx_dataset
    from bpcli.errors import DataError

    entry = DATASETS.get(name)
    if not isinstance(entry, IdxSource) or entry.shipped:
        raise DataError(f"nothing to download for {name!r}: downloadable datasets are mnist and fashion-mnist")
    with DownloadProgress() as progress:
        load_idx_dataset(name, data_dir=data_dir, mirrors=mirror or None, on_progress=progress)
    typer.echo(f"{name} is ready in {dataset_dir(name, data_dir)}")


@app.command("import", cls=PlainHelp)
@user_errors
def import_(name: str = typer.Argument(..., help="mnist or fashion-mnist."),
            directory: str = typer.Argument(..., help="Folder holding the four IDX files (.gz or raw)."),
            data_dir: Optional[str] = DATA_DIR) -> None:
    """Check four IDX files you already have and put them in the cache.

    Example: bpcli data import fashion-mnist /usr/share/datasets/fashion-mnist
    """
    from bpcli.data.catalog import dataset_dir, import_dataset

    paths = import_dataset(name, directory, data_dir)
    typer.echo(f"imported {len(paths)} verified files into {dataset_dir(name, data_dir)}")
