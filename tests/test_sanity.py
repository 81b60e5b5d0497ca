"""`bpcli train --sanity` (initial loss, l2 in the loss, overfitting a tiny subset) and the loss sparkline."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bpcli.cli.app import app
from bpcli.cli.train import loss_sparklines
from bpcli.config.loading import load_config
from bpcli.config.sections import resolved_dict
from bpcli.nn.losses import LOSSES
from bpcli.nn.metrics import sparkline
from bpcli.training.run import prepare_data
from bpcli.tools.sanity import check_initial_loss, run_checks, sanity_check, without_regularization, zero_output_loss
from bpcli.nn.losses import build_loss

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def config(name, *sets):
    return load_config(ROOT / "configs" / name, list(sets))


def by_name(checks):
    return {check.name: check for check in checks}


@pytest.fixture(scope="module")
def quickstart():
    return by_name(sanity_check(config("quickstart.yaml")))


# -- the checks ------------------------------------------------------------------------------------

def test_quickstart_initial_loss_is_near_ln_10_without_the_penalty(quickstart):
    check = quickstart["initial loss"]
    assert check.passed and check.values["expected"] == pytest.approx(math.log(10))
    assert math.log(10) < check.values["loss"] < 1.1 * math.log(10)   # small random logits cost a little more
    assert check.values["penalty"] == pytest.approx(0.1035, abs=1e-3)  # l2 1e-4: reported, not added
    assert "not included" in check.note and check.expected == "ln 10 = 2.303 ±20%"


def test_total_loss_rises_with_l2_by_exactly_the_penalty(quickstart):
    check = quickstart["l2 in the loss"]
    totals = check.values["loss"]
    assert check.passed and check.values["l2"] == [0.0, 0.01, 0.1] and totals[0] < totals[1] < totals[2]
    assert (totals[2] - totals[0]) / (totals[1] - totals[0]) == pytest.approx(10, rel=1e-4)  # linear in l2


def test_quickstart_overfits_100_examples_with_regularization_off(quickstart):
    check = quickstart["overfit subset"]
    assert check.passed and check.values["loss"] < 0.05 and check.values["accuracy"] == 1.0
    assert check.values["epochs"] < 50 and check.values["steps"] == 2 * check.values["epochs"]  # batch 64 of 100
    assert "turned off: l2 0.0001, dropout" in check.note


def test_xor_passes_and_fails_with_a_learning_rate_of_1e_9():
    good = by_name(sanity_check(config("xor.yaml")))
    assert all(c.passed for c in good.values()) and good["overfit subset"].values["accuracy"] == 1.0
    assert good["initial loss"].values["expected"] == pytest.approx(math.log(2))
    broken = by_name(sanity_check(config("xor.yaml", "optimizer.lr=1e-9")))["overfit subset"]
    assert not broken.passed and broken.values["loss"] > 0.69 and broken.values["epochs"] == 51  # stalled
    assert "less than 0.1% in 50 epochs" in broken.note


def test_sine_regression_passes_against_the_zero_and_mean_predictors():
    checks = by_name(sanity_check(config("sine.yaml", "data.target_preprocess=none")))
    assert all(c.passed for c in checks.values())
    initial = checks["initial loss"]
    assert initial.expected.startswith("mean(y²) = 0.50") and initial.values["low"] < initial.values["loss"]
    assert checks["overfit subset"].values["target"] == pytest.approx(0.0054, abs=3e-4)  # 1% of var(y)
    checks = by_name(sanity_check(config("sine.yaml")))   # standardized targets (the default): mean(y²) = var = 1
    assert all(c.passed for c in checks.values()) and checks["initial loss"].expected.startswith("mean(y²) = 1 ")
    assert checks["overfit subset"].values["target"] == pytest.approx(0.01, abs=2e-3)   # of 100 examples


def test_raw_pixels_fail_the_initial_loss():
    cfg = config("quickstart.yaml", "data.preprocess=none")     # 0-255 inputs: logits in the hundreds
    check = check_initial_loss(cfg, prepare_data(cfg))
    assert not check.passed and check.values["loss"] > 10 * math.log(10)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_has_a_zero_output_loss_matching_its_own_value(name):
    loss = build_loss({"name": name})
    rng = np.random.default_rng(0)
    y = {"multiclass": rng.integers(0, 5, 64), "binary": rng.integers(0, 2, (64, 2)).astype(float),
         "regression": rng.normal(0, 2, (64, 2))}[loss.kind]
    outputs = 5 if loss.kind == "multiclass" else 2
    expected, _ = zero_output_loss(loss, outputs, y)
    assert loss(np.zeros((64, outputs)), y)[0] == pytest.approx(expected, rel=1e-12)


def test_regularization_off_lists_what_was_on_and_leaves_the_config_alone():
    cfg = config("mnist.yaml", "loss.label_smoothing=0.1")
    plain, was_on = without_regularization(cfg)
    assert was_on == ["label_smoothing 0.1", "weight_decay 0.01", "dropout"]
    before, after = resolved_dict(cfg), resolved_dict(plain)
    assert {layer.rate for layer in cfg.model.layers if layer.type == "dropout"} == {0.1, 0.4}  # left alone
    assert after == before | {   # and nothing else changed
        "loss": {**before["loss"], "label_smoothing": 0.0},
        "optimizer": {**before["optimizer"], "weight_decay": 0.0},
        "model": {**before["model"], "layers": [{**layer, "rate": 0.0} if layer["type"] == "dropout" else layer
                                                for layer in before["model"]["layers"]]}}


def test_checks_run_on_given_data():
    cfg = config("spirals.yaml")
    checks = run_checks(cfg, prepare_data(cfg))
    assert [c.name for c in checks] == ["initial loss", "l2 in the loss", "overfit subset"]
    assert all(c.passed for c in checks) and checks[0].expected.startswith("ln 3 =")


# -- the command -------------------------------------------------------------------------------------

def test_sanity_command_prints_the_table_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", str(ROOT / "configs/quickstart.yaml"), "--sanity"])
    assert result.exit_code == 0, result.output
    assert "initial loss" in result.output and "pass" in result.output and "FAIL" not in result.output
    assert "3/3 checks passed" in result.output and list(tmp_path.iterdir()) == []


def test_sanity_command_exits_1_on_a_failed_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)      # xor, not quickstart: a stalled run costs 51 epochs (~0.1 s here, ~2 s there)
    result = runner.invoke(app, ["train", str(ROOT / "configs/xor.yaml"), "--sanity", "--set", "optimizer.lr=1e-9"])
    assert result.exit_code == 1
    row = next(line for line in result.output.splitlines() if "overfit subset" in line and "│" in line)
    assert "FAIL" in row and "2/3 checks passed" in result.output and list(tmp_path.iterdir()) == []
    assert "stopped: the loss fell by less than 0.1% in 50 epochs" in result.output


def test_sanity_with_resume_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["train", str(ROOT / "configs/xor.yaml"), "--sanity", "--resume", str(tmp_path)])
    assert result.exit_code == 2
    assert "--sanity checks a config before a new run starts; it cannot be combined with --resume" in result.output


# -- the sparkline ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("values, width, expected", [
    ([3, 2, 1.5, 1], 60, "█▅▃▁"),
    (range(8), 60, "▁▂▃▄▅▆▇█"),
    ([0, 2, 4, 6, 8, 10, 12, 14], 4, "▁▃▆█"),       # bucket means 1, 5, 9, 13
    ([2.5, 2.5, 2.5], 60, "▄▄▄"),                    # flat: no range to scale by
    ([1, math.nan, 3, math.inf], 60, "▁ █ "),
    ([1, math.nan, 2, 3], 2, " ▄"),                  # a bucket holding a NaN is a space
    ([math.nan, math.nan], 60, "  "),
    ([], 60, ""),
])
def test_sparkline(values, width, expected):
    assert sparkline(values, width) == expected


def test_sparkline_downsamples_many_epochs_to_the_width():
    line = sparkline(np.linspace(1.0, 0.0, 1000), width=60)
    assert len(line) == 60 and line[0] == "█" and line[-1] == "▁" and list(line) == sorted(line, reverse=True)


def test_summary_sparklines_from_metrics_jsonl(tmp_path):
    rows = [{"epoch": 1, "train_loss": 2.0, "val_loss": 1.5}, {"epoch": 2, "train_loss": 1.0, "val_loss": 1.25},
            {"epoch": 3, "train_loss": 0.5, "val_loss": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert loss_sparklines(tmp_path / "metrics.jsonl") == [("Train loss:", "2 █▃▁ 0.5"),
                                                           ("  Val loss:", "1.5 █▅▁ 1")]
    assert loss_sparklines(tmp_path / "missing.jsonl") == []


def test_train_prints_the_loss_sparkline(tmp_path):
    result = runner.invoke(app, ["train", str(ROOT / "configs/xor.yaml"), "--quiet", "--set", "training.epochs=8",
                                 "--set", f"output.dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("Train loss:"))
    first, spark, last = line.split()[2:]
    assert len(spark) == 8 and set(spark) <= set("▁▂▃▄▅▆▇█") and float(first) > float(last)
    assert "Val loss" not in result.output                                   # xor has no validation split
