"""Metrics: hand-computed examples, edge cases (empty classes, constant targets), stability, the registry."""

import json
import warnings

import numpy as np
import pytest

from bpcli.nn.losses import LOSSES
from bpcli.nn.metrics import (METRICS, accuracy, classification_summary, confusion_matrix, count_correct, evaluate,
                              format_metric, metric_for, metrics_for, monitorable, per_class_report,
                              predict_classes, predict_logits, probabilities, regression_metrics, resolve_mode)
from bpcli.nn.model import build_model


class _strict:
    """Turn every warning and every NumPy floating-point issue except underflow into an error."""

    def __enter__(self):
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("error")
        self._e = np.errstate(over="raise", invalid="raise", divide="raise")
        self._e.__enter__()

    def __exit__(self, *exc):
        self._e.__exit__(*exc)
        return self._w.__exit__(*exc)


# A 3-class example, written out by hand:
#   y_true = 0 0 0 | 1 1 | 2 2 2 2
#   y_pred = 0 1 0 | 1 2 | 2 2 2 2
# rows = true, cols = predicted:
#   [[2, 1, 0],      support (row sums)     = 3, 2, 4
#    [0, 1, 1],      predicted (col sums)   = 2, 2, 5
#    [0, 0, 4]]
# precision = TP / predicted = 2/2, 1/2, 4/5       = 1, 0.5, 0.8
# recall    = TP / support   = 2/3, 1/2, 4/4       = 2/3, 0.5, 1
# F1 = 2PR/(P+R): class 0: (4/3)/(5/3) = 4/5; class 1: 0.5; class 2: 1.6/1.8 = 8/9
# macro:    P = 2.3/3, R = (2/3 + 1/2 + 1)/3 = 13/18, F1 = (4/5 + 1/2 + 8/9)/3 = 197/270
# weighted (3, 2, 4)/9: P = (3 + 1 + 3.2)/9 = 0.8, R = (2 + 1 + 4)/9 = 7/9,
#                       F1 = (12/5 + 1 + 32/9)/9 = (313/45)/9 = 313/405
Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
Y_PRED = np.array([0, 1, 0, 1, 2, 2, 2, 2, 2])
CM = [[2, 1, 0], [0, 1, 1], [0, 0, 4]]


# -- predictions and probabilities -------------------------------------------

def test_multiclass_predictions_and_accuracy():
    logits = np.array([[1.0, 2.0, 0.0], [3.0, 1.0, 1.0], [0.0, 0.0, 5.0], [2.0, 2.5, 1.0]])
    y = np.array([1, 0, 1, 0])
    np.testing.assert_array_equal(predict_classes(logits, "multiclass"), [1, 0, 2, 1])
    assert count_correct(logits, y, "multiclass") == 2   # examples 0 and 1
    assert accuracy(logits, y, "multiclass") == pytest.approx(0.5)


def test_binary_accuracy_is_over_all_outputs():
    logits = np.array([[2.0, -1.0], [-3.0, 0.5], [0.0, 4.0]])
    y = np.array([[1, 0], [1, 1], [0, 0]])
    pred = predict_classes(logits, "binary")
    np.testing.assert_array_equal(pred, [[1, 0], [0, 1], [0, 1]])   # logit 0 -> sigmoid 0.5 -> 0
    assert pred.dtype == np.int64
    assert count_correct(logits, y, "binary") == 4                  # 4 of the 6 outputs
    assert accuracy(logits, y, "binary") == pytest.approx(4 / 6)


def test_binary_single_output_accepts_flat_targets():
    logits = np.array([[1.0], [-1.0], [2.0]])
    assert accuracy(logits, np.array([1, 1, 1]), "binary") == pytest.approx(2 / 3)


def test_predictions_need_a_classification_task():
    with pytest.raises(ValueError, match="regression"):
        predict_classes(np.zeros((2, 1)), "regression")
    with pytest.raises(ValueError, match="regression"):
        probabilities(np.zeros((2, 1)), "regression")


def test_probabilities_by_hand():
    soft = probabilities(np.array([[0.0, np.log(3.0)], [1.0, 1.0]]), "multiclass")
    np.testing.assert_allclose(soft, [[0.25, 0.75], [0.5, 0.5]])
    sig = probabilities(np.array([[0.0, np.log(3.0), -np.log(3.0)]]), "binary")
    np.testing.assert_allclose(sig, [[0.5, 0.75, 0.25]])


