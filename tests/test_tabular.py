"""Your own table of data, end to end (issue 15): test splits, columns by name, scaled targets, categories.

Each test trains a tiny network on a small CSV written here, in this process (Typer's runner),
and checks what a user sees: the summary, the exit code and message of eval and predict, the
checkpoint's recorded columns and statistics.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

import bpcli
from bpcli.cli.app import app
from bpcli.cli.train import next_step
from bpcli.config.loading import load_config
from bpcli.data.tables import file_sha256
from bpcli.training.checkpoint import load_checkpoint

runner = CliRunner()

CONFIG = """
model:
  layers:
    - {type: dense, units: 16, activation: relu}
    - {type: dense, units: OUTPUTS}
loss: {name: LOSS}
optimizer: {name: adam, lr: 0.02}
data:
  dataset: DATASET
  options: OPTIONS
  preprocess: standardize
  batch_size: 16
EXTRA
training: {epochs: EPOCHS, seed: 0}
diagnostics: {enabled: false}
output: {dir: RUNS, name: run}
"""


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, result.stderr + result.stdout
    return result


def refused(result, code: int, *parts: str) -> str:
    assert result.exit_code == code, result.stderr + result.stdout
    message = result.stderr
    assert "Traceback" not in message and all(part in message for part in parts), message
    return message


def write_config(folder: Path, dataset, *, options=None, loss="cross_entropy", outputs=3, extra="", epochs=8,
                 runs=None) -> Path:
    path = folder / "config.yaml"
    text = (CONFIG.replace("DATASET", json.dumps(str(dataset))).replace("OPTIONS", json.dumps(options or {}))
            .replace("LOSS", loss).replace("OUTPUTS", str(outputs)).replace("EXTRA", extra)
            .replace("EPOCHS", str(epochs)).replace("RUNS", str(runs or folder / "runs")))
    path.write_text(text)
    return path


def blobs(n: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated classes in 2-D, with two noise columns."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centres = np.array([[0, 0], [4, 0], [0, 4]])
    x = np.hstack([centres[y] + rng.normal(0, 0.5, (n, 2)), rng.normal(0, 1, (n, 2))])
    return x, y


def write_csv(path: Path, header: list[str], rows) -> Path:
    path.write_text(",".join(header) + "\n" + "".join(",".join(str(c) for c in row) + "\n" for row in rows))
    return path


def species_csv(folder: Path, n: int = 90, name: str = "flowers.csv") -> Path:
    """a, b, c, d, then the class as text in a column named 'species' (not 'label')."""
    x, y = blobs(n)
    rows = [[f"{v:.4f}" for v in xs] + [("setosa", "versicolor", "virginica")[c]] for xs, c in zip(x, y)]
    return write_csv(folder / name, ["a", "b", "c", "d", "species"], rows)


def train(config: Path):
    result = ok(cli("train", config, "-q", "--json"))
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """A 'species' CSV trained with data.test_fraction 0.2: the run and its summary."""
    folder = tmp_path_factory.mktemp("held_out")
    data = species_csv(folder)
    summary = train(write_config(folder, data, options={"target": "species"}, extra="  test_fraction: 0.2"))
    return {"folder": folder, "data": data, "summary": summary, "run": Path(summary["run_dir"])}


# -- 1. a test set for a CSV ---------------------------------------------------------------------------

def test_test_fraction_holds_out_a_stratified_seeded_test_set_that_eval_scores(held_out):
    summary = held_out["summary"]
    assert summary["test"] is not None and summary["data"]["n_test"] == 18   # 20% of 90: 6 of each class
    assert len(summary["data"]["test_hash"]) == 16
    result = json.loads(ok(cli("eval", held_out["run"], "--json")).stdout)
    assert result["split"] == "test" and result["n"] == 18
    assert [row["support"] for row in result["per_class"]] == [6, 6, 6]
    assert result["accuracy"] == pytest.approx(summary["test"]["accuracy"])


def test_the_same_seed_holds_out_the_same_rows_and_another_seed_others(held_out, tmp_path):
    config = write_config(tmp_path, held_out["data"], options={"target": "species"},
                          extra="  test_fraction: 0.2", epochs=1)
    again = train(config)
    assert again["data"]["test_hash"] == held_out["summary"]["data"]["test_hash"]
    other = json.loads(ok(cli("train", config, "-q", "--json", "--set", "training.seed=1",
                              "--set", "output.name=other")).stdout)
    assert other["data"]["test_hash"] != again["data"]["test_hash"]


def test_data_test_names_a_file_of_test_rows(tmp_path):
    data, test = species_csv(tmp_path), species_csv(tmp_path, 30, "test-rows.csv")
    summary = train(write_config(tmp_path, data, options={"target": "species"}, extra=f"  test: {test}"))
    assert summary["data"]["n_test"] == 30 and summary["data"]["n_train"] + summary["data"]["n_val"] == 90
    assert summary["data"]["files"]["test"] == {"path": str(test), "sha256": file_sha256(test)}
    assert json.loads(ok(cli("eval", summary["run_dir"], "--json")).stdout)["n"] == 30


def test_without_a_test_set_the_printed_next_step_works(tmp_path):
    data = species_csv(tmp_path)
    result = ok(cli("train", write_config(tmp_path, data, options={"target": "species"}, epochs=2), "-q"))
    step = result.stdout.strip().splitlines()[-1]
    assert step.startswith("Evaluate with: bpcli eval ") and step.endswith(" --split val")
    ok(cli(*step.removeprefix("Evaluate with: bpcli ").split()))
    assert next_step({"run_dir": "r", "final_weights": "last", "test": None, "data": {"n_val": 0}}) == \
        "bpcli eval r/checkpoints/last.safetensors --split train"


@pytest.mark.parametrize("extra, key, must_be", [
    ("  test_fraction: 0.2", "data.test_fraction", "must be 0: spirals has a test set of its own"),
    ("  test: t.csv", "data.test", "must be null: spirals has a test set of its own"),
])
def test_a_test_split_of_a_named_dataset_is_a_config_error(tmp_path, extra, key, must_be):
    refused(cli("train", write_config(tmp_path, "spirals", extra=extra), "-q"), 2, key, must_be)


# -- 2. eval reads another CSV with the checkpoint's columns; --target overrides -----------------------

def test_eval_on_another_csv_uses_the_trained_target_column(held_out, tmp_path):
    other = species_csv(tmp_path, 30, "more.csv")
    result = json.loads(ok(cli("eval", held_out["run"], "--dataset", other, "--json")).stdout)
    assert result["n"] == 30 and result["accuracy"] > 0.8


def test_eval_target_overrides_the_column(held_out, tmp_path):
    text = species_csv(tmp_path, 30, "renamed.csv").read_text().replace("species", "kind", 1)
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(text)
    refused(cli("eval", held_out["run"], "--dataset", renamed), 4, "no target column 'species'", "Set --target")
    assert json.loads(ok(cli("eval", held_out["run"], "--dataset", renamed, "--target", "kind",
                             "--json")).stdout)["n"] == 30


# -- 3. a file given to eval is evaluated whole -----------------------------------------------------------

def test_a_file_given_to_eval_is_scored_whole_unless_a_split_is_asked(held_out, tmp_path):
    other = species_csv(tmp_path, 40, "forty.csv")
    whole = json.loads(ok(cli("eval", held_out["run"], "--dataset", other, "--json")).stdout)
    assert (whole["split"], whole["n"]) == ("all", 40)
    val = json.loads(ok(cli("eval", held_out["run"], "--dataset", other, "--split", "val", "--json")).stdout)
    assert 0 < val["n"] < 40
    trained = json.loads(ok(cli("eval", held_out["run"], "--split", "all", "--json")).stdout)
    assert trained["n"] == 90


# -- 4. predict matches columns by name ----------------------------------------------------------------

def test_predict_reorders_columns_by_name(held_out, tmp_path):
    lines = held_out["data"].read_text().splitlines()
    order = [3, 4, 1, 0, 2]   # d, species, b, a, c
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text("".join(",".join(line.split(",")[i] for i in order) + "\n" for line in lines))
    expected = ok(cli("predict", held_out["run"], held_out["data"])).stdout
    assert ok(cli("predict", held_out["run"], shuffled)).stdout == expected


def test_predict_names_missing_and_unexpected_columns(held_out, tmp_path):
    text = held_out["data"].read_text().replace("a,b,c,d", "a,b,cc,d", 1)
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(text)
    refused(cli("predict", held_out["run"], renamed), 4,
            "the model needs the column 'c', which the header lacks; columns it was not trained on: 'cc', "
            "'species'. The model's columns: a, b, c, d")


def test_a_header_less_csv_is_taken_by_count(held_out, tmp_path):
    lines = held_out["data"].read_text().splitlines()
    bare = tmp_path / "bare.csv"
    bare.write_text("".join(",".join(line.split(",")[:4]) + "\n" for line in lines[1:]))
    named = tmp_path / "named.csv"
    named.write_text("".join(",".join(line.split(",")[:4]) + "\n" for line in lines))
    assert ok(cli("predict", held_out["run"], bare)).stdout == ok(cli("predict", held_out["run"], named)).stdout


# -- 5. a model trained on some features predicts from the same CSV -------------------------------------

def test_a_model_trained_on_chosen_features_predicts_from_the_same_csv(tmp_path):
    data = species_csv(tmp_path)
    summary = train(write_config(tmp_path, data, options={"target": "species", "features": ["b", "a"]}, epochs=2))
    run = summary["run_dir"]
    lines = data.read_text().splitlines()
    only = tmp_path / "only.csv"
    only.write_text("".join(",".join([line.split(",")[1], line.split(",")[0]]) + "\n" for line in lines))
    predictions = ok(cli("predict", run, data)).stdout
    assert predictions == ok(cli("predict", run, only)).stdout and predictions.count("\n") == 91


# -- 6. relative paths -------------------------------------------------------------------------------------

def test_relative_paths_resolve_from_the_config_folder_and_are_stored_absolute(tmp_path, monkeypatch):
    (tmp_path / "project" / "data").mkdir(parents=True)
    data = species_csv(tmp_path / "project" / "data")
    config = write_config(tmp_path / "project", "data/flowers.csv", options={"target": "species"}, epochs=1,
                          runs=tmp_path / "runs")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    summary = train(config)
    run = Path(summary["run_dir"])
    stored = load_checkpoint(run / "checkpoints" / "best.safetensors").meta
    assert stored["config"]["data"]["dataset"] == str(data)
    assert stored["data_info"]["files"]["dataset"]["sha256"] == file_sha256(data)
    monkeypatch.chdir(tmp_path)
    ok(cli("eval", run, "--split", "val"))
    assert load_config(config).data.dataset == str(data)


def test_a_changed_data_file_is_reported_not_used(held_out, tmp_path):
    data = species_csv(tmp_path)
    summary = train(write_config(tmp_path, data, options={"target": "species"}, epochs=1))
    data.write_text(data.read_text().replace("setosa", "virginica", 1))
    refused(cli("eval", summary["run_dir"], "--split", "val"), 4, f"{data} changed since the run was trained on it")
    refused(cli("train", tmp_path / "config.yaml", "-q", "--resume", summary["run_dir"]), 5, "changed since")


# -- 7. regression targets are standardized -------------------------------------------------------------

def regression_csv(folder: Path, n: int = 120) -> Path:
    """y = 152 + 77 * (x1 - x2) / 2 + noise: a target of about 152 +- 77, like scikit-learn's diabetes."""
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (n, 2))
    y = 152 + 77 * (x[:, 0] - x[:, 1]) / np.sqrt(2) + rng.normal(0, 5, n)
    return write_csv(folder / "reg.csv", ["x1", "x2", "y"], [[f"{a:.5f}", f"{b:.5f}", f"{t:.3f}"]
                                                             for (a, b), t in zip(x, y)])


