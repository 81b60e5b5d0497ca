"""Gradient checks in the test suite: every registry entry, and proof that the check can fail."""

import numpy as np
import pytest

from bpcli.nn.activations import ACTIVATIONS, Tanh
from bpcli.tools.gradcheck import check_all, check_model, numeric_gradient, relative_error
from bpcli.nn.layers import LAYERS, ActivationLayer, Dense
from bpcli.nn.losses import LOSSES, MSE
from bpcli.nn.model import Model, build_model
from bpcli.nn.regularizers import REGULARIZERS


@pytest.fixture(scope="module")
def results():
    return check_all()


def test_every_check_passes_below_1e_6(results):
    failures = [r for r in results if not r.passed]
    assert not failures
    assert max(r.rel_error for r in results) < 1e-6


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_each_activation_is_checked(results, name):
    checked = [r for r in results if r.component == f"activation {name}"]
    assert checked and all(r.passed and r.checked > 0 for r in checked)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_each_loss_is_checked(results, name):
    assert [r for r in results if r.component == f"loss {name}" and r.passed and r.checked > 0]


@pytest.mark.parametrize("name", sorted(REGULARIZERS))
def test_each_regularizer_checks_weights_and_bias(results, name):
    rows = {r.parameter: r for r in results if r.component == f"regularizer {name}"}
    assert rows["layers.0.weight"].checked == 12 and rows["layers.0.bias"].checked == 3


@pytest.mark.parametrize("name", sorted(set(LAYERS) - {"activation"}))
def test_each_layer_is_checked_for_params_and_input(results, name):
    rows = [r for r in results if r.component == f"layer {name}"]
    assert any(r.parameter == "input" for r in rows)


def test_full_network_checks_every_parameter(results):
    rows = {r.parameter for r in results if r.component == "network full"}
    assert {"layers.0.weight", "layers.2.gamma", "layers.2.beta", "layers.6.bias", "input"} <= rows


class BrokenTanh(Tanh):
    """dz = da * (1 - a): a plausible slip (forgot to square a)."""

    def backward(self, z, a, da):
        return da * (1 - a)


def test_a_broken_backward_formula_is_reported():
    rng = np.random.default_rng(0)
    layers = [Dense(3), ActivationLayer(BrokenTanh(), "tanh"), Dense(2)]
    model = Model(layers, 4, dtype="float64")
    x, y = rng.normal(size=(5, 4)), rng.normal(size=(5, 2))
    results = check_model(model, MSE(), x, y)
    failed = {r.parameter for r in results if not r.passed}
    assert {"layers.0.weight", "layers.0.bias", "input"} <= failed
    assert {"layers.2.weight", "layers.2.bias"}.isdisjoint(failed)  # above the bug, gradients are right


def test_a_broken_dense_weight_gradient_is_reported():
    class BrokenDense(Dense):
        def backward(self, dz):
            dx = super().backward(dz)
            self.grads["weight"] *= 1.001  # off by 0.1 %
            return dx

    model = Model([BrokenDense(2)], 3, dtype="float64")
    rng = np.random.default_rng(1)
    results = check_model(model, MSE(), rng.normal(size=(4, 3)), rng.normal(size=(4, 2)))
    assert [r.parameter for r in results if not r.passed] == ["layers.0.weight"]


def test_relu_exactly_at_its_kink_is_skipped_not_failed():
    model = build_model([{"type": "relu"}], 3, dtype="float64")
    x = np.array([[0.0, 1.0, -1.0], [2.0, 0.0, -0.5]])
    results = check_model(model, MSE(), x, np.ones((2, 3)))
    (row,) = results
    assert row.passed and row.skipped == 2 and row.checked == 4


def test_dropout_mask_is_held_fixed_during_the_check():
    model = build_model([{"type": "dense", "units": 6}, {"type": "dropout", "rate": 0.5},
                         {"type": "dense", "units": 2}], 3, dtype="float64")
    rng = np.random.default_rng(2)
    results = check_model(model, MSE(), rng.normal(size=(8, 3)), rng.normal(size=(8, 2)))
    assert all(r.passed for r in results)


def test_numeric_gradient_of_a_known_function():
    x = np.array([1.0, -2.0, 3.0])
    grad, straddles = numeric_gradient(lambda: (float(np.sum(x ** 3)), []), x, 1e-5)
    np.testing.assert_allclose(grad, 3 * np.array([1.0, 4.0, 9.0]), rtol=1e-8)
    assert not straddles.any() and np.array_equal(x, [1.0, -2.0, 3.0])  # restored


def test_relative_error():
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.array([1.0]), np.array([3.0])) == pytest.approx(0.5)
    assert relative_error(np.zeros(3), np.full(3, 1e-10)) < 1e-7  # rounding noise around an exact zero
    assert relative_error(np.array([1e-3]), np.array([2e-3])) > 0.05  # a small gradient that is wrong still fails
