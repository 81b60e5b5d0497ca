"""Model building, the flat parameter buffer, layers' modes, initializers, regularizers."""

import numpy as np
import pytest

from bpcli.errors import ConfigError
from bpcli.nn.initializers import INITIALIZERS
from bpcli.nn.model import build_model
from bpcli.nn.regularizers import L1, L2

SPEC = [
    {"type": "dense", "units": 8, "activation": "relu"},
    {"type": "batchnorm"},
    {"type": "dropout", "rate": 0.5},
    {"type": "dense", "units": 3},
]


def test_parameter_names_follow_pytorch_sequential():
    model = build_model(SPEC, 4)
    assert list(model.params) == ["layers.0.weight", "layers.0.bias", "layers.2.gamma",
                                  "layers.2.beta", "layers.4.weight", "layers.4.bias"]
    assert model.params["layers.0.weight"].shape == (4, 8)
    assert model.n_params == 4 * 8 + 8 + 8 + 8 + 8 * 3 + 3


def test_params_and_grads_are_views_into_flat_buffers():
    model = build_model(SPEC, 4)
    model.theta[:] = 7
    assert all((p == 7).all() for p in model.params.values())
    assert all(np.shares_memory(g, model.dtheta) for g in model.grads.values())


def test_same_spec_and_seed_give_the_same_weights():
    a, b, c = build_model(SPEC, 4, seed=3), build_model(SPEC, 4, seed=3), build_model(SPEC, 4, seed=4)
    assert np.array_equal(a.theta, b.theta) and not np.array_equal(a.theta, c.theta)
    d = build_model(SPEC, 4, seed=3, dtype="float64")
    np.testing.assert_allclose(d.theta, a.theta, rtol=1e-6)


def test_float32_by_default_and_float64_on_request():
    x = np.ones((2, 4), dtype=np.float32)
    model = build_model(SPEC, 4)
    assert model.theta.dtype == np.float32 and model.forward(x, True).dtype == np.float32
    assert build_model(SPEC, 4, dtype="float64").theta.dtype == np.float64


def test_default_initializer_follows_the_activation():
    rng_std = lambda w: float(np.std(w))
    relu = build_model([{"type": "dense", "units": 400, "activation": "relu"}], 400, seed=0)
    tanh = build_model([{"type": "dense", "units": 400, "activation": "tanh"}], 400, seed=0)
    assert rng_std(relu.params["layers.0.weight"]) == pytest.approx(np.sqrt(2 / 400), rel=0.02)  # He normal
    assert rng_std(tanh.params["layers.0.weight"]) == pytest.approx(np.sqrt(2 / 800), rel=0.02)  # Glorot uniform
    standalone = build_model([{"type": "dense", "units": 400}, {"type": "dropout"}, {"type": "relu"}], 400)
    assert rng_std(standalone.params["layers.0.weight"]) == pytest.approx(np.sqrt(2 / 400), rel=0.02)


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_every_initializer_builds(name):
    model = build_model([{"type": "dense", "units": 50, "init": name}], 60)
    w = model.params["layers.0.weight"]
    assert w.shape == (60, 50) and np.isfinite(w).all()


def test_initializer_options():
    model = build_model([{"type": "dense", "units": 300, "init": {"name": "normal", "std": 0.5}}], 300)
    assert np.std(model.params["layers.0.weight"]) == pytest.approx(0.5, rel=0.02)
    model = build_model([{"type": "dense", "units": 3, "bias_init": {"name": "constant", "value": 0.25}}], 2)
    assert (model.params["layers.0.bias"] == 0.25).all()


def test_dropout_is_inverted_and_off_at_evaluation():
    model = build_model([{"type": "dropout", "rate": 0.25}], 1000)
    x = np.ones((50, 1000), dtype=np.float32)
    y = model.forward(x, training=True)
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.01
    assert np.array_equal(model.forward(x, training=False), x)


def test_batchnorm_uses_batch_stats_in_training_and_running_stats_at_eval():
    model = build_model([{"type": "batchnorm", "momentum": 1.0}], 3, dtype="float64")
    x = np.random.default_rng(0).normal(5, 2, size=(100, 3))
    y = model.forward(x, training=True)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(y.std(axis=0), 1, atol=1e-4)
    buffers = model.buffers
    np.testing.assert_allclose(buffers["layers.0.running_mean"], x.mean(axis=0))
    np.testing.assert_allclose(buffers["layers.0.running_var"], x.var(axis=0, ddof=1))
    one = model.forward(x[:1], training=False)  # one example, normalized by the running stats
    np.testing.assert_allclose(one, (x[:1] - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + 1e-5))


def test_regularizers_penalize_weights_not_biases_unless_asked():
    model = build_model([{"type": "dense", "units": 2, "bias_init": {"name": "constant", "value": 1.0}}], 2,
                        dtype="float64")
    model.params["layers.0.weight"][:] = [[1.0, -2.0], [3.0, 0.0]]
    assert L2(0.5).penalty(model.params) == pytest.approx(0.25 * 14)
    assert L1(0.5).penalty(model.params) == pytest.approx(0.5 * 6)
    assert L1(0.5, include_bias=True).penalty(model.params) == pytest.approx(0.5 * 8)
    model.dtheta[:] = 0
    L2(0.5).add_grad(model.params, model.grads)
    np.testing.assert_allclose(model.grads["layers.0.weight"], [[0.5, -1.0], [1.5, 0.0]])
    assert (model.grads["layers.0.bias"] == 0).all()


@pytest.mark.parametrize("spec, key, words", [
    ([{"type": "dense", "unit": 3}], "model.layers.0.unit", "Did you mean 'units'"),
    ([{"type": "dense", "units": 0}], "model.layers.0.units", "positive integer"),
    ([{"type": "dense", "units": 3, "activation": "rleu"}], "model.layers.0.activation", "Did you mean 'relu'"),
    ([{"type": "dens", "units": 3}], "model.layers.0.type", "Did you mean 'dense'"),
    ([{"type": "dropout", "rate": 1.5}], "model.layers.0.rate", "[0, 1)"),
    ([{"type": "dense", "units": 3, "init": "he"}], "model.layers.0.init", "allowed:"),
    ([{"type": "leaky_relu", "alpha": 0.1}], "model.layers.0.alpha", "allowed: slope"),
    ([], "model.layers", "non-empty"),
])
def test_bad_specs_name_the_key_and_what_is_allowed(spec, key, words):
    with pytest.raises(ConfigError) as error:
        build_model(spec, 4)
    assert error.value.key == key and key in str(error.value) and words in str(error.value)
