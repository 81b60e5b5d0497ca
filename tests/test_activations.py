"""Activations: values against known points, stability at +-1000, dtype kept."""

import warnings

import numpy as np
import pytest

from bpcli.nn.activations import ACTIVATIONS, GELU, ELU, LeakyReLU, sigmoid


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_no_overflow_and_finite_at_extremes(name, dtype):
    z = np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]], dtype=dtype)
    act = ACTIVATIONS[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            a = act.forward(z)
            dz = act.backward(z, a, np.ones_like(z))
    assert a.dtype == dtype and dz.dtype == dtype
    assert np.isfinite(a).all() and np.isfinite(dz).all()


def test_known_values():
    z = np.array([[-2.0, 0.0, 3.0]])
    np.testing.assert_allclose(sigmoid(z), 1 / (1 + np.exp(-z)))
    np.testing.assert_allclose(ACTIVATIONS["relu"]().forward(z), [[0, 0, 3]])
    np.testing.assert_allclose(LeakyReLU(0.1).forward(z), [[-0.2, 0, 3]])
    np.testing.assert_allclose(ELU(2.0).forward(z), [[2 * (np.exp(-2) - 1), 0, 3]])
    np.testing.assert_allclose(ACTIVATIONS["softplus"]().forward(z), np.log1p(np.exp(z)))
    np.testing.assert_allclose(ACTIVATIONS["tanh"]().forward(z), np.tanh(z))
    softmax = ACTIVATIONS["softmax"]().forward(z)
    np.testing.assert_allclose(softmax, np.exp(z) / np.exp(z).sum())


def test_gelu_tanh_approximation_is_close_to_exact_gelu():
    from math import erf
    z = np.linspace(-6, 6, 101)
    exact = np.array([0.5 * v * (1 + erf(v / np.sqrt(2))) for v in z])
    assert np.max(np.abs(GELU().forward(z) - exact)) < 1e-3


def test_saturated_extremes_have_the_right_limits():
    z = np.array([[-1000.0, 1000.0]])
    np.testing.assert_array_equal(sigmoid(z), [[0.0, 1.0]])
    np.testing.assert_array_equal(ACTIVATIONS["softplus"]().forward(z), [[0.0, 1000.0]])
    np.testing.assert_allclose(ACTIVATIONS["softmax"]().forward(z), [[0.0, 1.0]])
