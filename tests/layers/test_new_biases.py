"""KERPLE, FIRE and ALiBi on some heads: formulas, harness, models, cache."""

import math

import keras
import numpy as np
import pytest

from keras_posenc import layers
from keras_posenc import models
from keras_posenc import positions as position_schemes
from keras_posenc.utils import to_numpy
from tests.harness import run_layer_test

HEADS = 3


def _scores():
    return np.random.default_rng(0).normal(size=(2, HEADS, 5, 5)).astype("float32")


@pytest.mark.parametrize("kind", ["log", "power"])
def test_kerple_harness(kind, tmp_path):
    run_layer_test(
        layers.KerpleBias,
        init_kwargs={"num_heads": HEADS, "kind": kind},
        input_data=_scores(),
        expected_output_shape=(2, HEADS, 5, 5),
        expected_num_trainable_weights=2,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("kind", ["log", "power"])
def test_kerple_matches_the_paper_formula(kind):
    layer = layers.KerpleBias(num_heads=HEADS, kind=kind)
    layer.build()
    scale = np.array([0.5, 1.5, 0.001])  # the last is clamped to 0.01
    exponent = np.array([0.3, 2.5, 1.0])  # 2.5 is clamped to 2 for "power"
    layer.scale.assign(scale)
    layer.exponent.assign(exponent)
    query, key = np.array([3, 7, 20]), np.arange(9)
    distance = np.abs(key[None, :] - query[:, None]).astype("float64")
    r1 = np.maximum(scale, 0.01)[:, None, None]
    r2 = np.maximum(exponent, 0.01)[:, None, None]
    if kind == "log":
        expected = -r1 * np.log(1 + r2 * distance)
    else:
        expected = -r1 * distance ** np.minimum(r2, 2.0)
    actual = to_numpy(layer.compute_bias(query, key))[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def _fire_reference(layer, query, key):
    """Li et al. 2023, eq. 6 with the reference's `c`, `L` and MLP, float64."""
    c = float(to_numpy(layer.scale))
    threshold = abs(float(to_numpy(layer.threshold_multiplier)) * 512.0)
    w1, b1 = (to_numpy(w).astype("float64") for w in layer.hidden.weights)
    w2, b2 = (to_numpy(w).astype("float64") for w in layer.head_bias.weights)
    out = np.zeros((HEADS, len(query), len(key)))
    for a, i in enumerate(query):
        for b, j in enumerate(key):
            x = math.log(abs(c * (i - j)) + 1) / (
                math.log(abs(c * max(i, threshold)) + 1) + 1e-6
            )
            hidden = np.maximum(x * w1[0] + b1, 0.0)
            out[:, a, b] = hidden @ w2 + b2
    return out


def test_fire_matches_the_paper_formula():
    layer = layers.FIREBias(num_heads=HEADS)
    layer.build()
    rng = np.random.default_rng(3)
    for weight in layer.hidden.weights + layer.head_bias.weights:
        weight.assign(rng.normal(size=weight.shape))
    layer.scale.assign(0.7)
    layer.threshold_multiplier.assign(0.01)  # L = 5.12: both sides of max(L, i)
    query, key = np.array([0, 2, 6, 40]), np.arange(12)
    actual = to_numpy(layer.compute_bias(query, key))[0]
    np.testing.assert_allclose(
        actual, _fire_reference(layer, query, key), rtol=1e-5, atol=1e-5
    )
    # Per-example positions give per-example biases.
    batch = to_numpy(layer.compute_bias(np.stack([query, query + 1]), key[None]))
    assert batch.shape == (2, HEADS, 4, 12)
    np.testing.assert_allclose(batch[0], actual, atol=1e-6)


def test_fire_in_attention_trains_and_reloads(tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 6, 12)).astype("float32")
    inputs = keras.Input((None, 12))
    attention = layers.PositionalMultiHeadAttention(
        HEADS, 4, position=layers.FIREBias(num_heads=HEADS, mlp_width=8)
    )
    model = keras.Model(inputs, attention(inputs, inputs, use_causal_mask=True))
    model.compile("adam", "mse")
    assert np.isfinite(model.train_on_batch(x, x))
    path = str(tmp_path / "fire.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-6)
    assert len(attention.position_layer.trainable_weights) == 6


def test_alibi_on_some_heads():
    layer = layers.ALiBiBias(num_heads=4, num_alibi_heads=2)
    bias = to_numpy(layer.compute_bias(np.arange(5), np.arange(5)))[0]
    expected = layers.ALiBiBias(num_heads=2).compute_bias(np.arange(5), np.arange(5))
    np.testing.assert_allclose(bias[:2], to_numpy(expected)[0])
    np.testing.assert_array_equal(bias[2:], 0.0)
    revived = layers.ALiBiBias.from_config(layer.get_config())
    assert revived.num_alibi_heads == 2
    with pytest.raises(ValueError, match="`num_alibi_heads`.*num_alibi_heads=5"):
        layers.ALiBiBias(num_heads=4, num_alibi_heads=5)


@pytest.mark.parametrize("name", ["kerple", "fire"])
def test_new_schemes_in_a_cached_lm(name, tmp_path):
    scheme = layers.KerpleBias if name == "kerple" else layers.FIREBias
    # A config, as a saved model holds it, reaches the model like a layer.
    layer = position_schemes.serialize(scheme(num_heads=2))
    model = models.TransformerLM(
        vocabulary_size=24,
        max_length=12,
        hidden_dim=16,
        num_layers=2,
        num_heads=2,
        intermediate_dim=32,
        dropout=0.0,
        position=layer,
    )
    prompts = [[3, 4, 5], [6, 7, 8, 9, 10]]
    assert isinstance(model.decoder_layers[0].self_attention.position_layer, scheme)
    cached = model.generate(prompts, max_length=12)
    np.testing.assert_array_equal(
        cached, model.generate(prompts, max_length=12, use_cache=False)
    )
    path = str(tmp_path / "lm.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.generate(prompts, max_length=12), cached)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="`kind` must be one of"):
        layers.KerpleBias(num_heads=2, kind="exp")
    with pytest.raises(ValueError, match="`mlp_width`"):
        layers.FIREBias(num_heads=2, mlp_width=0)
    with pytest.raises(ValueError, match="num_heads=3.*num_heads=2"):
        layers.PositionalMultiHeadAttention(2, 4, position=layers.FIREBias(3))


def test_randomized_positions_layer():
    layer = layers.RandomizedPositions(max_position=50, seed=3)
    ids = np.ones((4, 9), "int32")
    drawn = to_numpy(layer(ids, training=True))
    assert drawn.shape == (4, 9) and drawn.dtype == np.int32
    assert (np.diff(drawn, axis=1) > 0).all() and drawn.min() >= 0 and drawn.max() < 50
    assert not (drawn == drawn[0]).all()  # each example its own subset
    np.testing.assert_array_equal(to_numpy(layer(ids)), np.tile(np.arange(9), (4, 1)))
    revived = layers.RandomizedPositions.from_config(layer.get_config())
    assert (revived.max_position, revived.seed) == (50, 3)


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_randomized_positions_in_ready_models(position, tmp_path):
    config = dict(
        vocabulary_size=24,
        max_length=12,
        hidden_dim=16,
        num_layers=1,
        num_heads=2,
        intermediate_dim=32,
        dropout=0.0,
        position=position,
        randomize_positions=40,
    )
    model = models.TransformerLM(**config)
    if position == "learned":
        # The table covers every position a draw can give.
        assert model.embedding.position_embedding.max_length == 40
    ids = np.array([[3, 4, 5, 6, 7, 8, 0], [5, 6, 7, 8, 9, 11, 12]])
    inference = to_numpy(model(ids))
    np.testing.assert_array_equal(to_numpy(model(ids)), inference)
    assert not np.allclose(to_numpy(model(ids, training=True)), inference, atol=1e-4)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert np.isfinite(model.train_on_batch(ids[:, :-1], ids[:, 1:]))
    prompts = [[3, 4, 5], [6, 7]]
    np.testing.assert_array_equal(
        model.generate(prompts, max_length=10),
        model.generate(prompts, max_length=10, use_cache=False),
    )
    assert model.get_config()["randomize_positions"] == 40
    revived = models.TransformerLM.from_config(model.get_config())
    assert revived.get_config() == model.get_config()
    with pytest.raises(
        ValueError, match="`randomize_positions`.*at least `max_length`"
    ):
        models.TransformerLM(**{**config, "randomize_positions": 8})