def test_regression_targets_are_standardized_and_reported_in_their_units(tmp_path):
    data = regression_csv(tmp_path)
    summary = train(write_config(tmp_path, data, options={"target": "y"}, loss="mse", outputs=1, epochs=30,
                                 extra="  test_fraction: 0.2"))
    run = Path(summary["run_dir"])
    tensors = load_file(run / "checkpoints" / "best.safetensors")
    assert 130 < tensors["preprocess.target_offset"][0] < 175 and 1 / 90 < tensors["preprocess.target_scale"][0] < 1 / 60
    test = summary["test"]
    assert test["r2"] > 0.9 and test["mse"] < 0.1 * 77 ** 2 and test["loss"] == test["mse"]
    evaluated = json.loads(ok(cli("eval", run, "--json")).stdout)
    assert evaluated["mse"] == pytest.approx(test["mse"], rel=1e-5)
    values = bpcli.load(run).predict(np.array([[1.0, -1.0], [0.0, 0.0]]))
    assert values[0] == pytest.approx(152 + 77 * np.sqrt(2), abs=25) and values[1] == pytest.approx(152, abs=15)
    rows = ok(cli("predict", run, data)).stdout.splitlines()
    assert rows[0] == "y0" and 50 < float(rows[1]) < 260


def test_target_preprocess_none_trains_on_the_raw_target_and_standardize_refuses_classes(tmp_path):
    data = regression_csv(tmp_path)
    summary = train(write_config(tmp_path, data, options={"target": "y"}, loss="mse", outputs=1, epochs=1,
                                 extra="  target_preprocess: none"))
    assert "preprocess.target_offset" not in load_file(Path(summary["run_dir"]) / "checkpoints" / "last.safetensors")
    refused(cli("train", write_config(tmp_path, "spirals", extra="  target_preprocess: standardize"), "-q"), 2,
            "data.target_preprocess: must be auto or none: cross_entropy takes class labels")


