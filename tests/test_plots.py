"""Pictures (bpcli plot, bpcli eval --plot): what is drawn is what the logs and the evaluation say.

Run directories are written by hand here (metrics.jsonl, summary.json, layers.jsonl in the formats
bpcli writes), so each figure is compared with known values; one tiny real run of each kind checks
the commands end to end.
"""

import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bpcli.cli.app import app
from bpcli.config.loading import parse_config_text
from bpcli.config.sections import resolved_dict
from bpcli.tools.inference import evaluate_checkpoint, evaluate_with_outputs
from bpcli.nn.metrics import probabilities
from bpcli.plots.evaluation import evaluation_figure, most_confident_mistakes
from bpcli.plots.figures import save_figure
from bpcli.plots.training import read_run, training_figure
from bpcli.training.run import train_run

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LRS = [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]  # a step schedule: changes at epochs 3 and 5


TINY = """
model: {layers: [{type: dense, units: HIDDEN, activation: relu}, {type: dense, units: OUTPUTS}]}
loss: {name: LOSS}
optimizer: {name: adam, lr: 0.01}
data: {dataset: DATASET, batch_size: 500}
training: {epochs: 1, seed: 0}
output: {dir: RUNS, name: tiny}
"""
TASKS = {"mnist-mini": ("cross_entropy", 8, 10), "spirals": ("cross_entropy", 8, 3), "sine": ("mse", 4, 1)}


def train_tiny(runs: Path, dataset: str) -> Path:
    """One epoch of a one-hidden-layer network (a fraction of a second); returns the run directory."""
    loss, hidden, outputs = TASKS[dataset]
    text = TINY
    for key, value in (("RUNS", runs), ("DATASET", dataset), ("LOSS", loss), ("HIDDEN", hidden), ("OUTPUTS", outputs)):
        text = text.replace(key, str(value))
    train_run(resolved_dict(parse_config_text(text, "tiny.yaml")), "tiny.yaml")
    return runs / "tiny"


def metric_rows(n=6, accuracy=True, val=True, scale=1.0):
    rows = []
    for epoch, lr in zip(range(1, n + 1), LRS):
        row = {"epoch": epoch, "train_loss": scale * 2.0 / epoch}
        row.update({"train_accuracy": 0.5 + 0.05 * epoch} if accuracy else {})
        row.update({"val_loss": scale * 2.2 / epoch + 0.01 * epoch} if val else {})
        row.update({"val_accuracy": 0.45 + 0.06 * epoch} if val and accuracy else {})
        rows.append({**row, "lr": lr, "grad_norm": 1.0 / epoch, "seconds": 0.1})
    return rows


def layer_rows(n=6):
    """layers.jsonl as bpcli writes it: one object per layer with parameters per epoch."""
    layers = [("layers.0", "dense", "relu", 16), ("layers.2", "batchnorm", None, 16), ("layers.3", "dense", None, 3)]
    return [{"epoch": epoch, "layer": name, "type": kind, "activation": act, "units": units,
             "weight_norm": 3.0 + j, "grad_norm": 10.0 ** -j / epoch, "update_ratio": 1e-3, "act_mean": 0.4,
             "act_std": 0.7, "dead_fraction": 0.01 if act == "relu" else None, "saturated_fraction": None}
            for epoch in range(1, n + 1) for j, (name, kind, act, units) in enumerate(layers)]


