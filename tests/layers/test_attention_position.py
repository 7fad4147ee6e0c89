"""The `AttentionPosition` protocol: a user scheme works wherever ours do."""

import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_posenc import layers
from keras_posenc import models
from keras_posenc.utils import attention as attention_utils
from keras_posenc.utils import to_numpy

WINDOW = 2


@keras.saving.register_keras_serializable(package="keras_posenc_tests")
class SlidingWindow(layers.AttentionPosition):
    """A user scheme that overrides `compute_bias` only: keys within `window`."""

    def __init__(self, window=WINDOW, **kwargs):
        super().__init__(**kwargs)
        self.window = window

    def compute_bias(self, query_positions, key_positions):
        distance = ops.abs(
            ops.expand_dims(query_positions, -1) - ops.expand_dims(key_positions, -2)
        )
        bias = ops.where(distance <= self.window, 0.0, -1e4)
        if len(bias.shape) == 2:
            return bias[None, None]
        return ops.expand_dims(bias, 1)

    def get_config(self):
        return {**super().get_config(), "window": self.window}


def _window_mask(length):
    index = np.arange(length)
    return np.abs(index[:, None] - index[None, :]) <= WINDOW


def test_user_bias_equals_the_same_window_as_an_attention_mask():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 8)).astype("float32")
    windowed = layers.PositionalMultiHeadAttention(2, 4, position=SlidingWindow())
    plain = layers.PositionalMultiHeadAttention(2, 4)
    windowed.build(x.shape, x.shape)
    plain.build(x.shape, x.shape)
    plain.set_weights(windowed.get_weights())
    mask = np.broadcast_to(_window_mask(7), (2, 7, 7))
    for causal in (False, True):
        expected = plain(x, x, attention_mask=mask, use_causal_mask=causal)
        actual = windowed(x, x, use_causal_mask=causal)
        np.testing.assert_allclose(to_numpy(actual), to_numpy(expected), atol=1e-5)
        # The explicit path (attention scores) gives the same output.
        actual, scores = windowed(
            x, x, use_causal_mask=causal, return_attention_scores=True
        )
        np.testing.assert_allclose(to_numpy(actual), to_numpy(expected), atol=1e-5)
        assert np.all(to_numpy(scores)[:, :, ~_window_mask(7)] < 1e-6)


def test_user_scheme_in_transformer_lm(tmp_path):
    config = dict(
        vocabulary_size=24,
        max_length=12,
        hidden_dim=16,
        num_layers=2,
        num_heads=2,
        intermediate_dim=32,
        dropout=0.0,
    )
    keras.utils.set_random_seed(1)
    model = models.TransformerLM(position=SlidingWindow(), **config)
    keras.utils.set_random_seed(1)
    nope = models.TransformerLM(position="none", **config)
    ids = np.array([[3, 4, 5, 6, 7, 8, 9, 10, 0], [5, 6, 7, 8, 9, 11, 0, 0, 0]])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    loss = model.train_on_batch(ids[:, :-1], ids[:, 1:])
    assert np.isfinite(loss)
    nope.set_weights(model.get_weights())
    # The window changes what the model computes (NoPE sees every key).
    assert not np.allclose(to_numpy(model(ids)), to_numpy(nope(ids)), atol=1e-4)
    # Each block has its own copy of the template.
    schemes = [layer.self_attention.position_layer for layer in model.decoder_layers]
    assert len({id(scheme) for scheme in schemes}) == len(schemes)
    assert all(isinstance(scheme, SlidingWindow) for scheme in schemes)

    prompts = [[3, 4, 5], [6, 7, 8, 9, 10]]
    cached = model.generate(prompts, max_length=12)
    uncached = model.generate(prompts, max_length=12, use_cache=False)
    np.testing.assert_array_equal(cached, uncached)

    path = os.path.join(str(tmp_path), "lm.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        to_numpy(loaded(ids)), to_numpy(model(ids)), atol=1e-6, rtol=0
    )
    assert loaded.get_config() == model.get_config()


def test_every_hook_has_a_neutral_default():
    scheme = layers.AttentionPosition()
    x = np.ones((1, 3, 2, 4), "float32")
    positions = np.arange(3)
    assert scheme.rotate(x, positions) is x
    assert scheme.compute_bias(positions, positions) is None
    assert scheme.compute_logits(x, positions, positions, key=x) is None
    assert scheme.compute_values(x, positions, positions) is None
    assert scheme.needs_attention_weights is False
    scheme.check_attention(num_heads=3, key_dim=5)


def test_scheme_sizes_are_checked_when_the_attention_layer_is_created():
    with pytest.raises(ValueError, match="num_heads=2.*num_heads=4"):
        layers.PositionalMultiHeadAttention(
            4, 4, position=layers.T5RelativePositionBias(num_heads=2)
        )
    with pytest.raises(ValueError, match=r"head size \(3\) must be even"):
        layers.PositionalMultiHeadAttention(2, 3, position="rotary")
    with pytest.raises(ValueError, match="absolute encodings belong"):
        layers.PositionalMultiHeadAttention(2, 4, position="learned")


def test_cross_attention_with_positions_needs_key_positions():
    query = np.zeros((1, 3, 8), "float32")
    memory = np.zeros((1, 5, 8), "float32")
    for position in ("alibi", "shaw", "rotary", "t5"):
        attention = layers.PositionalMultiHeadAttention(2, 4, position=position)
        with pytest.raises(ValueError, match="`key_positions` is needed"):
            attention(query, memory, positions=np.arange(3))
        # With key positions it runs.
        attention(query, memory, positions=np.arange(3), key_positions=np.arange(5))


def test_biased_fused_calls_never_leave_flash_attention_to_the_backend(monkeypatch):
    calls = []
    original = keras.ops.dot_product_attention

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(keras.ops, "dot_product_attention", recording)
    # Where a biased call takes the einsum route (JAX, float32), no backend
    # kernel is asked at all: the bias is added to the logits by our code.
    einsum_calls = []
    einsum_route = attention_utils.einsum_biased_attention

    def recording_einsum(*args):
        einsum_calls.append(args)
        return einsum_route(*args)

    monkeypatch.setattr(attention_utils, "einsum_biased_attention", recording_einsum)
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    for position in ("alibi", "t5", "rotary", "xpos", "none", SlidingWindow()):
        attention = layers.PositionalMultiHeadAttention(2, 4, position=position)
        attention(x, x, query_mask=mask, value_mask=mask)
        attention(x, x, use_causal_mask=True)
        attention(x, x)
    shaw = layers.RelativePositionEmbedding(use_values=False)
    layers.PositionalMultiHeadAttention(2, 4, position=shaw)(x, x)
    biased = [
        kwargs
        for kwargs in calls
        if kwargs.get("bias") is not None or kwargs.get("mask") is not None
    ]
    assert len(biased) + len(einsum_calls) >= 13
    assert all(kwargs["flash_attention"] is False for kwargs in biased)


def test_shaw_without_values_takes_the_fused_path_and_matches_the_explicit_one():
    x = np.random.default_rng(2).normal(size=(2, 6, 8)).astype("float32")
    attention = layers.PositionalMultiHeadAttention(
        2,
        4,
        position=layers.RelativePositionEmbedding(max_distance=3, use_values=False),
    )
    fused = attention(x, x, use_causal_mask=True)
    explicit, _ = attention(x, x, use_causal_mask=True, return_attention_scores=True)
    np.testing.assert_allclose(to_numpy(fused), to_numpy(explicit), atol=1e-5)