def test_probabilities_are_stable_for_huge_logits():
    big = np.array([[1000.0, -1000.0], [-1000.0, 1000.0], [1000.0, 1000.0]])
    with _strict():
        soft = probabilities(big, "multiclass")
        sig = probabilities(big, "binary")
    np.testing.assert_array_equal(soft, [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    np.testing.assert_array_equal(sig, [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])


def test_probabilities_keep_float32():
    z = np.array([[0.0, 1.0]], dtype=np.float32)
    assert probabilities(z, "multiclass").dtype == np.float32
    assert probabilities(z, "binary").dtype == np.float32


# -- confusion matrix and per-class scores -------------------------------------

def test_confusion_matrix_by_hand():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    np.testing.assert_array_equal(cm, CM)
    assert cm.dtype == np.int64
    assert np.trace(cm) / cm.sum() == pytest.approx(7 / 9)


def test_confusion_matrix_keeps_absent_classes_and_rejects_bad_labels():
    np.testing.assert_array_equal(confusion_matrix([1, 1], [1, 0], 3), [[0, 0, 0], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(confusion_matrix([], [], 2), [[0, 0], [0, 0]])
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 0], 3)
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0], 3)


def test_confusion_matrix_matches_a_plain_count():
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 5, 500), rng.integers(0, 5, 500)
    expected = [[int(np.sum((t == i) & (p == j))) for j in range(5)] for i in range(5)]
    np.testing.assert_array_equal(confusion_matrix(t, p, 5), expected)


def test_per_class_report_by_hand():
    r = per_class_report(np.array(CM))
    np.testing.assert_allclose(r["precision"], [1.0, 0.5, 0.8])
    np.testing.assert_allclose(r["recall"], [2 / 3, 0.5, 1.0])
    np.testing.assert_allclose(r["f1"], [0.8, 0.5, 8 / 9])
    np.testing.assert_array_equal(r["support"], [3, 2, 4])
    assert r["macro"] == pytest.approx({"precision": 2.3 / 3, "recall": 13 / 18, "f1": 197 / 270})
    assert r["weighted"] == pytest.approx({"precision": 0.8, "recall": 7 / 9, "f1": 313 / 405})


def test_per_class_report_perfect():
    r = per_class_report(confusion_matrix([0, 1, 1, 2], [0, 1, 1, 2], 3))
    for key in ("precision", "recall", "f1"):
        np.testing.assert_array_equal(r[key], [1.0, 1.0, 1.0])
        assert r["macro"][key] == 1.0 and r["weighted"][key] == 1.0