def write_run(folder: Path, rows, summary=None, layers=None) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    if layers is not None:
        (folder / "layers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in layers))
    return folder


@pytest.fixture
def full_run(tmp_path) -> Path:
    summary = {"run_dir": "x", "stopped_because": "early stopping: val_loss did not improve for 2 epochs",
               "epochs_run": 6, "best_epoch": 4, "monitor": {"metric": "val_loss", "mode": "min", "best": 0.59}}
    return write_run(tmp_path / "full", metric_rows(), summary, layer_rows())


def panel(figure, title: str):
    return next(ax for ax in figure.axes if ax.get_title().startswith(title))


def line(ax, label: str):
    return next(item for item in ax.get_lines() if item.get_label() == label)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    return struct.unpack(">II", data[16:24])


# -- bpcli plot ---------------------------------------------------------------------------------------

def test_loss_and_accuracy_lines_are_the_logged_values(full_run):
    rows = metric_rows()
    figure = training_figure([read_run(full_run)])
    for title, metric in (("Loss", "loss"), ("Accuracy", "accuracy")):
        ax = panel(figure, title)
        for split, style in (("train", "-"), ("val", "--")):
            drawn = line(ax, f"full {split}")
            assert list(drawn.get_xdata()) == [r["epoch"] for r in rows]
            assert list(drawn.get_ydata()) == [r[f"{split}_{metric}"] for r in rows]
            assert drawn.get_linestyle() == style
    assert list(line(panel(figure, "Learning rate"), "full").get_ydata()) == LRS


def test_best_epoch_and_lr_changes_are_marked_where_the_logs_say(full_run):
    figure = training_figure([read_run(full_run)])
    for title in ("Loss", "Accuracy"):
        ax = panel(figure, title)
        assert list(line(ax, "full best epoch").get_xdata()) == [4, 4]
        assert list(line(ax, "full lr change").get_xdata()) == [3, 5]
        assert {t.get_text() for t in ax.texts} == {"best 4", "lr 0.01", "lr 0.001"}
    assert figure.get_suptitle().startswith("full: early stopping")


def test_layers_panel_draws_each_layers_gradient_norm_on_a_log_axis(full_run):
    ax = panel(training_figure([read_run(full_run)]), "Gradient norm per layer")
    assert ax.get_yscale() == "log"
    assert [item.get_label() for item in ax.get_lines()] == [
        "layers.0 dense relu 16", "layers.2 batchnorm 16", "layers.3 dense 3"]
    by_layer = {r["layer"]: [] for r in layer_rows()}
    for r in layer_rows():
        by_layer[r["layer"]].append(r["grad_norm"])
    assert [list(item.get_ydata()) for item in ax.get_lines()] == list(by_layer.values())


def test_a_run_without_summary_or_layers_is_drawn_without_those(tmp_path):
    run = read_run(write_run(tmp_path / "killed", metric_rows()))
    figure = training_figure([run])
    assert not any(item.get_label().endswith("best epoch") for ax in figure.axes for item in ax.get_lines())
    assert [ax.get_title() for ax in figure.axes] == ["Loss per epoch", "Accuracy per epoch",
                                                      "Learning rate (at each epoch's last batch)"]
    assert "no summary.json yet" in figure.get_suptitle() and "no layers.jsonl" in figure.get_suptitle()


def test_a_constant_learning_rate_is_drawn_from_zero(tmp_path):
    rows = [{**r, "lr": 0.01} for r in metric_rows()]
    figure = training_figure([read_run(write_run(tmp_path / "constant", rows))])
    assert panel(figure, "Learning rate").get_ylim() == (0, 0.02)


def test_a_regression_run_has_no_accuracy_panel_and_a_falling_loss_gets_a_log_axis(tmp_path):
    rows = [{**r, "train_loss": 10.0 ** -r["epoch"]} for r in metric_rows(accuracy=False)]
    figure = training_figure([read_run(write_run(tmp_path / "sine", rows, layers=layer_rows()))])
    titles = [ax.get_title() for ax in figure.axes]
    assert "Accuracy per epoch" not in titles and "Gradient norm per layer" in titles
    assert panel(figure, "Loss").get_yscale() == "log"


def test_several_runs_share_a_figure_one_colour_each(tmp_path, full_run):
    other = write_run(tmp_path / "other", metric_rows(scale=0.5), layers=layer_rows())
    ax = panel(training_figure([read_run(full_run), read_run(other)]), "Loss")
    colours = {name: {line(ax, f"{name} {split}").get_color() for split in ("train", "val")}
               for name in ("full", "other")}
    assert all(len(c) == 1 for c in colours.values()) and colours["full"] != colours["other"]
    assert list(line(ax, "other val").get_ydata()) == [r["val_loss"] for r in metric_rows(scale=0.5)]


def test_plot_command_writes_pngs_where_it_says(tmp_path, full_run, monkeypatch):
    result = runner.invoke(app, ["plot", str(full_run)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and result.stderr.strip() == f"wrote {full_run / 'plot.png'}"   # as eval --plot
    data = (full_run / "plot.png").read_bytes()
    assert png_size(data) == (1200, 800) and len(data) > 20_000
    other = write_run(tmp_path / "other", metric_rows(accuracy=False, val=False))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["plot", str(full_run), str(other)])
    assert result.exit_code == 0 and result.stdout == "" and result.stderr.strip() == "wrote compare.png"
    assert png_size((tmp_path / "compare.png").read_bytes()) == (1200, 800)
    assert not list(tmp_path.glob("*.tmp"))


def test_a_real_run_directory_is_plotted(tmp_path):
    result = runner.invoke(app, ["plot", str(train_tiny(tmp_path, "sine")), "--output", str(tmp_path / "a.svg")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a.svg").read_text().lstrip().startswith("<?xml")


def damaged(folder: Path) -> Path:
    folder.mkdir()
    (folder / "metrics.jsonl").write_text(json.dumps(metric_rows()[0]) + "\n{not json\n")
    return folder


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nowhere", "{p}/nowhere does not exist: give a run directory made by bpcli train"),
    (lambda p: p, "{p} has no metrics.jsonl, so it is not a run directory: give a run directory made by bpcli train"),
    (lambda p: damaged(p / "bad"), "{p}/bad/metrics.jsonl:2: damaged line, not JSON (Expecting property name "
                                   "enclosed in double quotes); fix or delete that line\n"),
    (lambda p: write_run(p / "empty", []), "{p}/empty/metrics.jsonl has no epochs yet"),
])
def test_bad_run_directories_get_one_paragraph_and_exit_5(tmp_path, make, message):
    result = runner.invoke(app, ["plot", str(make(tmp_path))])
    assert result.exit_code == 5 and result.output.startswith("error: " + message.format(p=tmp_path))


def test_a_row_still_being_written_is_left_out(tmp_path):
    folder = write_run(tmp_path / "running", metric_rows()[:3])
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "train_lo')
    assert [r["epoch"] for r in read_run(folder).metrics] == [1, 2, 3]


def test_only_picture_formats_are_written(full_run, tmp_path):
    result = runner.invoke(app, ["plot", str(full_run), "-o", str(tmp_path / "plot.jpg")])
    assert result.exit_code == 2 and "use a file name ending in .png, .svg or .pdf" in result.output


def test_a_picture_that_cannot_be_written_names_the_path_and_the_reason(full_run, tmp_path):
    (tmp_path / "taken.png").mkdir()  # a folder where the picture should go: unwritable even for root
    result = runner.invoke(app, ["plot", str(full_run), "-o", str(tmp_path / "taken.png")])
    assert (result.exit_code, result.output) == (5, f"error: cannot write plot {tmp_path / 'taken.png'}: "
                                                    "Is a directory\n")
    assert not list(tmp_path.glob("*.tmp"))


def test_without_matplotlib_the_commands_say_how_to_install_it(full_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    expected = ("error: plotting needs matplotlib, which is not installed: pip install matplotlib (in a checkout of "
                'bpcli: pip install -e ".[plot]"), then run the command again\n')
    for args in (["plot", str(full_run)], ["eval", str(full_run / "best.safetensors"), "--plot", "x.png"]):
        result = runner.invoke(app, args)
        assert (result.exit_code, result.output) == (2, expected)
    assert not (full_run / "plot.png").exists()


# -- bpcli eval --plot --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """A 784-8-10 network after one epoch on mnist-mini: 60% right, so thousands of mistakes to rank."""
    return train_tiny(tmp_path_factory.mktemp("digits"), "mnist-mini") / "checkpoints" / "best.safetensors"


def test_most_confident_mistakes_skips_right_answers_and_ranks_by_confidence():
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.95, 0.05], [0.6, 0.4]])
    assert most_confident_mistakes(np.array([0, 0, 0, 1, 1]), p, k=3).tolist() == [3, 1, 2]
    assert most_confident_mistakes(np.array([0, 1, 1, 0, 0]), p).tolist() == []