# -- 8. categorical columns and missing values -------------------------------------------------------------

def colours_csv(folder: Path, gap: bool = False) -> Path:
    """x, colour (text), label: the colour decides the class; one cell of x empty if `gap`."""
    rng = np.random.default_rng(2)
    colours = np.array(["red", "green", "blue"])[np.arange(60) % 3]
    rows = [[f"{v:.3f}", c, i % 3] for i, (v, c) in enumerate(zip(rng.normal(0, 1, 60), colours))]
    if gap:
        rows[4][0] = ""
    return write_csv(folder / "colours.csv", ["x", "colour", "label"], rows)


def test_a_text_column_or_an_empty_cell_is_refused_naming_line_and_column(tmp_path):
    refused(cli("train", write_config(tmp_path, colours_csv(tmp_path)), "-q"), 4,
            ":2: column 'colour' holds 'red', not a number; if the column holds categories, list it in "
            "data.options.categorical")
    gap = colours_csv(tmp_path, gap=True)
    refused(cli("train", write_config(tmp_path, gap, options={"categorical": ["colour"]}), "-q"), 4,
            f"{gap}:6: column 'x' is empty (a missing value)", "data.options.missing: mean or median")


def test_categorical_columns_are_one_hot_and_gaps_filled_from_the_training_split(tmp_path):
    data = colours_csv(tmp_path, gap=True)
    summary = train(write_config(tmp_path, data, options={"categorical": ["colour"], "missing": "median"},
                                 epochs=30))
    run = Path(summary["run_dir"])
    columns = load_checkpoint(run / "checkpoints" / "best.safetensors").meta["data_info"]["columns"]
    assert columns["categories"] == {"colour": ["blue", "green", "red"]} and set(columns["fill"]) == {"x"}
    assert columns["features"] == ["x", "colour"] and columns["target"] == "label"
    assert load_checkpoint(run / "checkpoints" / "best.safetensors").meta["input_dim"] == 4
    model = bpcli.load(run)
    assert list(model.predict(np.array([[0.1, "red"], [np.nan, "green"], ["", "blue"]], dtype=object))) == [
        0, 1, 2]
    unseen = write_csv(tmp_path / "unseen.csv", ["colour", "x"], [["purple", "0.2"], ["red", ""]])
    rows = ok(cli("predict", run, unseen)).stdout.splitlines()
    assert len(rows) == 3 and rows[2].startswith("0,")


