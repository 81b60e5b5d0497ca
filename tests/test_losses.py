"""Losses: hand-computed values and gradients, reductions, stability."""

import numpy as np
import pytest

from bpcli.nn.losses import LOSSES, BinaryCrossEntropy, CrossEntropy, Huber, MAE, MSE


def test_mse_and_mae_by_hand():
    logits, y = np.array([[1.0], [3.0]]), np.array([0.0, 1.0])
    value, d = MSE()(logits, y)
    assert value == pytest.approx((1 + 4) / 2)
    np.testing.assert_allclose(d, [[1.0], [2.0]])  # 2 * diff / 2
    value, d = MAE()(logits, y)
    assert value == pytest.approx(1.5)
    np.testing.assert_allclose(d, [[0.5], [0.5]])


def test_huber_switches_at_delta():
    value, d = Huber(delta=1.0)(np.array([[0.5, 3.0]]), np.zeros((1, 2)))
    assert value == pytest.approx((0.125 + (3.0 - 0.5)) / 2)
    np.testing.assert_allclose(d, [[0.25, 0.5]])


def test_cross_entropy_by_hand():
    logits = np.array([[0.0, np.log(3.0)]])  # p = [0.25, 0.75]
    value, d = CrossEntropy()(logits, np.array([1]))
    assert value == pytest.approx(-np.log(0.75))
    np.testing.assert_allclose(d, [[0.25, -0.25]])


def test_cross_entropy_label_smoothing_by_hand():
    logits = np.array([[0.0, np.log(3.0)]])
    value, d = CrossEntropy(label_smoothing=0.2)(logits, np.array([1]))
    q = np.array([0.1, 0.9])
    assert value == pytest.approx(-(q * np.log([0.25, 0.75])).sum())
    np.testing.assert_allclose(d, [[0.25 - 0.1, 0.75 - 0.9]])


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value, d = CrossEntropy()(logits, np.array([1, 1]))
    assert value == pytest.approx(1000.0)
    assert d.dtype == np.float32 and np.isfinite(d).all()


def test_binary_cross_entropy_by_hand_and_stable():
    value, d = BinaryCrossEntropy()(np.array([[0.0], [np.log(3.0)]]), np.array([1.0, 0.0]))
    assert value == pytest.approx((np.log(2) + np.log(4)) / 2)
    np.testing.assert_allclose(d, [[-0.25], [0.375]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value, d = BinaryCrossEntropy()(np.array([[1000.0, -1000.0]]), np.array([[0.0, 1.0]]))
    assert value == pytest.approx(1000.0) and np.isfinite(d).all()


def test_log_loss_is_binary_cross_entropy():
    assert LOSSES["log_loss"] is LOSSES["binary_cross_entropy"]


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_float32_in_float32_out(name):
    loss = LOSSES[name]()
    logits = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 1]) if loss.kind == "multiclass" else (logits > 0).astype(np.float32)
    value, d = loss(logits, y)
    assert isinstance(value, float) and d.dtype == np.float32 and d.shape == logits.shape