@pytest.fixture(scope="module")
def digits_figure(digits):
    evaluation = evaluate_with_outputs(digits)
    return evaluation, evaluation_figure(evaluation)


def test_the_heat_map_is_the_evaluated_confusion_matrix(digits, digits_figure):
    heat_map = digits_figure[1].subfigs[0].axes[0]
    assert heat_map.images[0].get_array().tolist() == evaluate_checkpoint(digits)["confusion_matrix"]
    assert [t.get_text() for t in heat_map.get_xticklabels()] == [str(d) for d in range(10)]
    assert [t.get_text() for t in heat_map.texts][:3] == [str(c) for c in heat_map.images[0].get_array()[0, :3]]


def test_the_grid_shows_the_most_confidently_wrong_raw_images(digits_figure):
    e, figure = digits_figure
    p = probabilities(e.logits, "multiclass")
    shown = [ax for ax in figure.subfigs[1].axes if ax.images]
    assert len(shown) == 24 and e.x.dtype == np.uint8
    confidence = []
    for ax in shown:
        pixels = ax.images[0].get_array()
        matches = np.flatnonzero((e.x == pixels).all(axis=(1, 2)))  # the raw uint8 image, upright
        true, predicted = ax.get_title().split("\n")[0].removeprefix("true ").split(" / pred ")
        i = next(i for i in matches if e.y[i] == int(true) and p[i].argmax() == int(predicted))
        assert true != predicted and ax.get_title().endswith(f"p={p[i].max():.3f}")
        confidence.append(p[i].max())
    wrong = p.argmax(axis=1) != e.y
    assert confidence == sorted(confidence, reverse=True)
    assert np.count_nonzero(p[wrong].max(axis=1) > confidence[-1]) <= 23