def test_a_category_the_training_split_lacks_gives_an_all_zero_row(tmp_path):
    from bpcli.data.columns import ColumnEncoder

    encoder = ColumnEncoder("label", ["x", "colour"], ["colour"], "mean")
    x = np.array([[1.0, 0], [3.0, 1], [np.nan, 1]])   # codes into ("blue", "red")
    encoder.fit(x[:2], {"colour": ("blue", "red")})
    assert encoder.fill == {"x": 2.0} and encoder.categories == {"colour": ["blue", "red"]}
    out = encoder.transform(np.array([[np.nan, 0], [5.0, 1], [1.0, np.nan]]), {"colour": ("purple", "red")})
    assert out.tolist() == [[2.0, 0, 0], [5.0, 0, 1], [1.0, 0, 0]]
    assert encoder.input_names() == ["x", "colour=blue", "colour=red"]


# -- the shipped example ----------------------------------------------------------------------------------

def test_the_shipped_tabular_config_trains_from_any_folder_on_the_shipped_wine_csv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = json.loads(ok(cli("train", "tabular", "-q", "--json", "--set", "training.epochs=3",
                                                "--set", "output.name=wine")).stdout)
    assert Path(summary["data"]["files"]["dataset"]["path"]).name == "wine.csv"
    assert summary["data"]["files"]["dataset"]["sha256"] == \
        "0b1878a85c7319cb85c8f5eed4731bac48b130b99bb19169c8ac7f55fbc984f7"
    assert summary["data"]["n_test"] == 36 and summary["test"]["accuracy"] > 0.5