def test_class_never_predicted_or_never_present_scores_zero_without_warnings():
    # y_true = 0 1 2 2, y_pred = 0 0 2 2, 4 classes:
    #   class 0: P = 1/2, R = 1/1, F1 = 2/3;  class 1: never predicted -> P = 0, R = 0/1, F1 = 0
    #   class 2: P = R = F1 = 1;               class 3: never present nor predicted -> all 0, support 0
    with _strict():
        r = per_class_report(confusion_matrix([0, 1, 2, 2], [0, 0, 2, 2], 4))
    np.testing.assert_allclose(r["precision"], [0.5, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(r["recall"], [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(r["f1"], [2 / 3, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(r["support"], [1, 1, 2, 0])
    assert r["macro"]["f1"] == pytest.approx((2 / 3 + 1) / 4)
    assert r["weighted"]["f1"] == pytest.approx((2 / 3 + 2) / 4)   # supports 1, 1, 2, 0


def test_class_predicted_but_never_present():
    # y_true = 0 0, y_pred = 0 1: class 0 P = 1, R = 1/2, F1 = 2/3; class 1 P = 0/1, R = 0 (support 0)
    with _strict():
        r = per_class_report(confusion_matrix([0, 0], [0, 1], 2))
    np.testing.assert_allclose(r["precision"], [1.0, 0.0])
    np.testing.assert_allclose(r["recall"], [0.5, 0.0])
    np.testing.assert_allclose(r["f1"], [2 / 3, 0.0])


def test_empty_confusion_matrix_gives_zeros_without_warnings():
    with _strict():
        r = per_class_report(np.zeros((2, 2), dtype=np.int64))
        s = classification_summary([], [], ["a", "b"])
    np.testing.assert_array_equal(r["f1"], [0.0, 0.0])
    assert r["weighted"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert s["accuracy"] == 0.0


# -- regression --------------------------------------------------------------

def test_regression_metrics_by_hand():
    # one column: errors 0 0 1 -> MSE = MAE = 1/3; SS_res = 1, mean 2, SS_tot = 1 + 0 + 1 = 2 -> R^2 = 0.5
    m = regression_metrics(np.array([[1.0], [2.0], [4.0]]), np.array([1.0, 2.0, 3.0]))
    assert m == pytest.approx({"mse": 1 / 3, "mae": 1 / 3, "r2": 0.5})
    # two columns: column 2 y = 10 20 30, pred 12 20 30 -> SS_res = 4, SS_tot = 200, R^2 = 0.98
    # MSE = (1 + 4) / 6, MAE = (1 + 2) / 6, R^2 = (0.5 + 0.98) / 2 = 0.74
    y = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    pred = np.array([[1.0, 12.0], [2.0, 20.0], [4.0, 30.0]])
    assert regression_metrics(pred, y) == pytest.approx({"mse": 5 / 6, "mae": 0.5, "r2": 0.74})


def test_regression_r2_reference_points():
    y = np.array([1.0, 2.0, 3.0])
    assert regression_metrics(y, y) == {"mse": 0.0, "mae": 0.0, "r2": 1.0}
    assert regression_metrics(np.array([2.0, 2.0, 2.0]), y)["r2"] == pytest.approx(0.0)   # the mean
    assert regression_metrics(np.array([3.0, 2.0, 1.0]), y)["r2"] == pytest.approx(-3.0)  # 1 - 8/2


def test_regression_constant_target_column_without_warnings():
    # column 1 is constant (SS_tot = 0): R^2 = 1 if predicted exactly, else 0; column 2 has R^2 = 0.5
    y = np.array([[5.0, 1.0], [5.0, 2.0], [5.0, 3.0]])
    with _strict():
        exact = regression_metrics(np.array([[5.0, 1.0], [5.0, 2.0], [5.0, 4.0]]), y)
        off = regression_metrics(np.array([[5.0, 1.0], [5.0, 2.0], [6.0, 4.0]]), y)
    assert exact["r2"] == pytest.approx((1.0 + 0.5) / 2)
    assert off["r2"] == pytest.approx((0.0 + 0.5) / 2)
    assert all(type(v) is float for v in exact.values())


# -- JSON summary --------------------------------------------------------------

def test_classification_summary_is_json_and_matches_hand_values():
    s = classification_summary(Y_TRUE, Y_PRED, ("cat", "dog", "bird"))
    back = json.loads(json.dumps(s))
    assert back == s
    assert s["accuracy"] == pytest.approx(7 / 9)
    assert s["confusion_matrix"] == CM
    assert [c["class"] for c in s["per_class"]] == ["cat", "dog", "bird"]
    assert s["per_class"][2] == pytest.approx(
        {"class": "bird", "precision": 0.8, "recall": 1.0, "f1": 8 / 9, "support": 4})
    assert type(s["per_class"][0]["support"]) is int and type(s["per_class"][0]["f1"]) is float
    assert type(s["confusion_matrix"][0][0]) is int and type(s["accuracy"]) is float
    assert s["macro"]["f1"] == pytest.approx(197 / 270)
    assert s["weighted"]["precision"] == pytest.approx(0.8)


# -- scikit-learn as an oracle, when installed -----------------------------------

def test_matches_sklearn_on_random_data():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    t, p = rng.integers(0, 4, 300), rng.integers(0, 3, 300)   # class 3 is never predicted
    np.testing.assert_array_equal(confusion_matrix(t, p, 4), skm.confusion_matrix(t, p, labels=range(4)))
    r = per_class_report(confusion_matrix(t, p, 4))
    P, R, F, S = skm.precision_recall_fscore_support(t, p, labels=range(4), zero_division=0)
    np.testing.assert_allclose(r["precision"], P)
    np.testing.assert_allclose(r["recall"], R)
    np.testing.assert_allclose(r["f1"], F)
    np.testing.assert_array_equal(r["support"], S)
    for avg in ("macro", "weighted"):
        got = skm.precision_recall_fscore_support(t, p, labels=range(4), average=avg, zero_division=0)
        assert [r[avg][k] for k in ("precision", "recall", "f1")] == pytest.approx(list(got[:3]))
    y, pred = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    y[:, 2] = 1.0                                             # a constant column
    m = regression_metrics(pred, y)
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y, pred))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert m["r2"] == pytest.approx(skm.r2_score(y, pred))


# -- the registry and scoring a whole set ------------------------------------------------------------

def _before_the_registry(model, loss, x, y, batch_size):
    """evaluate as training/trainer.py computed it before the registry: the reference for bit-identity."""
    logits = np.empty((len(x), model.output_dim), dtype=model.dtype)
    for i in range(0, len(x), batch_size):
        logits[i:i + batch_size] = model.forward(x[i:i + batch_size], training=False)
    result = {"loss": loss(logits, y)[0]}
    if loss.kind == "regression":
        result.update(regression_metrics(logits, y.reshape(logits.shape)))
    else:
        outputs = logits.size if loss.kind == "binary" else len(logits)
        result["accuracy"] = count_correct(logits, y, loss.kind) / outputs
    return result


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_evaluate_gives_bit_identical_numbers_in_the_same_order(loss_name, dtype):
    loss = LOSSES[loss_name]()
    rng = np.random.default_rng(3)
    model = build_model([{"type": "dense", "units": 16, "activation": "relu"}, {"type": "batchnorm"},
                         {"type": "dropout", "rate": 0.3}, {"type": "dense", "units": 3}], 5, seed=2, dtype=dtype)
    x = rng.normal(size=(301, 5)).astype(dtype)
    y = {"multiclass": rng.integers(0, 3, 301), "binary": rng.integers(0, 2, (301, 3)).astype(dtype),
         "regression": rng.normal(size=(301, 3)).astype(dtype)}[loss.kind]
    got, want = evaluate(model, loss, x, y, batch_size=64), _before_the_registry(model, loss, x, y, 64)
    assert list(got) == list(want) and got == want
    assert list(got) == [m.name for m in metrics_for(loss.kind)]


def test_predict_logits_keeps_each_batch_though_the_layers_reuse_their_buffers():
    model = build_model([{"type": "dense", "units": 4, "activation": "tanh"}, {"type": "dense", "units": 2}], 3)
    x = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    logits = predict_logits(model, x, batch_size=3)
    batches = [model.forward(x[i:i + 3]).copy() for i in range(0, 10, 3)]
    assert logits.dtype == np.float32 and np.array_equal(logits, np.concatenate(batches))


def test_monitorable_columns_and_their_direction():
    assert monitorable() == ("val_loss", "val_accuracy", "train_loss", "train_accuracy")
    assert [resolve_mode(c) for c in monitorable()] == ["min", "max", "min", "max"]
    assert resolve_mode("val_accuracy", "min") == "min" and resolve_mode("val_loss", "max") == "max"
    assert metric_for("val_r2") is METRICS["r2"] and METRICS["r2"].mode == "max"
    with pytest.raises(ValueError, match="'test_loss' is not a metric column"):
        metric_for("test_loss")
    with pytest.raises(ValueError, match="'val_f1' is not a metric column"):
        resolve_mode("val_f1")


def test_each_metric_applies_to_its_tasks():
    assert [m.name for m in metrics_for("multiclass")] == [m.name for m in metrics_for("binary")] == ["loss",
                                                                                                      "accuracy"]
    assert [m.name for m in metrics_for("regression")] == ["loss", "mse", "mae", "r2"]


def test_the_epoch_line_shows_each_metric_as_before():
    assert [format_metric(c, v) for c, v in (("train_loss", 0.123456), ("train_accuracy", 0.95),
                                             ("val_loss", 0.25), ("val_accuracy", 0.941))] == [
        "loss 0.1235", "acc 95.00%", "val_loss 0.2500", "val_acc 94.10%"]


def test_the_accuracy_tally_sums_to_the_whole_set_accuracy():
    logits = np.random.default_rng(4).normal(size=(10, 3))
    y = np.arange(10) % 3
    tally = METRICS["accuracy"].tally
    parts = [tally(logits[i:i + 4], y[i:i + 4], LOSSES["cross_entropy"]()) for i in range(0, 10, 4)]
    assert sum(c for c, _ in parts) / sum(n for _, n in parts) == accuracy(logits, y, "multiclass")
    assert METRICS["loss"].tally is None   # the trainer sums its own objective, penalties included