def test_eval_plot_writes_the_picture_and_leaves_the_report_alone(digits, tmp_path):
    plain = runner.invoke(app, ["eval", str(digits), "--json"])
    result = runner.invoke(app, ["eval", str(digits), "--json", "--plot", str(tmp_path / "eval.png")])
    assert result.exit_code == 0 and result.stdout == plain.stdout
    assert result.stderr.strip() == f"wrote {tmp_path / 'eval.png'}"
    assert png_size((tmp_path / "eval.png").read_bytes()) == (1700, 800)


def test_eval_plot_of_points_is_a_heat_map_and_of_regression_a_scatter(tmp_path):
    for dataset in ("spirals", "sine"):
        e = evaluate_with_outputs(train_tiny(tmp_path / dataset, dataset) / "checkpoints" / "best.safetensors")
        figure = evaluation_figure(e)
        assert not figure.subfigs and e.image_shape is None
        if dataset == "spirals":
            assert figure.axes[0].images[0].get_array().tolist() == e.result["confusion_matrix"]
        else:
            points = figure.axes[0].collections[0].get_offsets()
            assert np.allclose(points, np.column_stack([e.y.ravel(), e.logits.ravel()]))
        assert png_size(save_figure(figure, tmp_path / f"{dataset}.png").read_bytes()) == (800, 700)


def cosine(epochs: int, lr: float = 0.1, min_lr: float = 1e-9) -> list[float]:
    return [min_lr + (lr - min_lr) * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(1, epochs + 1)]


@pytest.mark.parametrize("schedule, rates, steps, log", [
    ("cosine to a tiny min_lr", cosine(40), [], False),
    ("warmup then cosine", [0.02 * e for e in range(1, 6)] + cosine(35), [], False),
    ("constant", [0.05] * 20, [], False),
    ("exponential", [0.1 * 0.9 ** e for e in range(40)], [], False),
    ("step", [0.1] * 10 + [0.01] * 10 + [0.001] * 10, [11, 21], True),
    ("reduce on plateau", [0.1] * 12 + [0.05] * 5 + [0.025] * 8, [13, 18], False),
])
def test_only_steps_of_the_lr_are_marked_and_a_smooth_schedule_keeps_a_linear_axis(tmp_path, schedule, rates,
                                                                                   steps, log):
    """A cosine schedule's last tiny lr squashed a log axis, and each of its epochs was marked 'lr changed'."""
    rows = [{"epoch": e, "train_loss": 1.0 / e, "lr": lr, "grad_norm": 1.0, "seconds": 0.1}
            for e, lr in enumerate(rates, start=1)]
    run = read_run(write_run(tmp_path / "r", rows))
    assert [epoch for epoch, _ in run.lr_changes()] == steps
    figure = training_figure([run])
    assert (panel(figure, "Learning rate").get_yscale() == "log") is log
    marked = [item for item in panel(figure, "Loss").get_lines() if item.get_label().endswith("lr change")]
    assert [list(item.get_xdata()) for item in marked] == ([steps] if steps else [])
