"""Model building, the flat parameter buffer, layers' modes, initializers, regularizers."""

import json

import numpy as np
import pytest

from bpcli.config.loading import parse_config_text
from bpcli.config.sections import resolved_dict
from bpcli.errors import ConfigError
from bpcli.nn.initializers import INITIALIZERS
from bpcli.nn.model import build_model, count_params, default_init, next_activation
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


@pytest.mark.parametrize("layer, key, words", [
    ({"type": "dense", "unit": 3}, "model.layers.0.unit", "Did you mean 'units'"),
    ({"type": "dense", "units": 0}, "model.layers.0.units", "must be an integer >= 1"),
    ({"type": "dense", "units": 3, "activation": "rleu"}, "model.layers.0.activation", "Did you mean 'relu'"),
    ({"type": "dens", "units": 3}, "model.layers.0.type", "Did you mean 'dense'"),
    ({"type": "dropout", "rate": 1.5}, "model.layers.0.rate", "[0, 1)"),
    ({"type": "dense", "units": 3, "init": "he"}, "model.layers.0.init", "allowed:"),
    ({"type": "leaky_relu", "alpha": 0.1}, "model.layers.0.alpha", "allowed: slope"),
])
def test_the_schema_validates_layer_specs_once_naming_the_key_and_what_is_allowed(layer, key, words):
    """build_model trusts its specs: the config schema is the one place that checks them."""
    with pytest.raises(ConfigError) as error:
        parse_config_text("model:\n  layers:\n    - " + json.dumps(layer) + "\n", "t.yaml")
    assert f"{key}: " in str(error.value) and words in str(error.value)


def test_an_unknown_layer_type_is_a_config_error_naming_the_allowed_types_not_a_dense_layer():
    with pytest.raises(ConfigError) as error:
        build_model([{"type": "dense", "units": 2}, {"type": "conv", "units": 3}], 4)
    assert error.value.key == "model.layers.1.type"
    assert "unknown value 'conv'; allowed: batchnorm, dense, dropout, elu," in str(error.value)


def test_a_resolved_config_spec_with_nulls_builds_with_the_defaults():
    spec = resolved_dict(parse_config_text(
        "model:\n  layers:\n    - {type: dense, units: 8}\n    - {type: dropout}\n    - {type: relu}\n"
        "    - {type: dense, units: 2, activation: {name: leaky_relu, slope: 0.2}}\n"))["model"]["layers"]
    assert spec[0]["activation"] is None and spec[3]["init"] == "he_normal"
    model = build_model(spec, 4)
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "Dropout", "ActivationLayer", "Dense",
                                                                "ActivationLayer"]
    assert model.layers[1].rate == 0.5 and model.layers[4].activation.slope == 0.2
    assert model.widths == [8, 8, 8, 2, 2] and model.output_dim == 2


@pytest.mark.parametrize("specs, i, init", [
    ([{"type": "dense", "units": 3, "activation": "relu"}], 0, "he_normal"),
    ([{"type": "dense", "units": 3, "activation": "tanh"}], 0, "glorot_uniform"),
    ([{"type": "dense", "units": 3}, {"type": "batchnorm"}, {"type": "dropout"}, {"type": "gelu"}], 0, "he_normal"),
    ([{"type": "dense", "units": 3}, {"type": "dense", "units": 3, "activation": "relu"}], 0, "glorot_uniform"),
    ([{"type": "dense", "units": 3}, {"type": "elu"}, {"type": "relu"}], 0, "he_normal"),
    ([{"type": "dense", "units": 3, "activation": None, "init": None}, {"type": "relu"}], 0, "he_normal"),
    ([{"type": "dropout"}, {"type": "relu"}], 0, None),
])
def test_default_init_is_the_one_rule_for_a_null_init(specs, i, init):
    assert default_init(specs, i) == init
    if init:
        assert build_model(specs, 4).layers[i].init == init


def test_next_activation_looks_past_dropout_and_batchnorm_but_not_past_a_dense_layer():
    model = build_model([{"type": "dense", "units": 3}, {"type": "batchnorm"}, {"type": "tanh"},
                         {"type": "dense", "units": 2}, {"type": "dense", "units": 2}, {"type": "sigmoid"}], 4)
    assert next_activation(model.layers, 0) is model.layers[2]
    assert next_activation(model.layers, 3) is None and next_activation(model.layers, 4) is model.layers[5]


# -- what the diagnostics read ------------------------------------------------------------------------

def test_layer_outputs_and_active_units_are_those_of_the_last_forward_pass():
    """An in-place ReLU answers from its mask; any other layer from its output; both mean output > 0."""
    model = build_model([{"type": "dense", "units": 6, "activation": "relu", "bias_init": {"name": "constant",
                                                                                          "value": -1.5}},
                         {"type": "dropout", "rate": 0.5}, {"type": "relu"}, {"type": "leaky_relu"},
                         {"type": "dense", "units": 2}], 3, dtype="float64")
    assert model.layers[1].inplace and model.layers[1].activation.mask is None   # nothing run yet
    assert not model.layers[3].inplace                                           # after dropout: not its buffer
    x = np.random.default_rng(0).normal(size=(5, 3))
    model.forward(x, training=True)
    z = x @ model.params["layers.0.weight"] + model.params["layers.0.bias"]
    np.testing.assert_array_equal(model.layer_output(0), np.maximum(z, 0))       # z became a in place
    assert model.layer_output(1) is model.layers[1].a and model.layers[1].activation.mask is not None
    for i in range(len(model.layers)):
        positive = model.layer_output(i).max(axis=0) > 0
        assert model.active_units(i).dtype == bool and np.array_equal(model.active_units(i), positive)
    assert 0 < model.active_units(1).sum() < 6            # the -1.5 biases keep some units off for 5 examples
    model.forward(x[:2], training=False)
    assert model.layer_output(5).shape == (2, 2) and model.layers[1].activation.mask.shape == (2, 6)


def test_layers_say_what_they_are_to_the_diagnostics():
    model = build_model(SPEC, 4)
    assert [layer.activation_name for layer in model.layers] == [None, "relu", None, None, None]
    assert [layer.training_noise for layer in model.layers] == [False, False, False, True, False]


def test_count_params_counts_without_allocating():
    """build() allocates nothing (batch norm's statistics come from initial_buffers), so a huge config is cheap."""
    assert count_params(SPEC, 4) == build_model(SPEC, 4).n_params
    huge = [{"type": "dense", "units": 10 ** 9}, {"type": "batchnorm"}, {"type": "dense", "units": 3}]
    assert count_params(huge, 2) == 3 * 10 ** 9 + 2 * 10 ** 9 + (10 ** 9 + 1) * 3
    assert build_model(SPEC, 4).buffers["layers.2.running_var"].dtype == np.float32
